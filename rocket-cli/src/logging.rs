//! Logging through `tracing`: to standard error or appended to a log file, filtered by
//! `--log-level`, else `RUST_LOG`, else `info`. The log file can be reopened at its path
//! ([`Log::reopen`], on SIGHUP), for logrotate: after it moved the file away, the logs go
//! to a new file of the same name.
//!
//! Whatever the filter asks for, the WebSocket libraries never log below `debug`: at
//! `trace` they print every frame and message they read or write, and a client's
//! `authenticate` message carries its secret ([`never_payloads`]).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::error::Error;

/// The filter used when neither `--log-level` nor `RUST_LOG` is given.
pub const DEFAULT_FILTER: &str = "info";

/// Where the logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Standard error.
    Stderr,
    /// A file (config `Log` or `--log`).
    File,
}

/// The installed logging: where it goes, and the handle to reopen the log file.
#[derive(Debug)]
pub struct Log {
    file: Option<Arc<LogFile>>,
}

impl Log {
    /// Where the logs go.
    pub fn target(&self) -> Target {
        match self.file {
            Some(_) => Target::File,
            None => Target::Stderr,
        }
    }

    /// Reopens the log file at its path (a new file if logrotate moved the old one away)
    /// and returns its path; `None` when logging to standard error. On an error the logs
    /// keep going to the file open until now.
    pub fn reopen(&self) -> Option<(&Path, io::Result<()>)> {
        self.file.as_ref().map(|f| (f.path.as_path(), f.reopen()))
    }
}

/// A log file appended to through a lock, which [`LogFile::reopen`] swaps for the file
/// now at the same path.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// What `tracing-subscriber` writes through (it writes each event with one `write_all`).
impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A panic while writing leaves the file usable.
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One lock for the whole event, so that lines from two threads never interleave.
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

/// Installs the global subscriber. `log_file` empty means standard error.
pub fn init(level_flag: Option<&str>, log_file: &str) -> Result<Log, Error> {
    let filter = filter(level_flag, std::env::var("RUST_LOG").ok())?;
    let (writer, ansi, file) = if log_file.is_empty() {
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        (BoxMakeWriter::new(std::io::stderr), ansi, None)
    } else {
        let path = Path::new(log_file);
        let file = LogFile::open(path).map_err(|source| Error::LogFile {
            path: path.to_owned(),
            source,
        })?;
        let file = Arc::new(file);
        (BoxMakeWriter::new(Arc::clone(&file)), false, Some(file))
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(filter.and(never_payloads()));
    // Fails only if a subscriber is already installed, which main never does twice.
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(Log { file })
}

/// Crates that log the payload of every WebSocket frame or message at `trace`, and so
/// would log clients' secrets.
const PAYLOAD_LOGGERS: [&str; 3] = ["tungstenite", "tokio_tungstenite", "async_tungstenite"];

/// The cap applied on top of every filter: [`PAYLOAD_LOGGERS`] (and their modules) at
/// `debug` at most, everything else as the filter says. A filter cannot lift it, not even
/// `tungstenite::protocol=trace`: an event must pass both.
fn never_payloads() -> Targets {
    PAYLOAD_LOGGERS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(*c, LevelFilter::DEBUG)
        })
}

/// The filter from the flag, else from `RUST_LOG` (when set and not empty), else `info`.
fn filter(flag: Option<&str>, env: Option<String>) -> Result<EnvFilter, Error> {
    let (origin, text) = match (flag, env) {
        (Some(flag), _) => ("--log-level", flag.to_owned()),
        (None, Some(env)) if !env.trim().is_empty() => ("RUST_LOG", env),
        (None, _) => return Ok(EnvFilter::new(DEFAULT_FILTER)),
    };
    EnvFilter::try_new(&text).map_err(|e| Error::LogFilter {
        origin,
        filter: text,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_log_file_goes_to_the_new_file_at_the_path() {
        let dir = std::env::temp_dir().join(format!("rocket-cli-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let path = dir.join("logs/rocket.log");
        let moved = dir.join("rocket.log.1");
        let file = LogFile::open(&path).unwrap();
        (&file).write_all(b"one\n").unwrap();
        std::fs::rename(&path, &moved).unwrap();
        (&file).write_all(b"two\n").unwrap();
        file.reopen().unwrap();
        (&file).write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        // The path cannot be opened any more: an error, and the logs go on where they went.
        std::fs::rename(&path, &moved).unwrap();
        std::fs::remove_dir(dir.join("logs")).unwrap();
        assert!(file.reopen().is_err());
        (&file).write_all(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "three\nfour\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flag_wins_over_env_and_info_is_the_default() {
        let f = filter(Some("debug"), Some("warn".into())).unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter(None, Some("rocket_server=debug,warn".into())).unwrap();
        assert_eq!(f.to_string(), "rocket_server=debug,warn");
        assert_eq!(filter(None, None).unwrap().to_string(), "info");
        assert_eq!(filter(None, Some(" ".into())).unwrap().to_string(), "info");
    }

    #[test]
    fn payload_loggers_are_capped_at_debug() {
        use tracing::Level;
        let cap = never_payloads();
        for target in [
            "tungstenite::protocol",
            "tokio_tungstenite",
            "async_tungstenite::compat",
        ] {
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(cap.would_enable("rocket_server::hub", &Level::TRACE));
    }

    #[test]
    fn bad_filters_say_where_they_came_from() {
        let e = filter(Some("rocket=loud"), None).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid log filter \"rocket=loud\" in --log-level: "),
            "{e}"
        );
        let e = filter(None, Some("[[".into())).unwrap_err().to_string();
        assert!(e.contains("in RUST_LOG"), "{e}");
    }
}
