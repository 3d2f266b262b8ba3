//! Logging through `tracing`: to standard error or appended to a log file, filtered by
//! `--log-level`, else `RUST_LOG`, else `info`.
//!
//! Whatever the filter asks for, the WebSocket libraries never log below `debug`: at
//! `trace` they print every frame and message they read or write, and a client's
//! `authenticate` message carries its secret ([`never_payloads`]).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

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
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(filter.and(never_payloads()));
    // Fails only if a subscriber is already installed, which main never does twice.
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(target)
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
