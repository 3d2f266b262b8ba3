//! # rocket-tokio: Rocket on tokio
//!
//! Serves a Rocket [`Config`] (one or more hubs) with tokio and tokio-tungstenite, on a
//! listener you bind or pass in, with optional TLS (tokio-rustls). Mount it inside your own
//! tokio program:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let config = rocket_proto::Config::demo();
//! let running = rocket_tokio::Server::new(config).bind().await?;
//! println!("serving on ws://{}/echo", running.local_addr());
//! // ... later, e.g. on SIGTERM: every client gets close 1001, then this returns.
//! running.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! This crate is deliberately thin: it accepts TCP connections, runs the TLS and WebSocket
//! handshakes under `Limits.HandshakeTimeoutMs`, and hands each connection to
//! [`rocket_server::serve_connection`], which holds the logic shared with the async-std
//! frontend (routing, limits, send queues, pings, close codes). To serve a protocol of your
//! own, build a [`Service`] with [`Service::with_protocol`] and use [`Server::from_service`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket_server::Runtime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use rocket_proto::Config;
pub use rocket_server::{Service, rustls};

/// A Rocket server not yet listening.
pub struct Server {
    service: Arc<Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("service", &self.service)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// A server for `config`, running the Rocket protocol on each hub.
    pub fn new(config: Config) -> Self {
        Self::from_service(Service::new(config))
    }

    /// A server for a prepared [`Service`] (e.g. one with custom protocols).
    pub fn from_service(service: Service) -> Self {
        Self {
            service: Arc::new(service),
            tls: None,
        }
    }

    /// Serves `wss://` with this rustls configuration.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Loads `TLSCertFile`/`TLSKeyFile` from the config, if set.
    pub fn with_config_tls(self) -> Result<Self, rocket_server::TlsError> {
        let c = self.service.config();
        if c.tls_cert_file.is_empty() {
            return Ok(self);
        }
        let tls =
            rocket_server::load_tls_config(c.tls_cert_file.as_ref(), c.tls_key_file.as_ref())?;
        Ok(self.with_tls(tls))
    }

    /// Binds the config's `Host` and `Port` and starts serving.
    pub async fn bind(self) -> io::Result<Running> {
        let c = self.service.config();
        let listener = TcpListener::bind((c.host.as_str(), c.port)).await?;
        self.serve(listener)
    }

    /// Starts serving on a listener the caller bound. Must be called inside a tokio runtime.
    pub fn serve(self, listener: TcpListener) -> io::Result<Running> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let service = Arc::clone(&self.service);
        let accept = tokio::spawn(accept_loop(listener, service, self.tls, stopped));
        Ok(Running {
            local_addr,
            service: self.service,
            stop,
            accept,
        })
    }
}

/// A running server; [`shutdown`](Self::shutdown) stops it gracefully.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    service: Arc<Service>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Running {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared service (hubs, connection counts).
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Stops accepting, sends every client close 1001 "server shutting down" after what was
    /// already queued for it, and waits up to `grace` for the connections to end. Returns
    /// how many connections were still open when `grace` ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        self.service.shutdown();
        let deadline = Instant::now() + grace;
        while self.service.active_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.service.active_connections()
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(connection(tcp, peer, Arc::clone(&service), tls.clone()));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    service: Arc<Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Some(pending) = service.begin_handshake() else {
        return tracing::debug!(%peer, "too many unfinished handshakes; dropping the socket");
    };
    let _ = tcp.set_nodelay(true);
    let timeout = Duration::from_millis(service.limits().handshake_timeout_ms);
    match tls {
        None => upgrade(tcp, peer, &service, pending, timeout, Instant::now()).await,
        Some(acceptor) => {
            let start = Instant::now();
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => upgrade(stream, peer, &service, pending, timeout, start).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn upgrade<S>(
    stream: S,
    peer: SocketAddr,
    service: &Service,
    pending: rocket_server::PendingHandshake,
    timeout: Duration,
    start: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut admission = None;
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        service.handshake_callback(peer.ip(), &mut admission),
        Some(service.websocket_config()),
    );
    let left = timeout.saturating_sub(start.elapsed());
    let ws = match tokio::time::timeout(left, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::debug!(%peer, "WebSocket handshake failed: {e}"),
        Err(_) => return tracing::debug!(%peer, "WebSocket handshake timed out"),
    };
    // The callback ran and admitted the connection, or the handshake failed above.
    let admission = admission.expect("an accepted handshake was admitted");
    drop(pending);
    rocket_server::serve_connection(ws, peer, admission, service, &TokioRuntime).await;
}

/// tokio's timer and blocking pool for the shared connection driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let task = tokio::task::spawn_blocking(job);
        // A panicking job (a bug) counts as a failed verification.
        Box::pin(async move { task.await.unwrap_or(false) })
    }
}
