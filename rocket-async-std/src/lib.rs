//! # rocket-async-std: Rocket on async-std, and on smol
//!
//! Serves a Rocket [`Server`] (one or more hubs, optional TLS) with async-tungstenite and
//! futures-rustls, with the same limits, send queues, close codes and shutdown as the tokio
//! frontend: the logic lives once, in `rocket-server`.
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052 recommends smol). This crate is
//! therefore written on the `futures` IO traits, `async-io` timers and the `blocking`
//! thread pool, which async-std and smol share: [`bind`] and [`serve`] run on async-std,
//! and [`serve_incoming`] runs on any executor, smol included, given a stream of accepted
//! sockets and a spawn function. The end-to-end suite runs against both.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rocket_async_std::Server;
//!
//! let running = rocket_async_std::bind(Server::new(rocket_server::Config::demo())).await?;
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
//! let server = rocket_async_std::Server::new(rocket_server::Config::demo());
//! let running = rocket_async_std::serve_incoming(server, local_addr, incoming, |task| {
//!     smol::spawn(task).detach()
//! });
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

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use futures_util::Stream;
use futures_util::future::Either;
use futures_util::io::{AsyncRead, AsyncWrite};
use rocket_server::{AsSocket, DirectSocket, Runtime, Task, Wire};

pub use rocket_server::Config;
pub use rocket_server::{Server, ServerHandle, ServerState, rustls};

/// Binds the config's `Host` and `Port` (with a 4096-connection listen backlog) and serves
/// on async-std.
pub async fn bind(server: Server) -> io::Result<ServerHandle> {
    let (host, port) = server.address();
    let listener = rocket_server::bind_listener(host, port)?;
    serve(server, listener)
}

/// Serves on async-std, on a listener the caller bound. Its sockets run on the `async-io`
/// reactor, which async-std itself runs on.
pub fn serve(server: Server, listener: std::net::TcpListener) -> io::Result<ServerHandle> {
    let listener = async_std::net::TcpListener::from(listener);
    let local_addr = listener.local_addr()?;
    let incoming =
        futures_util::stream::unfold(listener, |l| async { Some((l.accept().await, l)) });
    let spawn = |task| drop(async_std::task::spawn(task));
    Ok(serve_incoming(server, local_addr, incoming, spawn))
}

/// Serves the sockets `incoming` yields, on any executor: `spawn` runs each task (e.g.
/// `|t| smol::spawn(t).detach()`). `local_addr` is only reported back.
///
/// A socket is cloned once (async-std's and smol's `TcpStream`s are shared handles) so
/// that the hub can write broadcasts straight to an idle connection's socket
/// ([`DirectSocket`](rocket_server::DirectSocket)).
pub fn serve_incoming<S, I>(
    server: Server,
    local_addr: SocketAddr,
    incoming: I,
    spawn: impl Fn(Task) + Send + Sync + 'static,
) -> ServerHandle
where
    S: AsyncRead + AsyncWrite + AsSocket + Clone + Unpin + Send + Sync + 'static,
    I: Stream<Item = io::Result<(S, SocketAddr)>> + Send + 'static,
{
    let tls = server
        .tls()
        .map(|c| futures_rustls::TlsAcceptor::from(Arc::clone(c)));
    let runtime = Arc::new(AsyncIoRuntime::new(spawn));
    server.run(
        local_addr,
        incoming,
        Arc::clone(&runtime) as Arc<dyn Runtime>,
        move |socket, peer, state| {
            connection(socket, peer, state, tls.clone(), Arc::clone(&runtime))
        },
    )
}

/// TLS (if configured), the HTTP front and the WebSocket stream for one accepted socket,
/// then its connection.
fn connection<S>(
    socket: S,
    peer: SocketAddr,
    state: Arc<ServerState>,
    tls: Option<futures_rustls::TlsAcceptor>,
    runtime: Arc<AsyncIoRuntime>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + AsSocket + Clone + Unpin + Send + Sync + 'static,
{
    // Not an `async fn`, which would keep its arguments beside the future they move into.
    match tls {
        None => {
            let plain = |socket: S| {
                let direct: Arc<dyn DirectSocket> = Arc::new(socket.clone());
                std::future::ready(Ok((socket, Some(direct))))
            };
            Either::Left(rocket_server::serve_socket(
                socket, peer, state, runtime, plain, websocket, wire,
            ))
        }
        Some(acceptor) => {
            let secure = move |socket| async move { Ok((acceptor.accept(socket).await?, None)) };
            // Boxed: the TLS stream is large, and plain connections should not pay for it.
            Either::Right(Box::pin(rocket_server::serve_socket(
                socket, peer, state, runtime, secure, websocket, wire,
            )))
        }
    }
}

/// The WebSocket over a connection whose upgrade was answered; `read` holds the bytes
/// the client sent after its request head.
async fn websocket<S>(
    stream: Wire<S>,
    read: Vec<u8>,
    config: WebSocketConfig,
) -> async_tungstenite::WebSocketStream<Wire<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async_tungstenite::WebSocketStream::from_partially_read(
        stream,
        read,
        Role::Server,
        Some(config),
    )
    .await
}

/// The [`Wire`] under the WebSocket stream, where the server writes its frames.
fn wire<S>(ws: &mut async_tungstenite::WebSocketStream<Wire<S>>) -> &mut Wire<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.get_mut()
}

/// The runtime of async-std and smol for `rocket-server`: the spawn function given to
/// [`serve_incoming`] (async-std's for [`serve`]), async-io's clock and timer, and the
/// `blocking` thread pool, which async-std and smol share.
pub struct AsyncIoRuntime {
    spawn: Box<dyn Fn(Task) + Send + Sync>,
}

impl AsyncIoRuntime {
    /// A runtime whose tasks go to `spawn` (e.g. `|t| smol::spawn(t).detach()`).
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Self {
            spawn: Box::new(spawn),
        }
    }
}

impl std::fmt::Debug for AsyncIoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncIoRuntime").finish_non_exhaustive()
    }
}

impl Runtime for AsyncIoRuntime {
    fn spawn(&self, task: Task) {
        (self.spawn)(task)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let timer = async_io::Timer::after(duration);
        Box::pin(async move {
            timer.await;
        })
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(blocking::unblock(job))
    }
}
