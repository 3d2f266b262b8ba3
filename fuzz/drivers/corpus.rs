//! Reading a committed corpus (`fuzz/corpus/<target>`), shared by the corpus replay tests
//! of `rocket-proto` and `rocket-server`, which include this file with `#[path]`.

// Each test crate uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The directory of the committed corpus of fuzz target `name`.
pub fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

/// The corpus files, sorted, without hidden files (libFuzzer's lock and temp files).
pub fn files(name: &str) -> Vec<PathBuf> {
    let dir = corpus(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| {
            path.is_file()
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs `run` on every file of the corpus of `name` (at least five).
pub fn replay(name: &str, run: fn(&[u8])) {
    let files = files(name);
    assert!(
        files.len() >= 5,
        "the {name} corpus has {} files",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).expect("readable corpus file");
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}
