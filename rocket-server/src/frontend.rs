//! What every frontend does the same way: the server builder, the accept loop, the
//! handshake under its timeout and limits, and graceful shutdown. A frontend adds only
//! what depends on its runtime: its listener, its spawn function, its TLS acceptor and
//! WebSocket handshake function, and its [`Runtime`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream, StreamExt};
use rocket_proto::Config;
use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tungstenite::protocol::WebSocketConfig;

use crate::service::{Admission, Service};
use crate::{Runtime, TlsError, serve_connection};

/// A task for an executor.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A Rocket server, configured but not yet listening. Frontends start it:
/// `rocket_tokio::bind(server)`, `rocket_async_std::bind(server)`.
#[derive(Clone)]
pub struct Server {
    service: Arc<Service>,
    tls: Option<Arc<rustls::ServerConfig>>,
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
        self.tls = Some(config);
        self
    }

    /// Serves `wss://` with the config's `TLSCertFile` and `TLSKeyFile`, if they are set.
    pub fn with_config_tls(self) -> Result<Self, TlsError> {
        let c = self.service.config();
        if c.tls_cert_file.is_empty() {
            return Ok(self);
        }
        let tls = crate::load_tls_config(c.tls_cert_file.as_ref(), c.tls_key_file.as_ref())?;
        Ok(self.with_tls(tls))
    }

    /// The shared service.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The TLS configuration, when serving `wss://`.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// The config's `Host` and `Port`, to bind.
    pub fn address(&self) -> (&str, u16) {
        let c = self.service.config();
        (&c.host, c.port)
    }

    /// For frontends: accepts the sockets `incoming` yields until shutdown, and runs
    /// `connection` for each on a task given to `spawn`. A failed accept (out of file
    /// descriptors, say) backs off for 50 ms instead of spinning.
    pub fn run<S, I, C, F>(
        self,
        local_addr: SocketAddr,
        incoming: I,
        spawn: impl Fn(Task) + Send + Sync + 'static,
        runtime: Arc<dyn Runtime>,
        connection: C,
    ) -> Running
    where
        S: Send + 'static,
        I: Stream<Item = io::Result<(S, SocketAddr)>> + Send + 'static,
        C: Fn(S, SocketAddr, Arc<Service>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (done, finished) = async_channel::bounded::<()>(1);
        let service = Arc::clone(&self.service);
        let spawn = Arc::new(spawn);
        let spawn_connection = Arc::clone(&spawn);
        let timer = Arc::clone(&runtime);
        let accept = async move {
            let _done = done; // closes the channel when the loop returns
            let mut incoming = pin!(incoming);
            loop {
                match poll_first(pin!(stopped.recv()), incoming.next()).await {
                    Err(_) | Ok(None) => return,
                    Ok(Some(Ok((socket, peer)))) => {
                        spawn_connection(Box::pin(connection(socket, peer, Arc::clone(&service))));
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!("accept failed: {e}");
                        timer.sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        spawn(Box::pin(accept));
        Running {
            local_addr,
            service: self.service,
            stop,
            finished,
            runtime,
        }
    }
}

/// Pending connections the kernel may queue before `accept` (the usual default of 128
/// drops connection attempts during a connect storm).
pub const LISTEN_BACKLOG: i32 = 4096;

/// For frontends: a non-blocking listening socket on `host:port` (the first address that
/// binds), with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`. Resolving `host` may block briefly;
/// it runs once, at startup.
pub fn bind_listener(host: &str, port: u16) -> io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last_error = None;
    for addr in (host, port).to_socket_addrs()? {
        let attempt = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            socket.listen(LISTEN_BACKLOG)?;
            socket.set_nonblocking(true)?;
            Ok(std::net::TcpListener::from(socket))
        })();
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}

/// A running server; [`shutdown`](Self::shutdown) stops it gracefully.
pub struct Running {
    local_addr: SocketAddr,
    service: Arc<Service>,
    stop: async_channel::Sender<()>,
    finished: async_channel::Receiver<()>,
    runtime: Arc<dyn Runtime>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("local_addr", &self.local_addr)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
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
        let _ = self.finished.recv().await; // the accept loop has returned
        self.service.shutdown();
        let deadline = Instant::now() + grace;
        while self.service.active_connections() > 0 && Instant::now() < deadline {
            self.runtime.sleep(Duration::from_millis(10)).await;
        }
        self.service.active_connections()
    }
}

/// The handshake callback: admits the request (hub by path, `Origin`, connection limits)
/// or refuses it with 404, 403 or 503, and leaves the admission for [`serve_socket`].
pub struct Admit {
    service: Arc<Service>,
    peer: IpAddr,
    slot: Arc<Mutex<Option<Admission>>>,
}

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admit")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Callback for Admit {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        match self.service.admit(request, self.peer) {
            Ok(admission) => {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(admission);
                Ok(response)
            }
            Err(refusal) => {
                let path = request.uri().path();
                tracing::debug!(peer = %self.peer, path, %refusal, "handshake refused");
                Err(refusal.into_response())
            }
        }
    }
}

/// Serves one accepted socket: under `HandshakeTimeoutMs` and the cap on unfinished
/// handshakes, runs `upgrade` (the frontend's TLS handshake, if any, and its WebSocket
/// handshake with the given callback and configuration), then serves the connection.
pub async fn serve_socket<S, U, F, W>(
    socket: S,
    peer: SocketAddr,
    service: Arc<Service>,
    runtime: &dyn Runtime,
    upgrade: U,
) where
    U: FnOnce(S, Admit, WebSocketConfig) -> F,
    F: Future<Output = Result<W, Box<dyn std::error::Error + Send + Sync>>>,
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let Some(pending) = service.begin_handshake() else {
        return tracing::debug!(%peer, "too many unfinished handshakes; dropping the socket");
    };
    let slot = Arc::new(Mutex::new(None));
    let admit = Admit {
        service: Arc::clone(&service),
        peer: peer.ip(),
        slot: Arc::clone(&slot),
    };
    let timeout = Duration::from_millis(service.limits().handshake_timeout_ms);
    // Boxed: the handshake's state (a TLS session in the making, say) would otherwise size
    // the connection's task for its whole life.
    let handshake = Box::pin(upgrade(socket, admit, service.websocket_config()));
    let ws = match poll_first(pin!(runtime.sleep(timeout)), handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::debug!(%peer, "handshake failed: {e}"),
        Err(()) => return tracing::debug!(%peer, "handshake timed out"),
    };
    drop(pending);
    let admission = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(slot);
    // The callback ran and admitted the connection, or the handshake failed above.
    let admission = admission.expect("an accepted handshake was admitted");
    serve_connection(ws, peer, admission, &service, runtime).await;
}

/// Polls `stop` first, then `next`: `Err` when `stop` completed.
async fn poll_first<A: Future, B: Future>(
    mut stop: Pin<&mut A>,
    next: B,
) -> Result<B::Output, A::Output> {
    let mut next = pin!(next);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = stop.as_mut().poll(cx) {
            return Poll::Ready(Err(v));
        }
        next.as_mut().poll(cx).map(Ok)
    })
    .await
}
