//! # rocket-tokio: Rocket on tokio
//!
//! Serves a Rocket [`Server`] (one or more hubs, optional TLS) with tokio,
//! tokio-tungstenite and tokio-rustls, on a listener you bind or pass in. Mount it inside
//! your own tokio program:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rocket_tokio::Server;
//!
//! let running = rocket_tokio::bind(Server::new(rocket_server::Config::demo())).await?;
//! println!("serving on ws://{}/echo", running.local_addr());
//! // ... later, e.g. on SIGTERM: every client gets close 1001, then this returns.
//! running.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! This crate is deliberately thin. It supplies tokio's listener, tokio-rustls,
//! tokio-tungstenite's WebSocket stream and [`TokioRuntime`] (tokio's executor, clock,
//! timer and blocking pool as one `rocket_server::Runtime`); everything else (the accept
//! loop, the HTTP front with `/health`, handshake limits and timeout, routing, send queues,
//! pings, write deadlines, close codes, shutdown) is `rocket-server`'s, shared with the
//! async-std frontend. To serve a protocol of your own,
//! build a [`ServerState`] with [`ServerState::with_protocol`] and use [`Server::from_state`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use rocket_server::{DirectSocket, Runtime, Task, Wire};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

pub use rocket_server::Config;
pub use rocket_server::{Server, ServerHandle, ServerState, rustls};

/// Binds the config's `Host` and `Port` (with a 4096-connection listen backlog) and starts
/// serving. Call inside a tokio runtime.
pub async fn bind(server: Server) -> io::Result<ServerHandle> {
    let (host, port) = server.address();
    let listener = TcpListener::from_std(rocket_server::bind_listener(host, port)?)?;
    serve(server, listener)
}

/// Starts serving on a listener the caller bound. Call inside a tokio runtime.
pub fn serve(server: Server, listener: TcpListener) -> io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let incoming =
        futures_util::stream::unfold(listener, |l| async { Some((l.accept().await, l)) });
    let tls = server
        .tls()
        .map(|c| tokio_rustls::TlsAcceptor::from(Arc::clone(c)));
    Ok(server.run(
        local_addr,
        incoming,
        Arc::new(TokioRuntime),
        move |tcp, peer, state| connection(tcp, peer, state, tls.clone()),
    ))
}

/// TLS (if configured), the HTTP front and the WebSocket stream for one accepted socket,
/// then its connection. tokio's IO traits are bridged to the `futures` ones that
/// `rocket-server` reads HTTP with, and back for tokio-tungstenite.
fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> impl Future<Output = ()> + Send {
    // Not an `async fn`, which would keep its arguments beside the future they move into.
    let runtime = TokioRuntime;
    match tls {
        None => {
            let plain = |tcp: TcpStream| {
                let tcp = Arc::new(tcp);
                let direct: Arc<dyn DirectSocket> = Arc::clone(&tcp) as _;
                std::future::ready(Ok((Shared(tcp), Some(direct))))
            };
            Either::Left(rocket_server::serve_socket(
                tcp, peer, state, runtime, plain, websocket, wire,
            ))
        }
        Some(acceptor) => {
            let secure = |tcp| async move {
                let tls = acceptor.accept(tcp).await?;
                Ok((Bridge(tls.compat()), None))
            };
            // Boxed: the TLS stream is large, and plain connections should not pay for it.
            Either::Right(Box::pin(rocket_server::serve_socket(
                tcp, peer, state, runtime, secure, websocket, wire,
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
) -> WebSocketStream<Compat<Wire<S>>>
where
    S: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(stream.compat(), read, Role::Server, Some(config)).await
}

/// The [`Wire`] under the WebSocket stream, where the server writes its frames.
fn wire<S>(ws: &mut WebSocketStream<Compat<Wire<S>>>) -> &mut Wire<S>
where
    S: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Unpin,
{
    ws.get_mut().get_mut()
}

/// A tokio socket (or TLS stream) as the `futures` IO stream `rocket-server` writes to:
/// tokio-util's [`Compat`], which does not pass vectored writes on (it would write one
/// frame per system call), with vectored writes passed on.
#[derive(Debug)]
struct Bridge<T>(Compat<T>);

impl<T: tokio::io::AsyncRead + Unpin> futures_util::io::AsyncRead for Bridge<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures_util::io::AsyncWrite for Bridge<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(self.0.get_mut()), cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// A plain TCP socket as the `futures` IO stream `rocket-server` reads and writes, shared
/// with the hub, which writes broadcasts straight to an idle connection's socket
/// ([`DirectSocket`]). Reads and writes wait for readiness, then try: what tokio's own
/// `TcpStream` does, through a shared reference.
#[derive(Debug)]
struct Shared(Arc<TcpStream>);

impl Shared {
    /// Waits until the socket is writable, then writes `bufs` through tokio's `try_io`
    /// (which clears the readiness when the socket is full).
    ///
    /// It writes as the hub does ([`DirectSocket`], with `socket2`). The obvious loop over
    /// `TcpStream::try_write_vectored` spun on this machine (tokio 1.54, Linux 6.18) once the
    /// peer stopped reading: `poll_write_ready` kept answering ready and every attempt
    /// `WouldBlock`, until the task's budget ran out, so its timers never fired (the e2e
    /// stall tests caught it); the same loop over `try_io` with `socket2` waits as it
    /// should.
    fn poll_send(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let socket: &dyn DirectSocket = &*self.0;
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let sent = || socket.try_write_vectored(bufs);
            match self.0.try_io(tokio::io::Interest::WRITABLE, sent) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }
}

impl futures_util::io::AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read),
            }
        }
    }
}

impl futures_util::io::AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As tokio's `TcpStream` does.
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// tokio's executor, clock, timer and blocking pool, for `rocket-server`. Zero-sized: a
/// connection holds it at no cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn spawn(&self, task: Task) {
        drop(tokio::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> Instant {
        // tokio's clock, which a test may pause; the same as std's otherwise.
        tokio::time::Instant::now().into_std()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's frames go out in vectored writes: one call takes every slice (tokio-util's
    /// `Compat` alone would take only the first).
    #[tokio::test]
    async fn the_bridge_passes_vectored_writes_on() {
        use futures_util::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _peer = listener.accept().await.unwrap();
        let mut bridge = Bridge(tcp.compat());
        let slices = [io::IoSlice::new(b"first "), io::IoSlice::new(b"second")];
        let written = bridge.write_vectored(&slices).await.unwrap();
        assert_eq!(written, 12, "both slices in one call");
    }

    /// Idle connections are most of a server's memory, and each is one task: the handshake
    /// and TLS state are boxed so that they do not size every task for its whole life.
    #[tokio::test]
    async fn a_plain_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let state = Arc::new(ServerState::new(Config::demo()));
        let task = connection(tcp, addr, state, None);
        let size = std::mem::size_of_val(&task);
        // 1,056 bytes in a release build at the time of writing (1,488 before the driver
        // and the front stopped keeping their arguments twice).
        assert!(size < 1280, "a connection's task is {size} bytes");
    }
}
