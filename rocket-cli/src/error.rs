//! Everything that stops the server from starting, each printed as one line:
//! `rocket-cli: <what>: <why>`.

use std::io;
use std::path::PathBuf;

use rocket_proto::ConfigError;

/// Why `rocket-cli` exits with a non-zero status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file cannot be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    ReadConfig {
        /// The file named on the command line.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// The config file is not valid JSON or not a valid config.
    #[error("{}: {source}", path.display())]
    Config {
        /// The file named on the command line.
        path: PathBuf,
        /// What is wrong, and where.
        source: ConfigError,
    },
    /// The config became invalid through command-line flags (e.g. `--tls-cert` alone).
    #[error("command-line flags: {0}")]
    Flags(ConfigError),
    /// `--demo` was given but a hub path lies under `/demo/`.
    #[error("--demo: {0}")]
    Demo(ConfigError),
    /// The log file cannot be opened for appending.
    #[error("{}: cannot open the log file: {source}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// Why it cannot be opened.
        source: io::Error,
    },
    /// `--log-level` or `RUST_LOG` is not a valid filter.
    #[error("invalid log filter {filter:?} in {origin}: {reason}")]
    LogFilter {
        /// `--log-level` or `RUST_LOG`.
        origin: &'static str,
        /// The filter text.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// The TLS certificate or key cannot be used (the message names the file).
    #[error("{0}")]
    Tls(#[from] rocket_server::TlsError),
    /// The listening socket cannot be bound (address in use, permission, unknown host).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// Why binding failed.
        source: io::Error,
    },
    /// `hash-secret` got no secret or could not hash it.
    #[error("hash-secret: {0}")]
    HashSecret(String),
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot start: {what}: {source}")]
    Startup {
        /// What failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}
