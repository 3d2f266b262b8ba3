//! # rocket-async-std: Rocket on async-std, and on smol
//!
//! Serves a Rocket [`Config`] (one or more hubs) with async-tungstenite and optional TLS
//! (futures-rustls), with the same limits, send queues, close codes and shutdown as the
//! tokio frontend: both hand each connection to [`rocket_server::serve_connection`].
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052 recommends smol). This crate is
//! therefore written on the `futures` IO traits and on `async-io` timers, which async-std
//! and smol share: [`Server::serve`] runs on async-std, and [`Server::serve_incoming`]
//! runs on any executor, smol included, given a stream of accepted sockets and a spawn
//! function. The test suite runs the server on both.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let running = rocket_async_std::Server::new(rocket_proto::Config::demo()).bind().await?;
//! println!("serving on ws://{}/echo", running.local_addr());
//! running.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! On smol:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> { smol::block_on(async {
//! let listener = smol::net::TcpListener::bind("127.0.0.1:9772").await?;
//! let local_addr = listener.local_addr()?;
//! let incoming = futures_util::stream::unfold(listener, |l| async move {
//!     Some((l.accept().await, l))
//! });
//! let server = rocket_async_std::Server::new(rocket_proto::Config::demo());
//! let running = server.serve_incoming(local_addr, incoming, |task| smol::spawn(task).detach());
//! # running.shutdown(std::time::Duration::from_secs(1)).await; Ok(()) }) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::{Stream, StreamExt};
use rocket_server::Runtime;

pub use rocket_proto::Config;
pub use rocket_server::{Service, rustls};

/// A task for the executor.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A Rocket server not yet listening.
pub struct Server {
    service: Arc<Service>,
    tls: Option<futures_rustls::TlsAcceptor>,
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
        self.tls = Some(futures_rustls::TlsAcceptor::from(config));
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

    /// Binds the config's `Host` and `Port` and serves on async-std.
    pub async fn bind(self) -> io::Result<Running> {
        let c = self.service.config();
        let listener = async_std::net::TcpListener::bind((c.host.as_str(), c.port)).await?;
        self.serve(listener)
    }

    /// Serves on an async-std listener the caller bound.
    pub fn serve(self, listener: async_std::net::TcpListener) -> io::Result<Running> {
        let local_addr = listener.local_addr()?;
        let incoming =
            futures_util::stream::unfold(listener, |l| async move { Some((l.accept().await, l)) });
        Ok(self.serve_incoming(local_addr, incoming, |task| {
            async_std::task::spawn(task);
        }))
    }

    /// Serves the sockets `incoming` yields, on any executor: `spawn` runs each task
    /// (e.g. `|t| smol::spawn(t).detach()`). `local_addr` is only reported back.
    pub fn serve_incoming<S, I>(
        self,
        local_addr: SocketAddr,
        incoming: I,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Running
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        I: Stream<Item = io::Result<(S, SocketAddr)>> + Send + 'static,
    {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let service = Arc::clone(&self.service);
        let spawn = Arc::new(spawn);
        let accept = accept_loop(
            incoming,
            service,
            self.tls,
            stopped,
            Arc::clone(&spawn),
            done_tx,
        );
        spawn(Box::pin(accept));
        Running {
            local_addr,
            service: self.service,
            stop,
            done,
        }
    }
}

/// A running server; [`shutdown`](Self::shutdown) stops it gracefully.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    service: Arc<Service>,
    stop: async_channel::Sender<()>,
    done: async_channel::Receiver<()>,
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
        let _ = self.stop.try_send(());
        let _ = self.done.recv().await; // the accept loop has returned
        self.service.shutdown();
        let deadline = Instant::now() + grace;
        while self.service.active_connections() > 0 && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
        self.service.active_connections()
    }
}

async fn accept_loop<S, I>(
    incoming: I,
    service: Arc<Service>,
    tls: Option<futures_rustls::TlsAcceptor>,
    stopped: async_channel::Receiver<()>,
    spawn: Arc<impl Fn(Task) + Send + Sync + 'static>,
    _done: async_channel::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Stream<Item = io::Result<(S, SocketAddr)>> + Send + 'static,
{
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let accepted = match select(std::pin::pin!(stopped.recv()), incoming.next()).await {
            Either::Left(_) | Either::Right((None, _)) => return,
            Either::Right((Some(accepted), _)) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => spawn(Box::pin(connection(
                stream,
                peer,
                Arc::clone(&service),
                tls.clone(),
            ))),
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one accepted socket (any `futures` IO stream): TLS if configured, the WebSocket
/// handshake under `HandshakeTimeoutMs`, then the connection until it ends.
pub async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    service: Arc<Service>,
    tls: Option<futures_rustls::TlsAcceptor>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(pending) = service.begin_handshake() else {
        return tracing::debug!(%peer, "too many unfinished handshakes; dropping the socket");
    };
    let timeout = Duration::from_millis(service.limits().handshake_timeout_ms);
    let start = Instant::now();
    match tls {
        None => upgrade(stream, peer, &service, pending, timeout).await,
        Some(acceptor) => match with_timeout(timeout, acceptor.accept(stream)).await {
            Some(Ok(stream)) => {
                upgrade(
                    stream,
                    peer,
                    &service,
                    pending,
                    timeout.saturating_sub(start.elapsed()),
                )
                .await
            }
            Some(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            None => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

async fn upgrade<S>(
    stream: S,
    peer: SocketAddr,
    service: &Service,
    pending: rocket_server::PendingHandshake,
    timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut admission = None;
    let handshake = async_tungstenite::accept_hdr_async_with_config(
        stream,
        service.handshake_callback(peer.ip(), &mut admission),
        Some(service.websocket_config()),
    );
    let ws = match with_timeout(timeout, handshake).await {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => return tracing::debug!(%peer, "WebSocket handshake failed: {e}"),
        None => return tracing::debug!(%peer, "WebSocket handshake timed out"),
    };
    // The callback ran and admitted the connection, or the handshake failed above.
    let admission = admission.expect("an accepted handshake was admitted");
    drop(pending);
    rocket_server::serve_connection(ws, peer, admission, service, &AsyncIoRuntime).await;
}

async fn with_timeout<T>(timeout: Duration, f: impl Future<Output = T>) -> Option<T> {
    match select(std::pin::pin!(f), async_io::Timer::after(timeout)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// async-io's timer and the `blocking` thread pool, both shared by async-std and smol, for
/// the connection driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIoRuntime;

impl Runtime for AsyncIoRuntime {
    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(blocking::unblock(job))
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let timer = async_io::Timer::after(duration);
        Box::pin(async move {
            timer.await;
        })
    }
}
