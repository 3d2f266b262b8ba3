//! What every frontend does the same way: the server builder, the accept loop, the
//! handshake under its timeout and limits, and graceful shutdown. A frontend adds only
//! what depends on its runtime: its listener, its TLS acceptor, its WebSocket stream
//! constructor, and its [`Runtime`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::Config;
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use futures_util::{Sink, Stream, StreamExt};
use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::WebSocketConfig;

use crate::driver::serve_connection;
use crate::gate::Full;
use crate::http::{self, Closed};
use crate::hub::Cork;
use crate::metrics::Refused;
use crate::outbox::DirectSocket;
use crate::state::{Admission, ServerState};
use crate::wire::Wire;
use crate::{Runtime, TlsError};

/// A Rocket server, configured but not yet listening. Frontends start it:
/// `rocket_tokio::bind(server)`, `rocket_async_std::bind(server)`.
#[derive(Clone)]
pub struct Server {
    state: Arc<ServerState>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// A server for `config`, running the Rocket protocol on each hub.
    pub fn new(config: Config) -> Self {
        Self::from_state(ServerState::new(config))
    }

    /// A server for a prepared [`ServerState`] (e.g. one with custom protocols).
    pub fn from_state(state: ServerState) -> Self {
        Self {
            state: Arc::new(state),
            tls: None,
        }
    }

    /// Serves `wss://` with this rustls configuration.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Serves `wss://` with the config's `TLSCertFile` and `TLSKeyFile`, if they are set.
    /// [`ServerState::reload`] reads them again (certificates are renewed while a server
    /// runs).
    pub fn with_config_tls(self) -> Result<Self, TlsError> {
        Ok(match self.state.config_tls()? {
            Some(tls) => self.with_tls(tls),
            None => self,
        })
    }

    /// The shared server state.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// The TLS configuration, when serving `wss://`.
    pub fn tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// The config's `Host` and `Port`, to bind.
    pub fn address(&self) -> (&str, u16) {
        let c = self.state.config();
        (&c.host, c.port)
    }

    /// For frontends: accepts the sockets `incoming` yields until shutdown, sets
    /// `TCP_NODELAY` on each, and runs `connection` for each on a task of `runtime`; starts
    /// each hub's timer task there too. A failed accept (out of file
    /// descriptors, say) backs off for 50 ms instead of spinning.
    pub fn run<S, I, C, F>(
        self,
        local_addr: SocketAddr,
        incoming: I,
        runtime: Arc<dyn Runtime>,
        connection: C,
    ) -> ServerHandle
    where
        S: AsSocket + Send + 'static,
        I: Stream<Item = io::Result<(S, SocketAddr)>> + Send + 'static,
        C: Fn(S, SocketAddr, Arc<ServerState>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let (done, finished) = async_channel::bounded::<()>(1);
        let state = Arc::clone(&self.state);
        let spawner = Arc::clone(&runtime);
        let timer = Arc::clone(&runtime);
        let accept = async move {
            let _done = done; // closes the channel when the loop returns
            let mut incoming = pin!(incoming);
            loop {
                match poll_first(pin!(stopped.recv()), incoming.next()).await {
                    Err(_) | Ok(None) => return,
                    Ok(Some(Ok((socket, peer)))) => {
                        // Writes are coalesced already (one flush per batch): send at once.
                        if let Err(e) = socket2::SockRef::from(&socket).set_tcp_nodelay(true) {
                            tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
                        }
                        spawner.spawn(Box::pin(connection(socket, peer, Arc::clone(&state))));
                    }
                    Ok(Some(Err(e))) => {
                        tracing::warn!("accept failed: {e}");
                        timer.sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        runtime.spawn(Box::pin(accept));
        for hub in self.state.hubs() {
            if let Some(timer) = hub.timer_task(Arc::clone(&runtime)) {
                runtime.spawn(timer);
            }
        }
        if let Some(cluster) = self.state.cluster()
            && let Some(task) = cluster.task(Arc::clone(&runtime))
        {
            runtime.spawn(task);
        }
        ServerHandle {
            local_addr,
            state: self.state,
            stop,
            finished,
            runtime,
        }
    }
}

/// Pending connections the kernel may queue before `accept` (the usual default of 128
/// drops connection attempts during a connect storm).
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// For frontends: a non-blocking listening socket on `host:port` (the first address that
/// binds), with a backlog of 4096 pending connections and `SO_REUSEADDR`. Resolving `host` may block briefly;
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

/// A TCP socket the accept loop can tune: anything with a file descriptor (a socket
/// handle on Windows), as every runtime's `TcpStream` has.
#[cfg(unix)]
pub trait AsSocket: std::os::fd::AsFd {}
#[cfg(unix)]
impl<T: std::os::fd::AsFd> AsSocket for T {}
/// A TCP socket the accept loop can tune: anything with a socket handle.
#[cfg(windows)]
pub trait AsSocket: std::os::windows::io::AsSocket {}
#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket> AsSocket for T {}

/// A running server; [`shutdown`](Self::shutdown) stops it gracefully.
pub struct ServerHandle {
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    stop: async_channel::Sender<()>,
    finished: async_channel::Receiver<()>,
    runtime: Arc<dyn Runtime>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state (hubs, connection counts).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Stops accepting, sends every client close 1001 "server shutting down" after what was
    /// already queued for it, and waits up to `grace` for the connections to end. Returns
    /// how many connections were still open when `grace` ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.stop.try_send(());
        let _ = self.finished.recv().await; // the accept loop has returned
        self.state.shutdown();
        let deadline = self.runtime.now() + grace;
        while self.state.active_connections() > 0 && self.runtime.now() < deadline {
            self.runtime.sleep(Duration::from_millis(10)).await;
        }
        let open = self.state.active_connections();
        // At most a second more for the cluster's last commands (the clients' leaves).
        let flush = self.runtime.now() + Duration::from_secs(1);
        self.state.stop_cluster(&self.runtime, flush).await;
        open
    }
}

/// Serves one accepted socket. Under the cap on unfinished handshakes, and with each
/// request head due within `HandshakeTimeoutMs` (the TLS handshake included, for the
/// first), runs `secure` (the frontend's TLS handshake, or nothing; it also returns the
/// socket as a [`DirectSocket`] when the server may write to it directly: plain TCP,
/// shared between the stream and the hub), serves plain HTTP
/// requests (see `http.rs`) until one upgrades to WebSocket on a hub path,
/// then runs `upgrade` (the frontend's WebSocket stream over the connection, with the
/// bytes already read past the request head) and serves the connection. `wire` finds the
/// [`Wire`] inside the frontend's WebSocket stream: the server writes its frames there.
///
/// Not an `async fn`: what the connection keeps for its whole life is moved into the
/// returned future once (an `async fn` keeps its arguments beside what they were moved
/// into, and idle connections are most of a server's memory). For the same reason the
/// runtime comes by value: a zero-sized one costs the connection nothing.
pub fn serve_socket<'a, R, T, S, FS, U, FU, W>(
    socket: T,
    peer: SocketAddr,
    state: Arc<ServerState>,
    runtime: R,
    secure: impl FnOnce(T) -> FS + Send + 'a,
    upgrade: U,
    wire: fn(&mut W) -> &mut Wire<S>,
) -> impl Future<Output = ()> + Send + 'a
where
    R: Runtime + Clone,
    T: Send + 'a,
    FS: Future<Output = io::Result<(S, Option<Arc<dyn DirectSocket>>)>> + Send + 'a,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
    U: FnOnce(Wire<S>, Vec<u8>, WebSocketConfig) -> FU + Send + 'a,
    FU: Future<Output = W> + Send + 'a,
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send + 'a,
{
    let pending = state.begin_handshake(peer.ip());
    // Boxed: the HTTP phase's state (a TLS session in the making, the request buffer)
    // would otherwise size the connection's task for its whole life.
    let front = pending.is_ok().then(|| {
        let front = http_front(socket, peer, Arc::clone(&state), runtime.clone(), secure);
        Box::pin(front)
    });
    async move {
        let (pending, front) = match (pending, front) {
            (Ok(pending), Some(front)) => (pending, front),
            (Err(Full::PerIp), _) => {
                return tracing::debug!(
                    %peer,
                    "too many unfinished handshakes from this address; dropping the socket"
                );
            }
            _ => {
                return tracing::debug!(%peer, "too many unfinished handshakes; dropping the socket");
            }
        };
        let (stream, direct, mut leftover, admission) = match front.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(%peer, "no WebSocket: {e}"),
        };
        drop(pending);
        // The WebSocket keeps this vector as its read buffer: hand it over at its size,
        // not at the capacity the HTTP reads gave it.
        leftover.shrink_to_fit();
        let ws = upgrade(stream, leftover, state.websocket_config()).await;
        serve_connection(ws, wire, direct, peer, admission, &state, &runtime).await;
    }
}

/// The HTTP phase of a connection: TLS (`secure`), then requests until one upgrades to
/// WebSocket on a hub path. Returns the stream (and the socket, when it may be written to
/// directly), the bytes read past the upgrade request and the admission; an error when the
/// connection ends without an upgrade.
async fn http_front<T, S, FS>(
    socket: T,
    peer: SocketAddr,
    state: Arc<ServerState>,
    runtime: impl Runtime,
    secure: impl FnOnce(T) -> FS,
) -> io::Result<Upgraded<S>>
where
    FS: Future<Output = io::Result<(S, Option<Arc<dyn DirectSocket>>)>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = Duration::from_millis(state.limits().handshake_timeout_ms);
    let mut deadline = runtime.now() + timeout;
    let (stream, direct) = within(&runtime, deadline, secure(socket))
        .await
        .inspect_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                state.counters().refused(Refused::Timeout);
            }
        })?;
    let mut stream = Wire::new(stream);
    let mut buf = Vec::new();
    let mut failed_auth = 0u32;
    // The connection's place under MaxConnections, taken at its first request and held
    // while it is open; an upgrade hands it to the WebSocket.
    let mut place = None;
    let mut served = false;
    // Publishes read in a row (pipelined) are dispatched into one cork, and their answers
    // wait in `answers`: both are written out before the connection waits for its client
    // (`settle`), the deliveries first. A burst of publishes to a large channel then gives
    // each subscriber its messages in one write, as a WebSocket publisher's burst does.
    let mut cork = Cork::default();
    let mut answers = Vec::new();
    loop {
        if !http::holds_head(&buf) {
            settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
        }
        let head = within(&runtime, deadline, async {
            http::read_head(&mut stream, &mut buf)
                .await
                .map_err(Closed::into_io)
        })
        .await
        .inspect_err(|e| {
            // A keep-alive connection that goes quiet between requests was not refused.
            if e.kind() == io::ErrorKind::TimedOut && (!served || !buf.is_empty()) {
                state.counters().refused(Refused::Timeout);
            }
        })?;
        served = true;
        let (step, label) = match head {
            Ok(head) => {
                let label = state.path_label(head.request.uri().path()).to_owned();
                (
                    http::route(head, &mut buf, &state, peer.ip(), &mut place),
                    label,
                )
            }
            Err(response) => {
                let step = http::Step::Respond {
                    response,
                    keep_alive: false,
                };
                (step, "other".to_owned())
            }
        };
        match step {
            http::Step::Upgrade {
                admission,
                response,
            } => {
                answers.extend_from_slice(&response);
                settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
                return Ok((stream, direct, buf, admission));
            }
            http::Step::Respond {
                response,
                keep_alive,
            } => {
                answered(&state, &label, &response);
                tracing::debug!(%peer, status = %http::status_of(&response), "http request");
                answers.extend_from_slice(&response);
                settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
                if !keep_alive {
                    return Err(io::Error::other("answered over plain HTTP"));
                }
                deadline = runtime.now() + timeout;
            }
            http::Step::Publish {
                kind,
                length,
                authorization,
                keep_alive,
            } => {
                // The body follows the head, partly read already.
                if buf.len() < length {
                    settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
                }
                while buf.len() < length {
                    let start = buf.len();
                    buf.resize(length, 0);
                    let n = within(&runtime, deadline, stream.read(&mut buf[start..])).await;
                    buf.truncate(start + *n.as_ref().unwrap_or(&0));
                    if n? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let body: Vec<u8> = buf.drain(..length).collect();
                let answer = crate::api::publish(
                    &state,
                    &runtime,
                    peer.ip(),
                    kind,
                    authorization.as_ref(),
                    &body,
                    &mut cork,
                )
                .await;
                failed_auth += u32::from(answer.auth_failed);
                let max = state.limits().max_failed_auth;
                let keep_alive = keep_alive && !(max != 0 && failed_auth >= max);
                let extra: &[(&str, &str)] =
                    if answer.status == tungstenite::http::StatusCode::UNAUTHORIZED {
                        &[("WWW-Authenticate", r#"Basic realm="rocket""#)]
                    } else {
                        &[]
                    };
                let response = http::json_with(answer.status, &answer.body, !keep_alive, extra);
                answered(&state, &label, &response);
                answers.extend_from_slice(&response);
                if !keep_alive {
                    settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
                    return Err(io::Error::other("answered over plain HTTP"));
                }
                if answers.len() >= MAX_ANSWERS_HELD {
                    settle(&runtime, deadline, &mut stream, &mut cork, &mut answers).await?;
                }
                deadline = runtime.now() + timeout;
            }
        }
    }
}

/// Bytes of answers to pipelined publishes held at most before they are written.
const MAX_ANSWERS_HELD: usize = 16 * 1024;

/// Before an HTTP connection waits: writes what its publishes left in `cork`, then the
/// answers held in `answers`, so that a `200` is read only after its deliveries were
/// written or queued. (Should the connection fail first, dropping the cork writes them.)
async fn settle<S: AsyncWrite + Unpin>(
    runtime: &dyn Runtime,
    deadline: Instant,
    stream: &mut Wire<S>,
    cork: &mut Cork,
    answers: &mut Vec<u8>,
) -> io::Result<()> {
    cork.flush();
    if !answers.is_empty() {
        within(runtime, deadline, http::write_all(stream, answers)).await?;
        answers.clear();
    }
    Ok(())
}

/// What the HTTP front hands to the WebSocket: the stream, the socket when it may be
/// written to directly, the bytes read past the upgrade request, and the admission.
type Upgraded<S> = (Wire<S>, Option<Arc<dyn DirectSocket>>, Vec<u8>, Admission);

/// Counts a plain HTTP answer for `rocket_http_requests_total` (`/metrics` counts its own
/// scrape before reading the values).
fn answered(state: &ServerState, label: &str, response: &[u8]) {
    let status = http::status_code(response);
    if !(label == "/metrics" && status == 200) {
        state.counters().http_request(label, status);
    }
}

/// Runs `io` until `deadline`; a late one is a `TimedOut` error.
async fn within<T>(
    runtime: &dyn Runtime,
    deadline: Instant,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let left = deadline.saturating_duration_since(runtime.now());
    match poll_first(pin!(runtime.sleep(left)), io).await {
        Ok(result) => result,
        Err(()) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake timed out",
        )),
    }
}

impl Closed {
    fn into_io(self) -> io::Error {
        match self {
            Closed::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the client"),
            Closed::Io(e) => e,
        }
    }
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
