//! Logging through `tracing`: to standard error or appended to a log file, filtered by
//! `--log-level`, else `RUST_LOG`, else `info`.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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

/// Installs the global subscriber. `log_file` empty means standard error.
pub fn init(level_flag: Option<&str>, log_file: &str) -> Result<Target, Error> {
    let filter = filter(level_flag, std::env::var("RUST_LOG").ok())?;
    let (writer, ansi, target) = if log_file.is_empty() {
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        (BoxMakeWriter::new(std::io::stderr), ansi, Target::Stderr)
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(|source| Error::LogFile {
                path: Path::new(log_file).to_owned(),
                source,
            })?;
        (BoxMakeWriter::new(Mutex::new(file)), false, Target::File)
    };
    // Fails only if a subscriber is already installed, which main never does twice.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .try_init();
    Ok(target)
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
    fn flag_wins_over_env_and_info_is_the_default() {
        let f = filter(Some("debug"), Some("warn".into())).unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter(None, Some("rocket_server=debug,warn".into())).unwrap();
        assert_eq!(f.to_string(), "rocket_server=debug,warn");
        assert_eq!(filter(None, None).unwrap().to_string(), "info");
        assert_eq!(filter(None, Some(" ".into())).unwrap().to_string(), "info");
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
