//! The connection driver: one async task per WebSocket connection, written once over the
//! `futures` `Stream`/`Sink` traits and a small [`Runtime`] trait, so every runtime runs
//! the same code.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use rocket_proto::{ClientId, CloseCode, Frame, Verification};
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use crate::hub::Hub;
use crate::outbox::{End, Next, Outbox};
use crate::service::{Admission, Service};

/// What the driver needs from a runtime: a timer, and a pool for blocking work.
pub trait Runtime: Send + Sync + 'static {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Runs `job` on a thread where blocking is allowed (argon2 verification).
    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>>;
}

/// Events handled in a row before the connection task yields to its executor.
const YIELD_EVERY: u32 = 32;

/// How long a closing connection waits for the client's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one upgraded WebSocket connection until it ends: greets it, feeds its messages
/// to the hub, writes what the hub queues (everything queued, then one flush), pings it,
/// and closes it on idle timeout, oversize (1009), invalid UTF-8 (1007), slow consumption
/// (1008) or shutdown (1001).
pub async fn serve_connection<S>(
    ws: S,
    peer: std::net::SocketAddr,
    admission: Admission,
    service: &Service,
    runtime: &dyn Runtime,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let limits = service.limits();
    let outbox = Arc::new(Outbox::new(limits.send_queue_messages));
    let hub = &*admission.hub;
    let token = crate::hub::random_token();
    let Ok(id) = hub.connect(token, Arc::clone(&outbox)) else {
        tracing::error!(%peer, "protocol refused a fresh connection");
        return;
    };
    tracing::info!(client = %id, hub = hub.path(), %peer, "connection open");
    let mut conn = Connection {
        ws,
        id,
        hub,
        service,
        outbox: &outbox,
        runtime,
        ping_every: millis(limits.ping_interval_ms),
        idle_after: millis(limits.idle_timeout_ms),
        last_seen: Instant::now(),
        active: false,
    };
    let ended = conn.run().await;
    hub.disconnect(id);
    match ended {
        Ended::SlowConsumer => {
            tracing::warn!(client = %id, hub = hub.path(), %peer, "connection closed: {ended}")
        }
        _ => tracing::info!(client = %id, hub = hub.path(), %peer, "connection closed: {ended}"),
    }
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum Ended {
    /// The client closed the WebSocket (or asked to: `disconnect` closes with 1000).
    ByClient,
    /// The server closed it with this code and reason.
    ByServer(u16, std::borrow::Cow<'static, str>),
    /// Its send queue overflowed.
    SlowConsumer,
    /// The socket ended or failed without a close handshake.
    Broken(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ByClient => f.write_str("closed by the client"),
            Ended::ByServer(code, reason) => write!(f, "closed by the server: {code} {reason}"),
            Ended::SlowConsumer => f.write_str("slow consumer: send queue full, closed with 1008"),
            Ended::Broken(why) => f.write_str(why),
        }
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

struct Connection<'a, S> {
    ws: S,
    id: ClientId,
    hub: &'a Hub,
    service: &'a Service,
    outbox: &'a Outbox,
    runtime: &'a dyn Runtime,
    ping_every: Option<Duration>,
    idle_after: Option<Duration>,
    last_seen: Instant,
    active: bool,
}

enum Event {
    Outbox(Next),
    Incoming(Option<Result<Message, WsError>>),
    Tick,
}

impl<S> Connection<'_, S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    /// The connection's life. Rare, large steps (closing, verifying a secret) are boxed so
    /// that they do not size every connection's task: idle connections are most of a
    /// server's memory.
    async fn run(&mut self) -> Ended {
        let mut tick = self.next_tick();
        let mut burst = 0u32;
        loop {
            // Executors without a cooperative budget (async-std, smol) would let a client
            // whose messages are all buffered starve the other connections' writers.
            burst += 1;
            if burst == YIELD_EVERY {
                burst = 0;
                yield_now().await;
            }
            let event = poll_fn(|cx| {
                if let Poll::Ready(next) = self.outbox.poll_next(cx) {
                    return Poll::Ready(Event::Outbox(next));
                }
                if let Poll::Ready(item) = self.ws.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Incoming(item));
                }
                if let Some(t) = tick.as_mut() {
                    if t.poll_unpin(cx).is_ready() {
                        return Poll::Ready(Event::Tick);
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Outbox(Next::Batch(batch)) => {
                    // Boxed (one allocation per batch, next to a write system call) to keep
                    // the idle connection's task small.
                    if let Err(ended) = Box::pin(self.write_batch(batch)).await {
                        return ended;
                    }
                }
                Event::Outbox(Next::End(End::Close { code, reason })) => {
                    Box::pin(self.close(code, &reason)).await;
                    return if code == CloseCode::NORMAL.0 {
                        Ended::ByClient // the client asked with {"disconnect":true}
                    } else {
                        Ended::ByServer(code, reason)
                    };
                }
                Event::Outbox(Next::End(End::SlowConsumer)) => {
                    return Box::pin(self.drop_slow_consumer()).await;
                }
                Event::Incoming(None) => return Ended::Broken("connection ended".into()),
                Event::Incoming(Some(Ok(message))) => {
                    self.active = true;
                    let (hub, id) = (self.hub, self.id);
                    let verification = match message {
                        Message::Text(text) => hub.handle_frame(id, Frame::Text(&text)),
                        Message::Binary(bytes) => hub.handle_frame(id, Frame::Binary(&bytes)),
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
                        Message::Close(_) => {
                            // tungstenite queued the close reply; flush it.
                            let _ = Box::pin(self.ws.flush()).await;
                            return Ended::ByClient;
                        }
                    };
                    if let Some(v) = verification {
                        Box::pin(self.verify(v)).await;
                    }
                }
                Event::Incoming(Some(Err(e))) => return Box::pin(self.read_failed(e)).await,
                Event::Tick => {
                    let now = Instant::now();
                    if std::mem::take(&mut self.active) {
                        self.last_seen = now;
                    }
                    if self
                        .idle_after
                        .is_some_and(|idle| now - self.last_seen >= idle)
                    {
                        Box::pin(self.close(CloseCode::GOING_AWAY.0, "idle timeout")).await;
                        return Ended::ByServer(CloseCode::GOING_AWAY.0, "idle timeout".into());
                    }
                    if self.ping_every.is_some()
                        && Box::pin(self.ws.send(Message::Ping(Default::default())))
                            .await
                            .is_err()
                    {
                        return Ended::Broken("ping failed".into());
                    }
                    tick = self.next_tick();
                }
            }
        }
    }

    /// Checks a PHC secret off the hub's lock and off the executor, at most
    /// `MAX_CONCURRENT_VERIFICATIONS` at once. This client's next frame waits, so its
    /// replies stay in order.
    async fn verify(&mut self, v: Verification) {
        let ok = {
            let _slot = self.service.verification_slot().await;
            let job = move || crate::verify_phc(&v.phc, &v.secret);
            self.runtime.unblock(Box::new(job)).await
        };
        self.hub.secret_verified(self.id, ok);
    }

    /// The timer for the next ping or idle check.
    fn next_tick(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let period = match (self.ping_every, self.idle_after) {
            (Some(p), Some(i)) => p.min(i),
            (p, i) => p.or(i)?,
        };
        Some(self.runtime.sleep(period))
    }

    /// Writes everything drained from the outbox with one flush, giving up at once if the
    /// client becomes a slow consumer meanwhile.
    async fn write_batch(&mut self, batch: VecDeque<Message>) -> Result<(), Ended> {
        let outbox = self.outbox;
        let result = {
            let ws = &mut self.ws;
            let mut write = pin!(async {
                for message in batch {
                    ws.feed(message).await?;
                }
                ws.flush().await
            });
            poll_fn(|cx| {
                if outbox.poll_slow_consumer(cx).is_ready() {
                    return Poll::Ready(Err(None));
                }
                write.as_mut().poll(cx).map_err(Some)
            })
            .await
        };
        match result {
            Ok(()) => Ok(()),
            Err(None) => Err(Box::pin(self.drop_slow_consumer()).await),
            Err(Some(e)) => Err(Ended::Broken(format!("write failed: {e}"))),
        }
    }

    async fn drop_slow_consumer(&mut self) -> Ended {
        let frame = close_frame(CloseCode::POLICY.0, "slow consumer");
        // The client is not reading, so the close frame may never leave: try briefly.
        let attempt = self.ws.send(Message::Close(Some(frame)));
        let _ =
            futures_util::future::select(attempt, self.runtime.sleep(Duration::from_millis(200)))
                .await;
        Ended::SlowConsumer
    }

    async fn read_failed(&mut self, e: WsError) -> Ended {
        let (code, reason) = match &e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                (CloseCode::TOO_BIG.0, "message too big")
            }
            WsError::Utf8(_) => (CloseCode::INVALID_DATA.0, "invalid UTF-8"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return Ended::Broken("reset without a closing handshake".into());
            }
            WsError::Protocol(_) => (1002, "protocol error"),
            _ => return Ended::Broken(format!("read failed: {e}")),
        };
        self.close(code, reason).await;
        Ended::ByServer(code, reason.into())
    }

    /// Sends a close frame, then waits briefly for the client's close reply.
    async fn close(&mut self, code: u16, reason: &str) {
        if self
            .ws
            .send(Message::Close(Some(close_frame(code, reason))))
            .await
            .is_err()
        {
            return;
        }
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = futures_util::future::select(pin!(drain), self.runtime.sleep(CLOSE_TIMEOUT)).await;
    }
}

/// Returns `Pending` once (after asking to be polled again), letting other tasks run.
async fn yield_now() {
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
