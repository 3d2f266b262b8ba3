//! `rocket-cli`: the Rocket server. Reads a config (or serves the built-in demo), logs
//! through `tracing`, serves until SIGINT/SIGTERM, then closes every client with 1001.
//! SIGHUP reopens the log file and reloads the config file's users (see `reload.rs`).
//!
//! Anything that stops it from starting is one line on standard error,
//! `rocket-cli: <what>: <why>`, and a non-zero exit status.
//!
//! `rocket-cli hash-secret` prints an argon2 PHC hash for a user's `Secret` instead.

mod args;
mod config;
mod demo;
mod error;
mod hash_secret;
mod logging;
mod reload;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, Command};
use crate::config::{Loaded, SecretKind, Source};
use crate::error::Error;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rocket-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    if args.command == Some(Command::HashSecret) {
        return hash_secret::run();
    }
    let loaded = config::load(args)?;
    let log = logging::init(args.log_level.as_deref(), &loaded.config.log)?;
    announce(&loaded);
    serve::run(loaded, args, &log).inspect_err(|e| {
        // The error also goes to standard error (see main); a log file should show it too.
        if log.target() == logging::Target::File {
            tracing::error!("{e}");
        }
    })
}

/// Startup notices that come before the listening line.
fn announce(loaded: &Loaded) {
    if loaded.source == Source::Demo {
        tracing::info!(
            "no config file given: serving the built-in demo config \
             (hub /echo with the users of example.json)"
        );
    }
    for (hub, user, kind) in config::secrets(&loaded.config) {
        warn_weak_secret(hub, user, kind);
    }
}

/// The warning for a user whose secret is empty or plain text (at startup and for the
/// users a reload adds or gives a new secret).
fn warn_weak_secret(hub: &str, user: &str, kind: SecretKind) {
    match kind {
        SecretKind::Empty => {
            tracing::warn!("hub {hub}: user {user:?} has an empty Secret and accepts any secret")
        }
        SecretKind::Plain => tracing::warn!(
            "hub {hub}: user {user:?} has a plain-text Secret; \
             store an argon2 hash instead (rocket-cli hash-secret)"
        ),
        SecretKind::Hashed => {}
    }
}
