//! What a connection writes, and the socket wrapper that writes it.
//!
//! A server's WebSocket frame is not masked, so its bytes (header and payload) are the same
//! for every recipient. The hub frames a broadcast once ([`Frame`]) and queues the shared
//! bytes to each subscriber (a run of broadcasts to the same subscribers is joined once,
//! [`Frame::join`], and queued to each as one entry); the connection's driver hands them
//! to its [`Wire`], which writes whatever is queued with one system call, without framing
//! per recipient: small frames copied together into the writing thread's buffer (one
//! slice, which the kernel copies faster than many small ones), a large frame straight
//! from the shared bytes ([`gather`]). Under TLS the shared bytes are encrypted per
//! recipient, but still framed once.
//!
//! tungstenite keeps the read side (unmasking, UTF-8, control frames) and writes its own
//! control frames (pongs, close) through the same [`Wire`], which accepts each of its
//! writes whole or not at all, so that frames never interleave.
//!
//! Memory: frames leave the queue as they are written, and the queue's allocation with its
//! last frame, so a connection holds write memory only while something is unwritten (a
//! WebSocket library's write buffer, by contrast, keeps the largest size it ever reached).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::io::{AsyncRead, AsyncWrite};
use rocket_proto::Payload;
use tungstenite::protocol::frame::Frame as WsFrame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::outbox::Outbox;

/// One complete, unmasked WebSocket frame as it goes on the wire, or several in a row
/// ([`Frame::join`]). Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    bytes: Bytes,
    /// Bytes of its messages, without the frame headers (what `SendQueueBytes` counts).
    counted: usize,
    /// Messages in it (what `SendQueueMessages` counts).
    messages: usize,
}

impl Frame {
    /// The frame of a protocol payload: a text frame for a text payload, else binary.
    pub(crate) fn message(payload: &Payload) -> Self {
        let opcode = if payload.is_text() {
            Data::Text
        } else {
            Data::Binary
        };
        Self::format(WsFrame::message(
            payload.bytes().clone(),
            OpCode::Data(opcode),
            true,
        ))
    }

    /// A ping with no payload.
    pub(crate) fn ping() -> Self {
        Self::format(WsFrame::ping(Bytes::new()))
    }

    /// `frames` one after the other, as one: a run of broadcasts to the same recipients is
    /// joined once and queued to each of them as one entry (`hub.rs`, `Run`).
    pub(crate) fn join(frames: &[Frame]) -> Self {
        if let [one] = frames {
            return one.clone();
        }
        let mut bytes = Vec::with_capacity(frames.iter().map(|f| f.bytes.len()).sum());
        for frame in frames {
            bytes.extend_from_slice(&frame.bytes);
        }
        Self {
            bytes: bytes.into(),
            counted: frames.iter().map(|f| f.counted).sum(),
            messages: frames.iter().map(|f| f.messages).sum(),
        }
    }

    /// The frames of a joined frame, one by one, sharing its bytes (a single frame: itself).
    pub(crate) fn split(&self) -> impl Iterator<Item = Frame> + use<> {
        let mut rest = self.bytes.clone();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // The hub framed these: an unmasked header (RFC 6455, 5.2), then the payload.
            let (header, len) = match rest[1] & 0x7f {
                126 => (4, u64::from(u16::from_be_bytes([rest[2], rest[3]]))),
                127 => (
                    10,
                    u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")),
                ),
                short => (2, u64::from(short)),
            };
            let len = usize::try_from(len).expect("a frame the hub made fits in memory");
            Some(Frame {
                bytes: rest.split_to(header + len),
                counted: len,
                messages: 1,
            })
        })
    }

    /// A text frame, for tests.
    #[cfg(test)]
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self::format(WsFrame::message(
            text.into(),
            OpCode::Data(Data::Text),
            true,
        ))
    }

    /// The payload of a single data frame as text, for tests.
    #[cfg(test)]
    pub(crate) fn to_text(&self) -> String {
        let [text] = <[String; 1]>::try_from(texts(&self.bytes)).expect("one frame");
        text
    }

    fn format(frame: WsFrame) -> Self {
        let mut bytes = Vec::with_capacity(frame.len());
        // Writing to a vector cannot fail.
        frame.format(&mut bytes).expect("framing into memory");
        // An unmasked server frame's header is 2 bytes, with 2 or 8 more for a 16- or
        // 64-bit length (RFC 6455, 5.2).
        let header = match bytes[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        Self {
            counted: bytes.len() - header,
            bytes: bytes.into(),
            messages: 1,
        }
    }

    /// Bytes on the wire, headers included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of the messages, without the frame headers (what `SendQueueBytes` counts).
    pub(crate) fn payload_len(&self) -> usize {
        self.counted
    }

    /// Messages in it: one, or those of a run joined together.
    pub(crate) fn messages(&self) -> usize {
        self.messages
    }
}

/// The payloads of the whole, unmasked, final text frames `bytes` holds, in order, for
/// tests.
#[cfg(test)]
pub(crate) fn texts(bytes: &[u8]) -> Vec<String> {
    let mut cursor = io::Cursor::new(bytes);
    let mut texts = Vec::new();
    while (cursor.position() as usize) < bytes.len() {
        let (header, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cursor)
            .expect("a well-formed frame")
            .expect("a complete header");
        assert!(header.is_final && header.mask.is_none());
        let start = cursor.position() as usize;
        let end = start + len as usize;
        assert!(end <= bytes.len(), "whole frames");
        texts.push(String::from_utf8(bytes[start..end].to_vec()).expect("a text payload"));
        cursor.set_position(end as u64);
    }
    texts
}

/// How many frames one vectored write takes at most (Linux's `IOV_MAX` is 1,024; beyond a
/// few dozen small frames a write is already as large as a socket buffer takes at once).
pub(crate) const MAX_SLICES: usize = 64;

/// How many bytes of frames [`gather`] copies into one slice for a write, at most.
pub(crate) const JOIN_MAX: usize = 16 * 1024;

thread_local! {
    /// The thread's buffer for [`gather`]: it holds a write's frames only while the write
    /// is made, so one per thread serves every connection (no connection keeps one).
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `write` with the bytes of the first `frames` of a queue as one write, in order.
///
/// Several small frames (a broadcast's is its payload and a few bytes of header) are
/// copied into one slice, up to [`JOIN_MAX`] bytes: the kernel copies each slice of a
/// vectored write on its own, at a cost per slice above the cost of copying a small frame
/// here (flat out, about 40 frames of 100 bytes per write, the kernel's copy was 9.5 % of
/// the server's CPU with a slice per frame, 3.1 % joined, and the copy here 3.5 %). A lone
/// frame, or a first frame too large to join with the next, goes as it is, with those
/// after it, up to [`MAX_SLICES`] slices; so do all of them unless `join` (a TLS stream
/// copies every slice into its records itself).
pub(crate) fn gather<'a, R>(
    frames: impl Iterator<Item = &'a [u8]> + Clone,
    join: bool,
    write: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> R {
    let mut firsts = frames.clone();
    let join = join
        && match (firsts.next(), firsts.next()) {
            (Some(first), Some(second)) => first.len() + second.len() <= JOIN_MAX,
            _ => false,
        };
    JOINED.with(|joined| {
        // Not taken unless `write` gathered again on this thread (it never does).
        if let Some(mut joined) = joined.try_borrow_mut().ok().filter(|_| join) {
            for frame in frames.clone() {
                if joined.len() + frame.len() > JOIN_MAX {
                    break;
                }
                joined.extend_from_slice(frame);
            }
            if !joined.is_empty() {
                let result = write(&[IoSlice::new(&joined)]);
                joined.clear();
                return result;
            }
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (slice, frame) in slices.iter_mut().zip(frames) {
            *slice = IoSlice::new(frame);
            count += 1;
        }
        write(&slices[..count])
    })
}

/// A connection's socket as the server writes to it: `Frame`s (pre-framed messages) queued
/// by the driver, written in order, as many as one write takes (small ones joined), and a
/// count of the bytes written (which tells a slow write from a stalled one,
/// `WriteTimeoutMs`).
///
/// As a `futures` IO stream (for the HTTP front, and for tungstenite's own frames), it
/// writes after what is queued: a write waits until the queue is out, then is accepted
/// whole (what the socket did not take is queued).
#[derive(Debug)]
pub struct Wire<S> {
    inner: S,
    queue: VecDeque<Queued>,
    /// Bytes of the queue's first frame already written.
    offset: usize,
    /// Bytes were written since the last flush of `inner` (a TLS stream holds records
    /// until flushed).
    unflushed: bool,
    written: u64,
    /// Message bytes (`SendQueueBytes`' measure) of the frames written whole since
    /// [`Wire::take_released`] last took them.
    released: usize,
    /// The connection's outbox, when the hub may write to the socket too: every write
    /// here claims the socket from it first (see `outbox.rs`).
    gate: Option<Arc<Outbox>>,
    /// The socket is claimed: only this side writes until [`Wire::release`].
    claimed: bool,
}

/// Bytes to write: a frame from the send queue (or its rest, when a write-through took only
/// part of it), or what the socket did not take of a write from tungstenite.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) bytes: Bytes,
    /// Its message bytes counted against `SendQueueBytes` (0 for tungstenite's).
    pub(crate) counted: usize,
    /// Its messages counted against `SendQueueMessages` (0 for tungstenite's).
    pub(crate) messages: usize,
}

impl Queued {
    /// A whole frame from the send queue.
    pub(crate) fn frame(frame: Frame) -> Self {
        Self {
            counted: frame.counted,
            messages: frame.messages,
            bytes: frame.bytes,
        }
    }

    /// The payloads of its whole data frames as text, for tests.
    #[cfg(test)]
    pub(crate) fn texts(&self) -> Vec<String> {
        texts(&self.bytes)
    }
}

impl<S> Wire<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            queue: VecDeque::new(),
            offset: 0,
            unflushed: false,
            written: 0,
            released: 0,
            gate: None,
            claimed: false,
        }
    }

    /// Shares the socket's write side with the hub through `outbox` (its connection's,
    /// which writes through while this side does not write).
    pub(crate) fn share(&mut self, outbox: Arc<Outbox>) {
        self.gate = Some(outbox);
    }

    /// About to write: takes the socket over from the hub, and the rest of a frame it
    /// wrote in part, which goes first.
    fn claim(&mut self) {
        if self.claimed {
            return;
        }
        if let Some(gate) = &self.gate {
            self.claimed = true;
            if let Some(rest) = gate.claim() {
                self.queue.push_front(rest);
            }
        }
    }

    /// Hands the socket back to the hub once everything is written (no-op otherwise).
    pub(crate) fn release(&mut self) {
        if self.claimed
            && !self.is_sending()
            && self.gate.as_ref().is_some_and(|gate| gate.release())
        {
            self.claimed = false;
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes written to the socket so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Whether queued bytes are not yet written, or written and not yet flushed.
    pub(crate) fn is_sending(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Queues `frames` (a batch from the send queue) after what is queued. Nothing is
    /// written until [`Wire::poll_send`]. Into an empty queue (the common case) the batch
    /// moves whole, its allocation with it, instead of being copied entry by entry.
    pub(crate) fn queue(&mut self, mut frames: VecDeque<Queued>) {
        if self.queue.is_empty() {
            std::mem::swap(&mut self.queue, &mut frames);
        }
        self.queue.append(&mut frames);
    }

    /// Queues one frame.
    pub(crate) fn push(&mut self, frame: Frame) {
        self.queue.push_back(Queued::frame(frame));
    }

    /// The message bytes of the queued frames written whole since the last call: they no
    /// longer count against `SendQueueBytes`.
    pub(crate) fn take_released(&mut self) -> usize {
        std::mem::take(&mut self.released)
    }

    /// Drops what is queued and not yet begun (a frame partly written is finished first,
    /// so that a close frame can still follow it).
    pub(crate) fn discard(&mut self) {
        let started = (self.offset > 0).then(|| self.queue.pop_front()).flatten();
        self.queue = started.into_iter().collect();
    }

    fn record(&mut self, mut n: usize) {
        self.written += n as u64;
        self.unflushed |= n > 0;
        while n > 0 {
            let front = self.queue.front().expect("written bytes were queued");
            let left = front.bytes.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.released += front.counted;
            self.queue.pop_front();
        }
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Writes what is queued, then flushes: `Ready` once everything is written, `Pending`
    /// (to be woken when the socket takes more) otherwise.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.queue.is_empty() {
            self.claim();
        }
        while !self.queue.is_empty() {
            let Self {
                inner,
                queue,
                offset,
                gate,
                ..
            } = &mut *self;
            // A plain socket (shared with the hub) takes joined frames; a TLS stream
            // copies them into its records.
            let join = gate.is_some();
            let frames = queue.iter().enumerate().map(|(i, queued)| {
                let skip = if i == 0 { *offset } else { 0 };
                &queued.bytes[skip..]
            });
            let n = ready!(gather(frames, join, |slices| {
                Pin::new(&mut *inner).poll_write_vectored(cx, slices)
            }))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.record(n);
        }
        // An idle connection keeps no queue allocation.
        self.queue = VecDeque::new();
        if self.unflushed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.claim();
        if !this.queue.is_empty() {
            ready!(this.poll_send(cx))?;
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.written += n as u64;
        this.unflushed |= n > 0;
        if n < buf.len() {
            // Accepted whole: a caller's frame is never split by frames queued after it.
            this.queue.push_back(Queued {
                bytes: Bytes::copy_from_slice(&buf[n..]),
                counted: 0,
                messages: 0,
            });
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes at most `room` bytes per write, and `budget` bytes in all
    /// before it blocks.
    #[derive(Default)]
    struct Socket {
        out: Vec<u8>,
        room: usize,
        budget: usize,
        flushes: usize,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room).min(self.budget);
            if n == 0 {
                return Poll::Pending;
            }
            self.budget -= n;
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.as_mut().poll_write(cx, &joined)
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn wire(room: usize, budget: usize) -> Wire<Socket> {
        Wire::new(Socket {
            room,
            budget,
            ..Socket::default()
        })
    }

    fn frames(texts: &[&str]) -> Vec<u8> {
        texts
            .iter()
            .flat_map(|t| Frame::text(*t).bytes.to_vec())
            .collect()
    }

    /// What `gather` hands its write: the slices' bytes, each slice copied out.
    fn gathered(queue: &[Bytes]) -> Vec<Vec<u8>> {
        gather(queue.iter().map(|b| &b[..]), true, |slices| {
            slices.iter().map(|s| s.to_vec()).collect()
        })
    }

    /// A joined run splits back into its frames, whatever their header's length field
    /// (7, 16 and 64 bits), and counts their messages and bytes.
    #[test]
    fn a_joined_run_splits_back_into_its_frames() {
        let frames: Vec<Frame> = [5, 200, 70_000, 0]
            .iter()
            .map(|&n| Frame::text("x".repeat(n)))
            .collect();
        let joined = Frame::join(&frames);
        assert_eq!(joined.messages(), 4);
        assert_eq!(joined.payload_len(), 70_205);
        assert_eq!(joined.len(), frames.iter().map(Frame::len).sum::<usize>());
        assert_eq!(joined.split().collect::<Vec<_>>(), frames);
        assert_eq!(
            Frame::join(&frames[..1]),
            frames[0],
            "one frame stays itself"
        );
        assert_eq!(frames[1].split().collect::<Vec<_>>(), [frames[1].clone()]);
    }

    #[test]
    fn small_frames_are_joined_into_one_slice_up_to_the_limit() {
        let small = Frame::text("x".repeat(100)).bytes;
        let fit = JOIN_MAX / small.len();
        let queue = vec![small.clone(); fit + 3];
        assert_eq!(gathered(&queue), [small.repeat(fit)], "in order, what fits");
        // The thread's buffer is empty again for the next write.
        assert_eq!(gathered(&queue[..2]), [small.repeat(2)]);
        gather(queue.iter().map(|b| &b[..]), false, |slices| {
            assert_eq!(slices.len(), MAX_SLICES, "not joined: a slice per frame");
        });
        gather([&small[..]].into_iter(), true, |slices| {
            assert_eq!(slices.len(), 1);
            assert_eq!(
                slices[0].as_ptr(),
                small.as_ptr(),
                "a lone frame is not copied"
            );
        });
    }

    #[test]
    fn a_large_frame_goes_as_it_is_first_and_waits_for_the_next_write_after_small_ones() {
        let large = Frame::text("y".repeat(JOIN_MAX)).bytes;
        let small = Frame::text("z").bytes;
        let queue = [large.clone(), small.clone(), small.clone(), large.clone()];
        gather(queue.iter().map(|b| &b[..]), true, |slices| {
            assert_eq!(slices.len(), 4, "one slice per frame");
            assert_eq!(slices[0].as_ptr(), large.as_ptr(), "not copied");
            assert_eq!(&*slices[1], &small[..]);
        });
        assert_eq!(gathered(&queue[1..]), [small.repeat(2)], "the small ones");
        let many = vec![large.clone(); MAX_SLICES + 1];
        assert_eq!(gathered(&many).len(), MAX_SLICES);
    }

    #[test]
    fn frames_go_out_in_order_through_partial_writes_then_the_queue_is_freed() {
        let mut w = wire(7, 1000);
        w.queue(
            ["hello", "world", "!"]
                .map(|t| Queued::frame(Frame::text(t)))
                .into(),
        );
        assert!(w.poll_send(&mut cx()).is_ready());
        assert_eq!(w.inner.out, frames(&["hello", "world", "!"]));
        assert_eq!(w.written(), w.inner.out.len() as u64);
        assert!(!w.is_sending());
        assert_eq!(w.queue.capacity(), 0, "no allocation kept");
        assert_eq!(w.inner.flushes, 1);
    }

    #[test]
    fn joined_frames_go_out_in_order_through_partial_writes() {
        let mut w = wire(7, 1000);
        // Shared with its outbox: a plain socket, whose writes join small frames.
        w.share(Arc::new(Outbox::new(100, 1 << 20, None)));
        w.queue(
            ["hello", "world", "!"]
                .map(|t| Queued::frame(Frame::text(t)))
                .into(),
        );
        assert!(w.poll_send(&mut cx()).is_ready());
        assert_eq!(w.inner.out, frames(&["hello", "world", "!"]));
        assert_eq!(w.take_released(), 11, "every frame counted once, whole");
        assert!(!w.is_sending());
    }

    #[test]
    fn a_blocked_socket_keeps_the_rest_and_counts_what_left() {
        let mut w = wire(100, 9);
        w.queue(
            ["hello", "world"]
                .map(|t| Queued::frame(Frame::text(t)))
                .into(),
        );
        assert!(w.poll_send(&mut cx()).is_pending());
        assert!(w.is_sending());
        assert_eq!(w.written(), 9);
        assert_eq!(w.take_released(), 5, "the first frame is out, whole");
        w.inner.budget = 1000;
        w.push(Frame::ping());
        assert!(w.poll_send(&mut cx()).is_ready());
        assert_eq!(
            w.take_released(),
            5,
            "then the second (a ping counts nothing)"
        );
        assert_eq!(w.take_released(), 0);
        let mut out = frames(&["hello", "world"]);
        out.extend_from_slice(&Frame::ping().bytes);
        assert_eq!(w.inner.out, out);
    }

    #[test]
    fn a_write_from_tungstenite_waits_for_the_queue_and_is_taken_whole() {
        let mut w = wire(4, 6);
        w.push(Frame::text("queued"));
        let close = Frame::text("close frame").bytes;
        let mut wp = Pin::new(&mut w);
        assert!(wp.as_mut().poll_write(&mut cx(), &close).is_pending());
        wp.inner.budget = 100;
        let taken = wp.as_mut().poll_write(&mut cx(), &close);
        assert!(
            matches!(taken, Poll::Ready(Ok(n)) if n == close.len()),
            "whole"
        );
        // Whatever the socket did not take is queued after the frames before it.
        wp.push(Frame::text("later"));
        assert!(wp.as_mut().poll_flush(&mut cx()).is_ready());
        assert_eq!(w.inner.out, frames(&["queued", "close frame", "later"]));
    }

    /// The hub wrote part of a broadcast straight to the socket; the task's next frame (a
    /// pong) waits for the rest, which it writes first.
    #[cfg(unix)]
    #[test]
    fn a_frame_of_its_own_waits_for_the_rest_of_a_broadcast() {
        use std::io::Read;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let outbox = Arc::new(Outbox::new(100, 1 << 30, Some(Arc::new(ours))));
        let big = Frame::text("b".repeat(4 << 20)); // more than a socket buffer holds
        assert_eq!(outbox.push(big.clone()), Ok(crate::outbox::Pushed::Flush));
        outbox.flush();
        let mut sent = Vec::new();
        let _ = theirs.read_to_end(&mut sent); // WouldBlock once drained
        assert!(
            !sent.is_empty() && sent.len() < big.bytes.len(),
            "a partial write"
        );
        // The task's own socket handle here is the test socket, which takes everything.
        let mut w = wire(usize::MAX, usize::MAX);
        w.share(Arc::clone(&outbox));
        let pong = [0x8a, 0x00];
        let mut wp = Pin::new(&mut w);
        assert!(matches!(
            wp.as_mut().poll_write(&mut cx(), &pong),
            Poll::Ready(Ok(2))
        ));
        assert!(wp.as_mut().poll_flush(&mut cx()).is_ready());
        let mut expected = big.bytes[sent.len()..].to_vec();
        expected.extend_from_slice(&pong);
        assert!(
            w.inner.out == expected,
            "the rest of the broadcast, then the pong"
        );
        assert_eq!(
            outbox.push(Frame::text("next")),
            Ok(crate::outbox::Pushed::Queued),
            "the task owns the socket until it hands it back"
        );
    }

    #[test]
    fn discard_finishes_a_frame_begun() {
        let mut w = wire(3, 3);
        w.queue(
            ["begun", "never"]
                .map(|t| Queued::frame(Frame::text(t)))
                .into(),
        );
        assert!(w.poll_send(&mut cx()).is_pending());
        w.discard();
        w.inner.budget = 100;
        assert!(w.poll_send(&mut cx()).is_ready());
        assert_eq!(w.inner.out, frames(&["begun"]));
        let mut untouched = wire(3, 0);
        untouched.queue(["a", "b"].map(|t| Queued::frame(Frame::text(t))).into());
        untouched.discard();
        assert!(!untouched.is_sending());
    }

    #[test]
    fn frames_match_tungstenites_encoding() {
        let payload = "x".repeat(300);
        let frame = Frame::text(payload.clone());
        assert_eq!(frame.to_text(), payload);
        assert_eq!(frame.len(), 4 + 300, "a 16-bit length header");
        for len in [0, 125, 126, 65_535, 65_536] {
            assert_eq!(Frame::text("y".repeat(len)).payload_len(), len);
        }
        assert_eq!(Frame::ping().bytes.as_ref(), [0x89, 0x00]);
    }
}
