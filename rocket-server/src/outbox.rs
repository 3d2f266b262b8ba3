//! A connection's outbound queue (of frames, see `wire.rs`) and its slow-consumer policy.
//!
//! The hub pushes messages without ever waiting; the connection's driver drains everything
//! queued in one go and writes it with a single flush. A queue that reaches its bound — in
//! messages (`SendQueueMessages`) or in bytes (`SendQueueBytes`) — means the client does not
//! read fast enough: it is a *slow consumer*, its queue is dropped and the driver closes it
//! with 1008 "slow consumer". Nobody else waits for it, and server memory per connection
//! stays bounded.
//!
//! Bytes count from the push until the driver has handed them to the socket: a batch the
//! driver took but has not written to the socket yet still counts ([`Outbox::handed_over`]
//! releases each message's bytes once it is written whole).
//! One message is always accepted into an empty queue, whatever its size.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::wire::Frame;

/// How a connection ends, as decided by the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Flush what is queued, then close with this code and reason.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: Cow<'static, str>,
    },
    /// The queue overflowed: attempt close 1008 "slow consumer", then drop the connection.
    SlowConsumer,
}

/// What [`Outbox::poll_next`] produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Everything queued, in order. The queue's allocation leaves with it, so an idle
    /// connection holds none.
    Batch(VecDeque<Frame>),
    /// The connection must end.
    Finish(Finish),
}

/// The queue was full: the client is now a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    /// Bytes of the messages in `queue`.
    queued_bytes: usize,
    /// Bytes the driver took with the last batches and has not yet handed to the socket.
    taken_bytes: usize,
    end: Option<Finish>,
    waker: Option<Waker>,
}

/// A bounded, single-consumer queue of outbound messages for one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    max_messages: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

impl Outbox {
    /// An empty queue holding at most `max_messages` messages (`SendQueueMessages`) and
    /// `max_bytes` bytes not yet handed to the socket (`SendQueueBytes`).
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            max_messages: max_messages.max(1),
            max_bytes,
            state: Mutex::default(),
        }
    }

    /// Queues `message`. Never waits. On overflow the queue is dropped and the connection
    /// marked as a slow consumer (reported once). Messages pushed after the connection
    /// was told to end are discarded.
    pub(crate) fn push(&self, message: Frame) -> Result<(), Overflow> {
        let mut s = self.lock();
        if s.end.is_some() {
            return Ok(());
        }
        let len = message.payload_len();
        let pending = s.queued_bytes + s.taken_bytes;
        if s.queue.len() >= self.max_messages || (pending > 0 && pending + len > self.max_bytes) {
            s.queue = VecDeque::new();
            s.queued_bytes = 0;
            s.end = Some(Finish::SlowConsumer);
            wake(&mut s);
            return Err(Overflow);
        }
        s.queued_bytes += len;
        s.queue.push_back(message);
        if s.queue.len() == 1 {
            wake(&mut s);
        }
        Ok(())
    }

    /// Asks the driver to flush the queue and then close with `code` and `reason`. The
    /// first end wins.
    pub(crate) fn close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        let mut s = self.lock();
        if s.end.is_none() {
            s.end = Some(Finish::Close {
                code,
                reason: reason.into(),
            });
            wake(&mut s);
        }
    }

    /// Takes every queued message ([`Next::Batch`]), or reports the end once the queue is
    /// empty. A slow consumer ends at once. Only the connection's driver polls; the next
    /// push or end wakes it, whatever this returned.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut s = self.lock();
        if s.end == Some(Finish::SlowConsumer) {
            return Poll::Ready(Next::Finish(Finish::SlowConsumer));
        }
        if !s.queue.is_empty() {
            s.taken_bytes += std::mem::take(&mut s.queued_bytes);
            // The driver writes this batch without polling again first: the next push must
            // still wake it.
            register(&mut s, cx);
            return Poll::Ready(Next::Batch(std::mem::take(&mut s.queue)));
        }
        if let Some(end) = s.end.clone() {
            return Poll::Ready(Next::Finish(end));
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// Messages the driver took, of `bytes` in all, are written to the socket: their bytes
    /// stop counting against `SendQueueBytes`.
    pub(crate) fn handed_over(&self, bytes: usize) {
        let mut s = self.lock();
        s.taken_bytes = s.taken_bytes.saturating_sub(bytes);
    }

    /// Messages queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Bytes counted against `SendQueueBytes` now: queued, or taken and not yet handed over.
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> usize {
        let s = self.lock();
        s.queued_bytes + s.taken_bytes
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn register(s: &mut State, cx: &mut Context<'_>) {
    match &mut s.waker {
        Some(w) if w.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
}

fn wake(s: &mut State) {
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(o: &Outbox) -> Poll<Next> {
        o.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn drains_in_order_then_ends() {
        let o = Outbox::new(3, 1 << 20);
        assert_eq!(poll(&o), Poll::Pending);
        for m in ["a", "b"] {
            o.push(Frame::text(m)).unwrap();
        }
        o.close(1000, "bye");
        o.push(Frame::text("after close")).unwrap();
        let batch = VecDeque::from([Frame::text("a"), Frame::text("b")]);
        assert_eq!(poll(&o), Poll::Ready(Next::Batch(batch)));
        let end = Finish::Close {
            code: 1000,
            reason: "bye".into(),
        };
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(end)));
    }

    #[test]
    fn overflow_makes_a_slow_consumer_and_drops_the_queue() {
        let o = Outbox::new(2, 1 << 20);
        o.push(Frame::text("1")).unwrap();
        o.push(Frame::text("2")).unwrap();
        assert_eq!(o.push(Frame::text("3")), Err(Overflow));
        assert!(o.is_empty());
        assert_eq!(o.push(Frame::text("4")), Ok(()), "reported once");
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(Finish::SlowConsumer)));
    }

    #[test]
    fn a_push_after_a_batch_wakes_the_driver() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cx = &mut Context::from_waker(&waker);
        let o = Outbox::new(8, 1 << 20);
        o.push(Frame::text("a")).unwrap();
        assert!(matches!(o.poll_next(cx), Poll::Ready(Next::Batch(_))));
        o.push(Frame::text("b")).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "woken by the push after a batch"
        );
    }

    #[test]
    fn bytes_not_handed_to_the_socket_are_bounded() {
        let o = Outbox::new(100, 10);
        o.push(Frame::text("x".repeat(25))).unwrap();
        assert_eq!(
            o.pending_bytes(),
            25,
            "one message always fits an empty queue"
        );
        let Poll::Ready(Next::Batch(batch)) = poll(&o) else {
            panic!("a batch")
        };
        assert_eq!(batch.len(), 1);
        assert_eq!(
            o.pending_bytes(),
            25,
            "taken but not handed over still counts"
        );
        o.handed_over(20);
        assert_eq!(o.pending_bytes(), 5, "released as they are written");
        o.handed_over(5);
        assert_eq!(o.pending_bytes(), 0);
        o.push(Frame::text("1234")).unwrap();
        o.push(Frame::text("123456")).unwrap();
        assert_eq!(o.pending_bytes(), 10, "exactly at the bound is allowed");
        assert_eq!(o.push(Frame::text("1")), Err(Overflow));
        assert_eq!(o.pending_bytes(), 0, "the queue is freed");
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(Finish::SlowConsumer)));
    }

    #[test]
    fn a_taken_batch_counts_until_handed_over() {
        let o = Outbox::new(100, 10);
        o.push(Frame::text("12345678")).unwrap();
        let Poll::Ready(Next::Batch(_)) = poll(&o) else {
            panic!("a batch")
        };
        assert_eq!(o.push(Frame::text("123")), Err(Overflow));
    }
}
