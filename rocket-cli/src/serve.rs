//! Serving with the chosen frontend until SIGINT or SIGTERM, then shutting down gracefully;
//! SIGHUP reloads the config and reopens the log file (see `reload.rs`) and serving goes on.
//!
//! Signals are caught by `signal-hook` on a thread of their own and handed over through a
//! channel, so both runtimes wait for them the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rocket_server::{ServerHandle, ServerState};

use rocket_server::Config;
use tracing::{info, warn};

use crate::args::{Args, Runtime};
use crate::config::{Loaded, Source};
use crate::error::Error;
use crate::logging::Log;

/// How long a graceful shutdown waits for connections to flush and close.
const GRACE: Duration = Duration::from_secs(5);

/// Runs the server on `args.runtime` until a signal stops it (`args.demo`: with the demo
/// page).
pub fn run(loaded: Loaded, args: &Args, log: &Log) -> Result<(), Error> {
    // Before binding, so that a signal sent as soon as the startup line shows is handled.
    let signals = Signals::install()?;
    let runtime = args.runtime;
    let Loaded { config, source } = loaded;
    let address = format!("{}:{}", config.host, config.port);
    let summary = summary(&config, &source, runtime, args.demo);
    let hangup = |state: &ServerState| crate::reload::on_hangup(args, &source, log, state);
    let state = rocket_server::ServerState::new(config);
    let state = if args.demo {
        state
            .with_static_files(crate::demo::files())
            .map_err(Error::Demo)?
    } else {
        state
    };
    let server = || rocket_server::Server::from_state(state).with_config_tls();
    let bind_error = |source| Error::Bind { address, source };
    match runtime {
        Runtime::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Startup {
                    what: "tokio runtime",
                    source,
                })?;
            let server = server()?;
            let result = rt.block_on(async {
                let running = rocket_tokio::bind(server).await.map_err(bind_error)?;
                until_signal(running, &summary, signals, hangup).await;
                Ok(())
            });
            // Connection tasks have ended (or were given up on after GRACE).
            rt.shutdown_timeout(Duration::from_secs(1));
            result
        }
        Runtime::Smol => {
            let server = server()?;
            let (host, port) = server.address();
            let listener = rocket_server::bind_listener(host, port).map_err(bind_error)?;
            let listener =
                smol::net::TcpListener::try_from(listener).map_err(|source| Error::Startup {
                    what: "smol listener",
                    source,
                })?;
            let local_addr = listener.local_addr().map_err(|source| Error::Startup {
                what: "smol listener",
                source,
            })?;
            let executor = smol_executor()?;
            let incoming =
                futures_util::stream::unfold(
                    listener,
                    |l| async move { Some((l.accept().await, l)) },
                );
            let spawner = Arc::clone(&executor);
            smol::block_on(executor.run(async move {
                let running =
                    rocket_async_std::serve_incoming(server, local_addr, incoming, move |task| {
                        spawner.spawn(task).detach()
                    });
                until_signal(running, &summary, signals, hangup).await;
                Ok(())
            }))
        }
        Runtime::AsyncStd => {
            warn!(
                "async-std is discontinued upstream (RUSTSEC-2025-0052); \
                 --runtime smol serves with the same adapter on smol"
            );
            let server = server()?;
            async_std::task::block_on(async {
                let running = rocket_async_std::bind(server).await.map_err(bind_error)?;
                until_signal(running, &summary, signals, hangup).await;
                Ok(())
            })
        }
    }
}

/// A smol executor run by one thread per CPU besides the caller's (smol's global executor
/// has one thread unless `SMOL_THREADS` says otherwise). The threads end with the process.
fn smol_executor() -> Result<Arc<smol::Executor<'static>>, Error> {
    let executor = Arc::new(smol::Executor::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for i in 1..threads {
        let executor = Arc::clone(&executor);
        std::thread::Builder::new()
            .name(format!("smol-{i}"))
            .spawn(move || smol::block_on(executor.run(smol::future::pending::<()>())))
            .map_err(|source| Error::Startup {
                what: "smol executor threads",
                source,
            })?;
    }
    Ok(executor)
}

/// Announces the server, waits for SIGINT or SIGTERM (calling `hangup` on each SIGHUP),
/// then shuts down (a second SIGINT or SIGTERM: at once).
async fn until_signal(
    running: ServerHandle,
    summary: &Summary,
    signals: Signals,
    hangup: impl Fn(&ServerState),
) {
    let scheme = if summary.tls { "wss" } else { "ws" };
    info!(
        "listening on {scheme}://{} ({summary})",
        running.local_addr()
    );
    if let (Some(node), Some(cluster)) =
        (running.state().node_id(), &running.state().config().cluster)
    {
        // Not the URL: it may hold Redis's password.
        info!(
            "cluster node {node}: joins the nodes sharing its Redis under prefix {:?}",
            cluster.prefix
        );
    }
    if summary.demo {
        let http = if summary.tls { "https" } else { "http" };
        info!("demo page: {http}://{}/demo/", running.local_addr());
    }
    let signal = loop {
        match signals.recv().await {
            Signal::Hangup => hangup(running.state()),
            Signal::Stop(name) => break name,
        }
    };
    info!("{signal} received: shutting down, closing every connection with 1001");
    let shutdown = std::pin::pin!(running.shutdown(GRACE));
    let again = std::pin::pin!(signals.recv_stop());
    match first_of(shutdown, again).await {
        Either::Left(0) => info!("shut down cleanly"),
        Either::Left(n) => warn!("{n} connection(s) still open after {GRACE:?}; exiting anyway"),
        Either::Right(signal) => warn!("{signal} received again: exiting without waiting"),
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// The first of two futures to finish.
async fn first_of<A: Future, B: Future>(
    mut a: std::pin::Pin<&mut A>,
    mut b: std::pin::Pin<&mut B>,
) -> Either<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(Either::Left(v));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

/// What the startup line says besides the address.
struct Summary {
    source: String,
    hubs: Vec<String>,
    tls: bool,
    runtime: Runtime,
    /// Whether the demo page is served (told on a line of its own).
    demo: bool,
}

fn summary(config: &Config, source: &Source, runtime: Runtime, demo: bool) -> Summary {
    Summary {
        source: match source {
            Source::File(path) => path.display().to_string(),
            Source::Demo => "built-in demo".to_owned(),
        },
        hubs: config.hubs.iter().map(|h| h.path.clone()).collect(),
        tls: !config.tls_cert_file.is_empty(),
        runtime,
        demo,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config: {}; hubs: {}; TLS: {}; runtime: {}",
            self.source,
            self.hubs.join(", "),
            if self.tls { "on" } else { "off" },
            self.runtime.name()
        )
    }
}

/// A signal the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGHUP: reload.
    Hangup,
    /// SIGINT or SIGTERM (named): shut down.
    Stop(&'static str),
}

/// SIGINT, SIGTERM and SIGHUP, caught on a thread of their own.
struct Signals(async_channel::Receiver<Signal>);

impl Signals {
    fn install() -> Result<Self, Error> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let startup = |source| Error::Startup {
            what: "signal handlers",
            source,
        };
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(startup)?;
        let (tx, rx) = async_channel::unbounded();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let signal = match signal {
                        SIGHUP => Signal::Hangup,
                        SIGINT => Signal::Stop("SIGINT"),
                        _ => Signal::Stop("SIGTERM"),
                    };
                    if tx.send_blocking(signal).is_err() {
                        break;
                    }
                }
            })
            .map_err(startup)?;
        Ok(Self(rx))
    }

    /// Waits for the next signal.
    async fn recv(&self) -> Signal {
        // The sender lives as long as the process: the thread never ends first.
        self.0.recv().await.unwrap_or(Signal::Stop("SIGTERM"))
    }

    /// Waits for the next SIGINT or SIGTERM and names it; SIGHUP is ignored (during
    /// shutdown there is nothing left to reload).
    async fn recv_stop(&self) -> &'static str {
        loop {
            match self.recv().await {
                Signal::Hangup => info!("SIGHUP received during shutdown: ignored"),
                Signal::Stop(name) => return name,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_source_hubs_tls_and_runtime() {
        let s = summary(&Config::demo(), &Source::Demo, Runtime::Tokio, true);
        assert_eq!(
            s.to_string(),
            "config: built-in demo; hubs: /echo; TLS: off; runtime: tokio"
        );
        let mut config = Config::from_json(
            r#"{"Hubs":[{"Path":"/a"},{"Path":"/b"}],"TLSCertFile":"c","TLSKeyFile":"k"}"#,
        )
        .unwrap();
        config.validate().unwrap();
        let s = summary(
            &config,
            &Source::File("my.json".into()),
            Runtime::AsyncStd,
            false,
        );
        assert_eq!(
            s.to_string(),
            "config: my.json; hubs: /a, /b; TLS: on; runtime: async-std"
        );
    }
}
