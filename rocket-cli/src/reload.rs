//! SIGHUP: reopen the log file, then reload the config file without dropping a connection.
//!
//! The file is read again and the command-line flags are laid over it as at startup
//! ([`config::load`]). A file that cannot be read or is not a valid config is reported in
//! the log and the running config keeps serving. A valid one is applied with
//! [`ServerState::reload`]: users, secrets, permissions, `MaxSubscriptionsPerClient`,
//! `MaxFailedAuth` and `AllowedOrigins` of the hubs already served, and the TLS
//! certificate, read again from its files; what needs a restart (a hub added or removed,
//! `Host`, `Port`, turning TLS on or off, `Log`, transport limits) is logged as not
//! applied. With the built-in demo config there is no file: SIGHUP only reopens
//! the log.

use rocket_server::ServerState;
use tracing::{error, info, warn};

use crate::args::Args;
use crate::config::{self, Source};
use crate::logging::Log;

/// Handles one SIGHUP.
pub fn on_hangup(args: &Args, source: &Source, log: &Log, state: &ServerState) {
    if let Some((path, result)) = log.reopen() {
        match result {
            Ok(()) => info!("SIGHUP received: log file {} reopened", path.display()),
            Err(e) => error!(
                "SIGHUP received: cannot reopen the log file {}: {e}; still logging to the file open before",
                path.display()
            ),
        }
    }
    let Source::File(path) = source else {
        return info!("SIGHUP received: no config file to reload (serving the built-in demo)");
    };
    let loaded = match config::load(args) {
        Ok(loaded) => loaded,
        Err(e) => {
            return error!("SIGHUP: config not reloaded, the running config is kept: {e}");
        }
    };
    let report = state.reload(&loaded.config);
    for line in &report.not_applied {
        warn!("SIGHUP: not applied: {line}");
    }
    if let Some((cert, key)) = &report.tls_reloaded {
        info!(
            "SIGHUP: TLS certificate reloaded from {} and {}: new handshakes present it",
            cert.display(),
            key.display()
        );
    }
    if !report.changed() {
        return info!("SIGHUP: config {} reloaded: no change", path.display());
    }
    for hub in report.hubs.iter().filter(|h| h.changed()) {
        info!("SIGHUP: config {} reloaded: {hub}", path.display());
    }
    // The startup warnings, for the secrets this reload brought in.
    for (hub, user, kind) in config::secrets(&loaded.config) {
        let new_secret = report.hubs.iter().any(|h| {
            let u = &h.users;
            h.path == hub && (u.added.iter().chain(&u.secret_changed)).any(|n| n == user)
        });
        if new_secret {
            crate::warn_weak_secret(hub, user, kind);
        }
    }
}
