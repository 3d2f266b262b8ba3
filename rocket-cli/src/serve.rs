//! Serving with the tokio frontend until SIGINT or SIGTERM, then shutting down gracefully.

use std::time::Duration;

use rocket_proto::Config;
use tracing::{info, warn};

use crate::config::{Loaded, Source};
use crate::error::Error;

/// How long a graceful shutdown waits for connections to flush and close.
const GRACE: Duration = Duration::from_secs(5);

/// Runs the server on a tokio runtime until a signal stops it.
pub fn with_tokio(loaded: Loaded) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Startup {
            what: "tokio runtime",
            source,
        })?;
    let result = runtime.block_on(serve(loaded));
    // Connection tasks have ended (or were given up on after GRACE); don't wait for more.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(loaded: Loaded) -> Result<(), Error> {
    // Before binding, so that a signal sent as soon as the startup line shows is handled.
    let mut signals = Signals::install()?;
    let Loaded { config, source } = loaded;
    let address = format!("{}:{}", config.host, config.port);
    let summary = summary(&config, &source);
    let server = rocket_tokio::Server::new(config).with_config_tls()?;
    let running = server
        .bind()
        .await
        .map_err(|source| Error::Bind { address, source })?;
    info!(
        "listening on {}://{} ({summary})",
        if summary.tls { "wss" } else { "ws" },
        running.local_addr()
    );

    let signal = signals.recv().await;
    info!("{signal} received: shutting down, closing every connection with 1001");
    tokio::select! {
        open = running.shutdown(GRACE) => match open {
            0 => info!("shut down cleanly"),
            n => warn!("{n} connection(s) still open after {GRACE:?}; exiting anyway"),
        },
        signal = signals.recv() => warn!("{signal} received again: exiting without waiting"),
    }
    Ok(())
}

/// What the startup line says besides the address.
struct Summary {
    source: String,
    hubs: Vec<String>,
    tls: bool,
}

fn summary(config: &Config, source: &Source) -> Summary {
    Summary {
        source: match source {
            Source::File(path) => path.display().to_string(),
            Source::Demo => "built-in demo".to_owned(),
        },
        hubs: config.hubs.iter().map(|h| h.path.clone()).collect(),
        tls: !config.tls_cert_file.is_empty(),
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config: {}; hubs: {}; TLS: {}",
            self.source,
            self.hubs.join(", "),
            if self.tls { "on" } else { "off" }
        )
    }
}

/// SIGINT and SIGTERM (Ctrl-C only, where there are no Unix signals).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind| {
                signal(kind).map_err(|source| Error::Startup {
                    what: "signal handlers",
                    source,
                })
            };
            Ok(Self {
                interrupt: install(SignalKind::interrupt())?,
                terminate: install(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_source_hubs_and_tls() {
        let s = summary(&Config::demo(), &Source::Demo);
        assert_eq!(
            s.to_string(),
            "config: built-in demo; hubs: /echo; TLS: off"
        );
        let mut config = Config::from_json(
            r#"{"Hubs":[{"Path":"/a"},{"Path":"/b"}],"TLSCertFile":"c","TLSKeyFile":"k"}"#,
        )
        .unwrap();
        config.validate().unwrap();
        let s = summary(&config, &Source::File("my.json".into()));
        assert_eq!(s.to_string(), "config: my.json; hubs: /a, /b; TLS: on");
    }
}
