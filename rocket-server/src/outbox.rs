//! A connection's outbound queue (of frames, see `wire.rs`), its slow-consumer policy, and
//! the write-through that spares an idle connection's task a wake-up.
//!
//! The hub pushes messages without ever waiting. A queue that reaches its bound — in
//! messages (`SendQueueMessages`) or in bytes (`SendQueueBytes`) — means the client does not
//! read fast enough: it is a *slow consumer*, its queue is dropped and the driver closes it
//! with 1008 "slow consumer". Nobody else waits for it, and server memory per connection
//! stays bounded.
//!
//! # Who writes to the socket
//!
//! Waking a connection's task for every small frame costs more CPU than writing the frame
//! (a cross-thread wake-up, a poll, then the write), and that is the common case: a
//! subscriber idle between broadcasts. So when the connection's task is not writing, the
//! socket belongs to the hub: what the hub queues is written straight to the socket by the
//! thread that dispatched it ([`Outbox::flush`], one non-blocking write of everything
//! queued, after the dispatch and outside the hub's locks; see `hub::Cork`), helped for a
//! large channel by the process's writer threads (`writers.rs`), and the task is not woken
//! at all. The task takes the socket over ([`Outbox::poll_next`],
//! [`Outbox::claim`]) as soon as it has anything to write itself: the rest of a frame the
//! socket did not take whole, a pong, a ping, a close frame. It hands it back
//! ([`Outbox::release`]) once everything it wrote has left. Every write to the socket
//! happens under the outbox's lock or by its owner, so frames never interleave, and they
//! leave in the order the hub queued them.
//!
//! Only a plain TCP socket is written through ([`DirectSocket`]); under TLS the task
//! encrypts, and is woken for every batch as before.
//!
//! Bytes count from the push until they are handed to the socket: a batch the driver took
//! but has not written to the socket yet still counts ([`Outbox::handed_over`] releases
//! each message's bytes once it is written whole).
//! One message is always accepted into an empty queue, whatever its size. A run of
//! broadcasts joined into one entry (`hub::Run`) counts as its messages and their bytes;
//! one that does not fit whole is queued message by message, as if each had come alone.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::wire::{Frame, Queued, gather};

/// A socket the hub may write to from any thread, without waiting: a plain TCP socket,
/// shared with the connection's task (every runtime's `TcpStream` is one, through its file
/// descriptor). Frontends pass it to [`serve_socket`](crate::serve_socket) for plain
/// connections.
///
/// The implementation for every type with a file descriptor (a socket handle on Windows)
/// writes to that descriptor directly, so it is for the runtime's own non-blocking
/// `TcpStream` only: a stream that buffers in user space, encrypts, or is in blocking mode
/// must not be passed (its bytes would interleave with the hub's, or the hub would block).
pub trait DirectSocket: Send + Sync + 'static {
    /// Writes as much of `bufs` as the socket takes now: `WouldBlock` when it takes
    /// nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl<T: crate::AsSocket + Send + Sync + 'static> DirectSocket for T {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The socket is non-blocking (its runtime made it so).
        socket2::SockRef::from(self).send_vectored_with_flags(bufs, SEND_FLAGS)
    }
}

/// A peer gone mid-write is an error, not a `SIGPIPE` that kills a program which does not
/// ignore it (std's socket writes pass the same flag).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: std::ffi::c_int = 0;

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
    Batch(VecDeque<Queued>),
    /// The connection must end.
    Finish(Finish),
}

/// The queue was full: the client is now a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// What [`Outbox::push`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the connection's task (woken if need be), behind the pusher's own
    /// [`Flush`](Self::Flush), or discarded after the connection's end.
    Queued,
    /// Queued first while the socket is the hub's: the pusher must [`Outbox::flush`] it.
    Flush,
    /// Queued behind messages that a flush of somebody else (another dispatch's, or the
    /// writer threads') owes: that flush writes it too.
    Behind,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Messages in `queue` (an entry may hold several, `Frame::join`).
    messages: usize,
    /// Bytes of the messages in `queue`.
    queued_bytes: usize,
    /// Bytes the driver took with the last batches and has not yet handed to the socket.
    taken_bytes: usize,
    end: Option<Finish>,
    waker: Option<Waker>,
    /// The socket, while the hub may write to it; `None` under TLS and once the
    /// connection ends.
    socket: Option<Arc<dyn DirectSocket>>,
    /// The connection's task owns the socket's write side: only it writes.
    task_writes: bool,
    /// The queue's first entry is the rest of a frame partly written by a flush.
    partial: bool,
    /// Who was told to flush the queue (see [`Outbox::push_by`]).
    flush_by: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.messages)
            .field("queued_bytes", &self.queued_bytes)
            .field("taken_bytes", &self.taken_bytes)
            .field("end", &self.end)
            .field("direct", &self.socket.is_some())
            .field("task_writes", &self.task_writes)
            .finish_non_exhaustive()
    }
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
    /// `max_bytes` bytes not yet handed to the socket (`SendQueueBytes`). With `socket`,
    /// what is queued while the task does not write is written through to it.
    pub(crate) fn new(
        max_messages: usize,
        max_bytes: usize,
        socket: Option<Arc<dyn DirectSocket>>,
    ) -> Self {
        Self {
            max_messages: max_messages.max(1),
            max_bytes,
            state: Mutex::new(State {
                socket,
                ..State::default()
            }),
        }
    }

    /// Queues `message`, as [`push_by`](Self::push_by) a pusher with no name.
    #[cfg(test)]
    pub(crate) fn push(&self, message: Frame) -> Result<Pushed, Overflow> {
        self.push_by(message, 0)
    }

    /// Queues `message` for pusher `by` (a cork's number). Never waits. On overflow the
    /// queue is dropped and the connection marked as a slow consumer (reported once).
    /// Messages pushed after the connection was told to end are discarded.
    /// [`Pushed::Flush`] asks the caller to [`flush`](Self::flush) once its dispatch is
    /// over: the task was not woken. [`Pushed::Behind`] tells a message that another
    /// pusher's flush will write.
    ///
    /// A run of messages joined into one ([`Frame::join`]) is queued whole when all of it
    /// fits; else message by message, as if each had been pushed alone (what fits goes in,
    /// the rest overflows).
    pub(crate) fn push_by(&self, message: Frame, by: u64) -> Result<Pushed, Overflow> {
        let mut s = self.lock();
        if s.end.is_some() {
            return Ok(Pushed::Queued);
        }
        if message.messages() > 1 {
            if !self.takes(&s, &message) && s.hub_writes() {
                write_through(&mut s);
            }
            if !self.takes(&s, &message) {
                let mut first = None;
                for one in message.split() {
                    let pushed = self.push_locked(&mut s, one, by)?;
                    first.get_or_insert(pushed);
                }
                return Ok(first.unwrap_or(Pushed::Queued));
            }
        }
        self.push_locked(&mut s, message, by)
    }

    /// Whether every message of `message` fits in the queue as it is: then queuing them
    /// one by one would take them all too.
    fn takes(&self, s: &State, message: &Frame) -> bool {
        let pending = s.queued_bytes + s.taken_bytes;
        s.messages + message.messages() <= self.max_messages
            && pending + message.payload_len() <= self.max_bytes
    }

    fn push_locked(&self, s: &mut State, message: Frame, by: u64) -> Result<Pushed, Overflow> {
        let (len, count) = (message.payload_len(), message.messages());
        let full = |s: &State| {
            let pending = s.queued_bytes + s.taken_bytes;
            (s.messages > 0 && s.messages + count > self.max_messages)
                || (pending > 0 && pending + len > self.max_bytes)
        };
        if full(s) && s.hub_writes() {
            // What waits is the hub's to write, not the client's to read: write it first.
            write_through(s);
        }
        if full(s) {
            // The rest of a frame begun on the wire stays: the close frame follows it.
            let rest = s.queue.pop_front().filter(|_| s.partial);
            s.queued_bytes = rest.as_ref().map_or(0, |rest| rest.counted);
            s.messages = rest.as_ref().map_or(0, |rest| rest.messages);
            s.queue = rest.into_iter().collect();
            s.end = Some(Finish::SlowConsumer);
            wake(s);
            return Err(Overflow);
        }
        s.queued_bytes += len;
        s.messages += count;
        s.queue.push_back(Queued::frame(message));
        if s.queue.len() > 1 {
            // Whoever was told of the first one (the task, or a flush) takes this one too.
            if s.hub_writes() && s.flush_by != by {
                return Ok(Pushed::Behind);
            }
            return Ok(Pushed::Queued);
        }
        if s.hub_writes() {
            s.flush_by = by;
            return Ok(Pushed::Flush);
        }
        wake(s);
        Ok(Pushed::Queued)
    }

    /// Writes what is queued straight to the socket while the hub owns it, in one
    /// non-blocking write (see `wire::gather`); wakes the connection's task for whatever the
    /// socket did not take (the task then owns the socket until that is out), or when the
    /// socket cannot be written through.
    pub(crate) fn flush(&self) {
        let mut s = self.lock();
        if s.queue.is_empty() || s.task_writes {
            return; // written already, or the task has it (and was woken for it)
        }
        if s.hub_writes() {
            write_through(&mut s);
        } else {
            wake(&mut s);
        }
    }

    /// Wakes the connection's task to write what is queued itself, instead of a
    /// [`flush`](Self::flush): it writes on whichever worker thread runs it.
    pub(crate) fn hand_over(&self) {
        let mut s = self.lock();
        if !s.queue.is_empty() {
            wake(&mut s);
        }
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
    /// push or end wakes it, whatever this returned. Taking a batch takes the socket over:
    /// the driver writes it, and [`release`](Self::release)s the socket after.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut s = self.lock();
        if s.end == Some(Finish::SlowConsumer) {
            return Poll::Ready(Next::Finish(Finish::SlowConsumer));
        }
        if !s.queue.is_empty() {
            s.taken_bytes += std::mem::take(&mut s.queued_bytes);
            s.messages = 0;
            s.task_writes = true;
            s.partial = false;
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

    /// The connection's task is about to write to the socket (a frame of its own): it owns
    /// the socket from now on. Returns the rest of a frame a flush wrote in part, which
    /// must go first; wakes the task for the other queued messages.
    pub(crate) fn claim(&self) -> Option<Queued> {
        let mut s = self.lock();
        s.task_writes = true;
        let rest = if std::mem::take(&mut s.partial) {
            let rest = s.queue.pop_front().expect("a partial frame is queued");
            s.queued_bytes -= rest.counted;
            s.messages -= rest.messages;
            s.taken_bytes += rest.counted;
            Some(rest)
        } else {
            None
        };
        if !s.queue.is_empty() {
            wake(&mut s);
        }
        rest
    }

    /// Everything the task wrote has left: the socket is the hub's again, unless messages
    /// were queued meanwhile (the task was woken for them and takes them first). Returns
    /// whether the socket was handed back.
    pub(crate) fn release(&self) -> bool {
        let mut s = self.lock();
        if !s.queue.is_empty() {
            return false;
        }
        s.task_writes = false;
        true
    }

    /// The connection ended: nothing is written through any more, and the outbox no
    /// longer keeps the socket open.
    pub(crate) fn detach(&self) {
        let mut s = self.lock();
        s.socket = None;
        s.task_writes = true;
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
        self.lock().messages
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

impl State {
    /// The socket is the hub's to write: shared, the task not writing, no end asked for.
    fn hub_writes(&self) -> bool {
        self.socket.is_some() && !self.task_writes && self.end.is_none()
    }
}

/// One non-blocking write of what is queued (see `wire::gather`), from the front (the rest
/// of a frame begun goes first); wakes the task for whatever the socket did not take.
fn write_through(s: &mut State) {
    let Some(socket) = s.socket.as_ref() else {
        return;
    };
    let frames = s.queue.iter().map(|queued| &queued.bytes[..]);
    // A failure (the peer is gone) is the task's to find: its own write fails the same.
    let mut n = gather(frames, true, |slices| socket.try_write_vectored(slices)).unwrap_or(0);
    while n > 0 {
        let front = s.queue.front_mut().expect("written bytes were queued");
        if n < front.bytes.len() {
            // Its rest goes first, whole, before anything else is written.
            let _ = front.bytes.split_to(n);
            s.partial = true;
            break;
        }
        n -= front.bytes.len();
        let counted = front.counted;
        s.queued_bytes -= counted;
        s.messages -= front.messages;
        s.partial = false;
        s.queue.pop_front();
    }
    if s.queue.is_empty() {
        // An idle connection keeps no queue allocation.
        s.queue = VecDeque::new();
    } else {
        wake(s);
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
pub(crate) mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(o: &Outbox) -> Poll<Next> {
        o.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn drains_in_order_then_ends() {
        let o = Outbox::new(3, 1 << 20, None);
        assert_eq!(poll(&o), Poll::Pending);
        for m in ["a", "b"] {
            o.push(Frame::text(m)).unwrap();
        }
        o.close(1000, "bye");
        o.push(Frame::text("after close")).unwrap();
        let batch = VecDeque::from([Frame::text("a"), Frame::text("b")].map(Queued::frame));
        assert_eq!(poll(&o), Poll::Ready(Next::Batch(batch)));
        let end = Finish::Close {
            code: 1000,
            reason: "bye".into(),
        };
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(end)));
    }

    #[test]
    fn overflow_makes_a_slow_consumer_and_drops_the_queue() {
        let o = Outbox::new(2, 1 << 20, None);
        o.push(Frame::text("1")).unwrap();
        o.push(Frame::text("2")).unwrap();
        assert_eq!(o.push(Frame::text("3")), Err(Overflow));
        assert!(o.is_empty());
        assert_eq!(
            o.push(Frame::text("4")),
            Ok(Pushed::Queued),
            "reported once"
        );
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(Finish::SlowConsumer)));
    }

    /// A run of messages joined into one entry is queued whole when all of it fits, and
    /// else exactly as its messages pushed one by one would be: what fits goes in, then
    /// the overflow, in messages and in bytes.
    #[test]
    fn a_joined_run_is_queued_whole_or_message_by_message() {
        let texts = |n: usize, len: usize| -> Vec<Frame> {
            (0..n)
                .map(|i| Frame::text(i.to_string().repeat(len)))
                .collect()
        };
        // (SendQueueMessages, SendQueueBytes, messages queued before, the run's messages,
        // each run message's bytes)
        for (max, bytes, before, run, len) in [
            (4, 1 << 20, 1, 3, 1), // fits whole
            (4, 1 << 20, 2, 3, 1), // the third overflows
            (4, 1 << 20, 0, 6, 1), // longer than the queue, into an empty queue
            (16, 10, 0, 2, 8),     // the first always fits an empty queue, the second not
            (16, 20, 1, 2, 8),     // fits whole in bytes
            (16, 20, 1, 3, 6),     // the third is over the bytes
        ] {
            let case = format!("{max} messages, {bytes} bytes, {before} queued, a run of {run}");
            let (joined, one_by_one) =
                (Outbox::new(max, bytes, None), Outbox::new(max, bytes, None));
            for o in [&joined, &one_by_one] {
                o.push(Frame::text("q")).unwrap();
                assert!(matches!(poll(o), Poll::Ready(Next::Batch(_))), "{case}");
                for frame in texts(before, 1) {
                    o.push(frame).unwrap();
                }
            }
            let frames = texts(run, len);
            let whole = Frame::join(&frames);
            assert_eq!(whole.messages(), run, "{case}");
            let expected = frames
                .into_iter()
                .map(|frame| one_by_one.push(frame))
                .find(Result::is_err)
                .unwrap_or(Ok(Pushed::Queued));
            assert_eq!(joined.push(whole).is_err(), expected.is_err(), "{case}");
            assert_eq!(joined.len(), one_by_one.len(), "{case}: messages queued");
            assert_eq!(joined.pending_bytes(), one_by_one.pending_bytes(), "{case}");
            let texts_of = |o: &Outbox| match poll(o) {
                Poll::Ready(Next::Batch(batch)) => {
                    batch.iter().flat_map(Queued::texts).collect::<Vec<_>>()
                }
                other => vec![format!("{other:?}")],
            };
            assert_eq!(texts_of(&joined), texts_of(&one_by_one), "{case}");
        }
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
        let o = Outbox::new(8, 1 << 20, None);
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
        let o = Outbox::new(100, 10, None);
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

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Count {
        fn new() -> (Arc<Self>, Waker) {
            let count = Arc::new(Count(Default::default()));
            let waker = Waker::from(Arc::clone(&count));
            (count, waker)
        }

        fn get(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// An outbox writing through to one end of a socket pair; the other end is returned.
    #[cfg(unix)]
    fn direct(max_bytes: usize) -> (Outbox, std::os::unix::net::UnixStream) {
        direct_with(100, max_bytes)
    }

    /// [`direct`], holding at most `max_messages` messages.
    #[cfg(unix)]
    pub(crate) fn direct_with(
        max_messages: usize,
        max_bytes: usize,
    ) -> (Outbox, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        (
            Outbox::new(max_messages, max_bytes, Some(Arc::new(ours))),
            theirs,
        )
    }

    /// At least `len` bytes from the peer, waiting up to 10 s for them (a writer thread may
    /// still be writing).
    #[cfg(unix)]
    pub(crate) fn read_eventually(
        peer: &mut std::os::unix::net::UnixStream,
        len: usize,
        what: &str,
    ) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = read_all(peer);
        while got.len() < len {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: never written"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            got.extend(read_all(peer));
        }
        got
    }

    /// Everything the peer can read now.
    #[cfg(unix)]
    pub(crate) fn read_all(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_idle_connection_is_written_through_without_waking_its_task() {
        let (o, mut peer) = direct(1 << 20);
        let (count, waker) = Count::new();
        let cx = &mut Context::from_waker(&waker);
        assert!(o.poll_next(cx).is_pending(), "the task waits");
        assert_eq!(o.push(Frame::text("one")), Ok(Pushed::Flush));
        assert_eq!(
            o.push(Frame::text("two")),
            Ok(Pushed::Queued),
            "the flush asked for takes it too"
        );
        o.flush();
        let mut expected = Queued::frame(Frame::text("one")).bytes.to_vec();
        expected.extend_from_slice(&Queued::frame(Frame::text("two")).bytes);
        assert_eq!(read_all(&mut peer), expected, "both in one write, in order");
        assert_eq!(count.get(), 0, "the task was not woken");
        assert!(o.is_empty());
        assert_eq!(o.pending_bytes(), 0);
        assert_eq!(o.push(Frame::text("three")), Ok(Pushed::Flush));
    }

    #[cfg(unix)]
    #[test]
    fn the_rest_of_a_frame_the_socket_did_not_take_goes_first_through_the_task() {
        let (o, mut peer) = direct(1 << 30);
        let (count, waker) = Count::new();
        let cx = &mut Context::from_waker(&waker);
        assert!(o.poll_next(cx).is_pending());
        let big = Frame::text("x".repeat(4 << 20)); // more than a socket buffer holds
        assert_eq!(o.push(big.clone()), Ok(Pushed::Flush));
        o.flush();
        let sent = read_all(&mut peer);
        assert!(
            !sent.is_empty() && sent.len() < Queued::frame(big.clone()).bytes.len(),
            "a partial write"
        );
        assert_eq!(count.get(), 1, "the task is woken for the rest");
        assert_eq!(o.pending_bytes(), big.payload_len(), "still counted");
        // The task writes a frame of its own (a pong) first: the rest goes before it.
        let rest = o.claim().expect("the rest of the frame");
        assert_eq!(
            rest.bytes,
            Queued::frame(big.clone()).bytes.slice(sent.len()..)
        );
        assert_eq!(o.push(Frame::text("later")), Ok(Pushed::Queued));
        o.flush();
        assert!(
            read_all(&mut peer).is_empty(),
            "not written through: the task writes"
        );
        assert!(!o.release(), "kept while messages wait for the task");
        let Poll::Ready(Next::Batch(batch)) = o.poll_next(cx) else {
            panic!("a batch");
        };
        assert_eq!(batch.len(), 1);
        assert!(o.release(), "handed back once nothing waits");
        assert_eq!(o.push(Frame::text("again")), Ok(Pushed::Flush));
    }

    /// A publisher's burst, dispatched before the flush it owes: the subscriber reads
    /// everything, so it must not be taken for a slow consumer, nor wait for the burst's end.
    #[cfg(unix)]
    #[test]
    fn a_burst_for_an_idle_connection_is_written_before_it_counts_as_slow() {
        let (o, mut peer) = direct_with(4, 100);
        let (count, waker) = Count::new();
        assert!(o.poll_next(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(o.push(Frame::text("0".repeat(40))), Ok(Pushed::Flush));
        for i in 1..40 {
            // Over both bounds many times over, had the flush waited.
            let pushed = o.push(Frame::text(i.to_string().repeat(40)));
            assert!(pushed.is_ok(), "message {i} taken for a slow consumer");
        }
        o.flush();
        let mut expected = Vec::new();
        for i in 0..40 {
            expected.extend_from_slice(&Queued::frame(Frame::text(i.to_string().repeat(40))).bytes);
        }
        assert_eq!(read_all(&mut peer), expected, "all of it, in order");
        assert_eq!(count.get(), 0, "and the task was never woken");
    }

    #[cfg(unix)]
    #[test]
    fn a_slow_consumer_keeps_the_rest_of_a_frame_begun() {
        let (o, mut peer) = direct(8 << 20);
        let big = Frame::text("y".repeat(4 << 20));
        let whole = Queued::frame(big.clone()).bytes;
        assert_eq!(o.push(big.clone()), Ok(Pushed::Flush));
        o.flush();
        let mut sent = read_all(&mut peer).len();
        assert!(sent < whole.len(), "a partial write");
        assert_eq!(o.push(big.clone()), Ok(Pushed::Queued));
        // Before it counts as slow, the hub writes what it owes once more (the peer read
        // what it had, so the socket takes more), then gives up.
        assert_eq!(o.push(big.clone()), Err(Overflow));
        sent += read_all(&mut peer).len();
        assert!(sent < whole.len(), "still a partial write");
        let rest = o
            .claim()
            .expect("the rest stays, for the close frame to follow");
        assert!(rest.bytes == whole.slice(sent..), "the rest, exactly");
        assert_eq!(poll(&o), Poll::Ready(Next::Finish(Finish::SlowConsumer)));
    }

    #[cfg(unix)]
    #[test]
    fn nothing_is_written_through_once_the_connection_ends() {
        let (o, mut peer) = direct(1 << 20);
        o.close(1000, "bye");
        assert_eq!(o.push(Frame::text("after")), Ok(Pushed::Queued));
        o.flush();
        let (o2, mut peer2) = direct(1 << 20);
        o2.detach();
        assert_eq!(o2.push(Frame::text("after")), Ok(Pushed::Queued));
        o2.flush();
        assert!(read_all(&mut peer).is_empty() && read_all(&mut peer2).is_empty());
    }

    #[test]
    fn a_taken_batch_counts_until_handed_over() {
        let o = Outbox::new(100, 10, None);
        o.push(Frame::text("12345678")).unwrap();
        let Poll::Ready(Next::Batch(_)) = poll(&o) else {
            panic!("a batch")
        };
        assert_eq!(o.push(Frame::text("123")), Err(Overflow));
    }
}
