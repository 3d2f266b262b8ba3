//! A connection's outbound queue and its slow-consumer policy.
//!
//! The hub pushes messages without ever waiting; the connection's driver drains everything
//! queued in one go and writes it with a single flush. A queue that reaches its bound
//! means the client does not read fast enough: it is a *slow consumer*, its queue is
//! dropped and the driver closes it with 1008 "slow consumer". Nobody else waits for it,
//! and server memory per connection stays bounded.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tungstenite::Message;

/// How a connection ends, as decided by the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
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
pub enum Next {
    /// Everything queued, in order. The queue's allocation leaves with it, so an idle
    /// connection holds none.
    Batch(VecDeque<Message>),
    /// The connection must end.
    End(End),
}

/// The queue was full: the client is now a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Message>,
    end: Option<End>,
    waker: Option<Waker>,
}

/// A bounded, single-consumer queue of outbound messages for one connection.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    state: Mutex<State>,
}

impl Outbox {
    /// An empty queue holding at most `capacity` messages (`SendQueueMessages`).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    /// Queues `message`. Never waits. On overflow the queue is dropped and the connection
    /// marked as a slow consumer (reported once). Messages pushed after the connection
    /// was told to end are discarded.
    pub fn push(&self, message: Message) -> Result<(), Overflow> {
        let mut s = self.lock();
        if s.end.is_some() {
            return Ok(());
        }
        if s.queue.len() >= self.capacity {
            s.queue = VecDeque::new();
            s.end = Some(End::SlowConsumer);
            wake(&mut s);
            return Err(Overflow);
        }
        s.queue.push_back(message);
        if s.queue.len() == 1 {
            wake(&mut s);
        }
        Ok(())
    }

    /// Asks the driver to flush the queue and then close with `code` and `reason`. The
    /// first end wins.
    pub fn close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        let mut s = self.lock();
        if s.end.is_none() {
            s.end = Some(End::Close {
                code,
                reason: reason.into(),
            });
            wake(&mut s);
        }
    }

    /// Takes every queued message ([`Next::Batch`]), or reports the end once the queue is
    /// empty. A slow consumer ends at once. Only the connection's driver polls.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut s = self.lock();
        if s.end == Some(End::SlowConsumer) {
            return Poll::Ready(Next::End(End::SlowConsumer));
        }
        if !s.queue.is_empty() {
            return Poll::Ready(Next::Batch(std::mem::take(&mut s.queue)));
        }
        if let Some(end) = s.end.clone() {
            return Poll::Ready(Next::End(end));
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// Ready once the connection became a slow consumer (polled while a write is pending).
    pub fn poll_slow_consumer(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.end == Some(End::SlowConsumer) {
            return Poll::Ready(());
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
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
        let o = Outbox::new(3);
        assert_eq!(poll(&o), Poll::Pending);
        for m in ["a", "b"] {
            o.push(Message::text(m)).unwrap();
        }
        o.close(1000, "bye");
        o.push(Message::text("after close")).unwrap();
        let batch = VecDeque::from([Message::text("a"), Message::text("b")]);
        assert_eq!(poll(&o), Poll::Ready(Next::Batch(batch)));
        let end = End::Close {
            code: 1000,
            reason: "bye".into(),
        };
        assert_eq!(poll(&o), Poll::Ready(Next::End(end)));
    }

    #[test]
    fn overflow_makes_a_slow_consumer_and_drops_the_queue() {
        let o = Outbox::new(2);
        o.push(Message::text("1")).unwrap();
        o.push(Message::text("2")).unwrap();
        assert_eq!(o.push(Message::text("3")), Err(Overflow));
        assert!(o.is_empty());
        assert_eq!(o.push(Message::text("4")), Ok(()), "reported once");
        assert_eq!(poll(&o), Poll::Ready(Next::End(End::SlowConsumer)));
        let cx = &mut Context::from_waker(Waker::noop());
        assert_eq!(o.poll_slow_consumer(cx), Poll::Ready(()));
    }
}
