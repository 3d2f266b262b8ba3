//! The connection driver: one async task per WebSocket connection, written once over the
//! `futures` `Stream`/`Sink` traits and a small [`Runtime`] trait, so every runtime runs
//! the same code.
//!
//! One loop polls four things and never waits on one alone: the outbox (what the hub
//! queued), the socket's write side (what was taken from the outbox), the socket's read
//! side (paused while an operation started for the client runs, such as a PHC secret
//! check, so replies stay in order), and the timer.
//! A client that stops reading therefore cannot stop the pings, the idle timeout or the
//! write deadline ([`Liveness`]).

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::io::AsyncWrite;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rocket_proto::{ClientId, CloseCode, Completion, OpId, Operation};
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use crate::Runtime;
use crate::hub::Cork;
use crate::liveness::{Due, Liveness};
use crate::metrics::CloseReason;
use crate::outbox::{DirectSocket, Finish, Next, Outbox};
use crate::state::{Admission, ServerState};
use crate::wire::{Frame, Wire};

/// Events handled in a row before the connection task yields to its executor.
const YIELD_EVERY: u32 = 32;

/// How long closing may take: sending the close frame and reading the client's reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection being dropped (slow consumer, write timeout) gets to send its
/// close frame: it is not reading, so the frame may never leave.
const DROP_TIMEOUT: Duration = Duration::from_millis(200);

/// Serves one upgraded WebSocket connection until it ends: greets it, feeds its messages
/// to the hub, writes what the hub queues (everything queued, then one flush), pings it,
/// and closes it on idle timeout, oversize (1009), invalid UTF-8 (1007), slow consumption
/// or a stalled write (1008), or shutdown (1001). `wire` finds the connection's socket
/// under the WebSocket: what the hub queues is written there, framed once per broadcast
/// (see [`Wire`]); the WebSocket reads, and writes its own control frames.
///
/// Not an `async fn`: the connection's state is built here and moved into the returned
/// future once, so that the future holds the WebSocket once (an `async fn` keeps its
/// arguments beside what they were moved into; idle connections are most of the memory).
pub(crate) fn serve_connection<'a, S, W>(
    mut ws: S,
    wire: fn(&mut S) -> &mut Wire<W>,
    direct: Option<Arc<dyn DirectSocket>>,
    peer: std::net::SocketAddr,
    admission: Admission,
    state: &'a ServerState,
    runtime: &'a dyn Runtime,
) -> impl Future<Output = ()> + Send + 'a
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send + 'a,
    W: AsyncWrite + Unpin + 'a,
{
    let limits = state.limits();
    let shared = direct.is_some();
    let outbox = Arc::new(Outbox::new(
        limits.send_queue_messages,
        limits.send_queue_bytes,
        direct,
    ));
    if shared {
        wire(&mut ws).share(Arc::clone(&outbox));
    }
    let token = crate::hub::random_token();
    let connected = admission.hub.connect(token, Arc::clone(&outbox));
    let mut conn = connected.ok().map(|id| Connection {
        ws,
        wire,
        id,
        admission,
        state,
        outbox,
        runtime,
        liveness: Liveness::new(limits, runtime.now()),
        closing: None,
        operation: None,
        cork: Cork::default(),
        left: false,
    });
    async move {
        // Borrowed in place: moving it out would store it twice.
        let Some(conn) = conn.as_mut() else {
            return tracing::error!(%peer, "protocol refused a fresh connection");
        };
        let id = conn.id;
        let path = conn.admission.hub.path();
        tracing::info!(client = %id, hub = path, %peer, "connection open");
        let ended = conn.run().await;
        conn.cork.flush();
        conn.leave();
        let hub = &conn.admission.hub;
        let path = hub.path();
        hub.counters().closed(ended.reason());
        match ended {
            Outcome::SlowConsumer | Outcome::WriteTimeout => {
                tracing::warn!(client = %id, hub = path, %peer, "connection closed: {ended}")
            }
            _ => tracing::info!(client = %id, hub = path, %peer, "connection closed: {ended}"),
        }
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum Outcome {
    /// The client closed the WebSocket.
    ByClient,
    /// The client asked with `{"disconnect":true}`; the server closed with 1000.
    Disconnected,
    /// The server closed it with this code and reason.
    ByServer(u16, Cow<'static, str>),
    /// Its send queue overflowed.
    SlowConsumer,
    /// A write made no progress for `WriteTimeoutMs`.
    WriteTimeout,
    /// The socket ended or failed without a close handshake.
    Broken(String),
}

impl Outcome {
    /// The `reason` label of `rocket_closes_total`.
    fn reason(&self) -> CloseReason {
        match self {
            Outcome::ByClient | Outcome::Broken(_) => CloseReason::Client,
            Outcome::Disconnected => CloseReason::Disconnect,
            Outcome::SlowConsumer => CloseReason::SlowConsumer,
            Outcome::WriteTimeout => CloseReason::WriteTimeout,
            Outcome::ByServer(code, reason) => match *code {
                1000 => CloseReason::Disconnect,
                1001 if reason == IDLE_TIMEOUT => CloseReason::IdleTimeout,
                1001 => CloseReason::Shutdown,
                1007 => CloseReason::InvalidUtf8,
                1008 => CloseReason::MaxFailedAuth,
                1009 => CloseReason::TooBig,
                _ => CloseReason::ProtocolError,
            },
        }
    }
}

/// The close reason of an idle connection.
const IDLE_TIMEOUT: &str = "idle timeout";

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::ByClient => f.write_str("closed by the client"),
            Outcome::Disconnected => {
                f.write_str("the client asked to disconnect; closed by the server with 1000")
            }
            Outcome::ByServer(code, reason) => write!(f, "closed by the server: {code} {reason}"),
            Outcome::SlowConsumer => {
                f.write_str("slow consumer: send queue full, closed with 1008")
            }
            Outcome::WriteTimeout => {
                f.write_str("write timeout: the client stopped reading, connection dropped")
            }
            Outcome::Broken(why) => f.write_str(why),
        }
    }
}

/// An operation run for the connection's client, resolving to its id and result.
/// An operation under way: resolves to its completion, or to `None` when it was fed to the
/// hub already (a cluster join completes at its marker).
type PendingOp<'a> = Pin<Box<dyn Future<Output = (OpId, Option<Completion>)> + Send + 'a>>;

struct Connection<'a, S, W> {
    ws: S,
    /// The socket under `ws`, where the outbox's frames are written.
    wire: fn(&mut S) -> &mut Wire<W>,
    id: ClientId,
    /// The hub, and the connection's place under `MaxConnections`.
    admission: Admission,
    state: &'a ServerState,
    outbox: Arc<Outbox>,
    runtime: &'a dyn Runtime,
    liveness: Liveness,
    /// The outbox asked to close once everything queued is written.
    closing: Option<(u16, Cow<'static, str>)>,
    /// An operation started on the client's behalf; its next frame waits for it.
    operation: Option<PendingOp<'a>>,
    /// What the client's messages queued for other connections, to be written through
    /// before this task waits (see [`Cork`]).
    cork: Cork,
    /// The connection left its hub ([`Connection::leave`]).
    left: bool,
}

impl<S, W> Connection<'_, S, W> {
    /// Leaves the hub, once: the hub stops writing to the socket (which closes with the
    /// task) and the protocol hears of the disconnect.
    fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            self.outbox.detach();
            self.admission.hub.disconnect(self.id);
        }
    }
}

impl<S, W> Drop for Connection<'_, S, W> {
    /// A task dropped before its end (a panic, a runtime shut down) leaves the hub too:
    /// nothing keeps writing to a socket whose task is gone, nor holds it open.
    fn drop(&mut self) {
        self.leave();
    }
}

enum Event {
    /// Everything is written and the outbox asked to close.
    Close(u16, Cow<'static, str>),
    SlowConsumer,
    WriteFailed(WsError),
    Completed(OpId, Option<Completion>),
    Incoming(Option<Result<Message, WsError>>),
    Tick,
}

impl<'a, S, W> Connection<'a, S, W>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
    W: AsyncWrite + Unpin,
{
    /// The connection's life. Rare, large steps (closing) are boxed so that they do not
    /// size every connection's task: idle connections are most of a server's memory.
    async fn run(&mut self) -> Outcome {
        let mut tick = self.runtime.sleep(self.liveness.period());
        let mut burst = 0u32;
        loop {
            // Executors without a cooperative budget (async-std, smol) would let a client
            // whose messages are all buffered starve the other connections' writers.
            burst += 1;
            if burst == YIELD_EVERY {
                burst = 0;
                self.cork.flush();
                yield_now().await;
            }
            let event = poll_fn(|cx| self.poll_event(cx, tick.as_mut())).await;
            if !matches!(event, Event::Incoming(Some(Ok(_))) | Event::Completed(..)) {
                // What follows may wait (closing): nothing corked waits with it.
                self.cork.flush();
            }
            match event {
                Event::Close(code, reason) => {
                    Box::pin(self.close(code, &reason)).await;
                    return if code == CloseCode::NORMAL.0 {
                        Outcome::Disconnected // the engine closes with 1000 on request only
                    } else {
                        Outcome::ByServer(code, reason)
                    };
                }
                Event::SlowConsumer => {
                    Box::pin(self.drop_with("slow consumer")).await;
                    return Outcome::SlowConsumer;
                }
                Event::WriteFailed(e) => return Outcome::Broken(format!("write failed: {e}")),
                Event::Completed(op, completion) => {
                    let next = completion.and_then(|completion| {
                        self.admission.hub.handle_completion(
                            self.id,
                            op,
                            completion,
                            &mut self.cork,
                        )
                    });
                    self.operation = next.and_then(|(op, operation)| self.start(op, operation));
                }
                Event::Incoming(None) => return Outcome::Broken("connection ended".into()),
                Event::Incoming(Some(Ok(message))) => {
                    self.liveness.handle_message();
                    let (hub, id, cork) = (&*self.admission.hub, self.id, &mut self.cork);
                    let started = match message {
                        Message::Text(text) => {
                            hub.handle_message(id, rocket_proto::Message::Text(&text), cork)
                        }
                        Message::Binary(bytes) => {
                            hub.handle_message(id, rocket_proto::Message::Binary(&bytes), cork)
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
                        Message::Close(_) => {
                            cork.flush();
                            // tungstenite queued the close reply; flush it, briefly.
                            let flush = self.ws.flush();
                            let _ = futures_util::future::select(
                                flush,
                                self.runtime.sleep(CLOSE_TIMEOUT),
                            )
                            .await;
                            return Outcome::ByClient;
                        }
                    };
                    if let Some((op, operation)) = started {
                        self.operation = self.start(op, operation);
                    }
                }
                Event::Incoming(Some(Err(e))) => return Box::pin(self.read_failed(e)).await,
                Event::Tick => {
                    let writing = self
                        .is_writing()
                        .then(|| (self.wire)(&mut self.ws).written());
                    match self.liveness.handle_timeout(self.runtime.now(), writing) {
                        Due::Nothing => {}
                        Due::Ping => (self.wire)(&mut self.ws).push(Frame::ping()),
                        Due::IdleTimeout => {
                            let (code, reason) = (CloseCode::GOING_AWAY.0, IDLE_TIMEOUT);
                            Box::pin(self.close(code, reason)).await;
                            return Outcome::ByServer(code, reason.into());
                        }
                        Due::WriteTimeout => {
                            Box::pin(self.drop_with("write timeout")).await;
                            return Outcome::WriteTimeout;
                        }
                    }
                    tick = self.runtime.sleep(self.liveness.period());
                }
            }
        }
    }

    /// One step of the loop: take what the hub queued, write, then read, then the timer.
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        tick: Pin<&mut (dyn Future<Output = ()> + Send)>,
    ) -> Poll<Event> {
        if self.closing.is_none() {
            match self.outbox.poll_next(cx) {
                Poll::Ready(Next::Batch(batch)) => (self.wire)(&mut self.ws).queue(batch),
                Poll::Ready(Next::Finish(Finish::SlowConsumer)) => {
                    return Poll::Ready(Event::SlowConsumer);
                }
                Poll::Ready(Next::Finish(Finish::Close { code, reason })) => {
                    self.closing = Some((code, reason));
                }
                Poll::Pending => {}
            }
        }
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(Event::WriteFailed(e));
        }
        if !self.is_writing()
            && let Some((code, reason)) = self.closing.take()
        {
            return Poll::Ready(Event::Close(code, reason));
        }
        match &mut self.operation {
            Some(running) => {
                if let Poll::Ready((op, completion)) = running.as_mut().poll(cx) {
                    self.operation = None;
                    return Poll::Ready(Event::Completed(op, completion));
                }
            }
            None => {
                if let Poll::Ready(item) = self.ws.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Incoming(item));
                }
            }
        }
        if tick.poll(cx).is_ready() {
            return Poll::Ready(Event::Tick);
        }
        // Reading may have written (a pong): finish it, or be woken when the socket takes
        // more, and hand the socket back to the hub once it is out.
        if let Err(e) = self.poll_write(cx) {
            return Poll::Ready(Event::WriteFailed(e));
        }
        // Nothing more to do now: write what the client's messages queued for others.
        self.cork.flush();
        Poll::Pending
    }

    /// Writes what is queued on the wire as far as the socket takes it (the WebSocket's
    /// own frames, such as pongs, are queued there too when the socket was full). Never
    /// waits: what cannot be written yet stays for the next poll, which the socket wakes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), WsError> {
        let wire = (self.wire)(&mut self.ws);
        let sent = wire.poll_send(cx);
        let released = wire.take_released();
        if released > 0 {
            self.outbox.handed_over(released);
        }
        if sent.is_ready() && self.closing.is_none() {
            // All out: the hub may write through again (not once the connection closes).
            wire.release();
        }
        match sent {
            Poll::Ready(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn is_writing(&mut self) -> bool {
        (self.wire)(&mut self.ws).is_sending()
    }

    /// Runs `operation` off the hub's lock. A PHC secret is checked off the executor, a
    /// few at once server-wide, taking turns fairly across client addresses; an attempt
    /// over its address's share of the queue fails at once, as a wrong secret
    /// (`verifier.rs`). `None` for an operation this server cannot run (the client's frames
    /// then flow on).
    fn start(&self, op: OpId, operation: Operation) -> Option<PendingOp<'a>> {
        let (state, runtime) = (self.state, self.runtime);
        let peer = self.admission.permit.ip();
        match operation {
            Operation::VerifySecret(v) => Some(Box::pin(async move {
                let ok = state.verify(runtime, peer, v).await;
                (op, Some(Completion::SecretVerified(ok)))
            })),
            Operation::Publish(publication) => {
                let reached = self.admission.hub.publish_and_ask(&publication);
                Some(Box::pin(async move {
                    let completion = match reached.await {
                        Some(reached) => Completion::Published(reached),
                        None => Completion::Unavailable,
                    };
                    (op, Some(completion))
                }))
            }
            shared @ (Operation::Join(_) | Operation::History { .. } | Operation::Presence(_)) => {
                let done = self.admission.hub.run_shared(op, shared);
                Some(Box::pin(async move { (op, done.await) }))
            }
            other => {
                tracing::error!(client = %self.id, %op, ?other, "unsupported operation");
                None
            }
        }
    }

    /// Drops a client that does not read: close 1008 with `reason` is attempted briefly.
    async fn drop_with(&mut self, reason: &str) {
        (self.wire)(&mut self.ws).discard();
        let frame = close_frame(CloseCode::POLICY.0, reason);
        let attempt = self.ws.send(Message::Close(Some(frame)));
        let _ = futures_util::future::select(attempt, self.runtime.sleep(DROP_TIMEOUT)).await;
    }

    async fn read_failed(&mut self, e: WsError) -> Outcome {
        let (code, reason) = match &e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                (CloseCode::TOO_BIG.0, "message too big")
            }
            WsError::Utf8(_) => (CloseCode::INVALID_DATA.0, "invalid UTF-8"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return Outcome::Broken("reset without a closing handshake".into());
            }
            WsError::Protocol(_) => (1002, "protocol error"),
            _ => return Outcome::Broken(format!("read failed: {e}")),
        };
        self.close(code, reason).await;
        Outcome::ByServer(code, reason.into())
    }

    /// Sends a close frame, then waits for the client's close reply; both within
    /// [`CLOSE_TIMEOUT`], since the client may not read at all.
    async fn close(&mut self, code: u16, reason: &str) {
        (self.wire)(&mut self.ws).discard();
        let ws = &mut self.ws;
        let handshake = async {
            if ws
                .send(Message::Close(Some(close_frame(code, reason))))
                .await
                .is_ok()
            {
                while let Some(Ok(_)) = ws.next().await {}
            }
        };
        let _ =
            futures_util::future::select(pin!(handshake), self.runtime.sleep(CLOSE_TIMEOUT)).await;
    }
}

/// Returns `Pending` once (after asking to be polled again), letting other tasks run.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: WsCloseCode::from(code),
        reason: reason.to_owned().into(),
    }
}
