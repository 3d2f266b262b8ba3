//! Churners: short-lived subscribers that come and go while a load run goes on, so that a
//! long run (a soak) also exercises the server's join and leave paths.
//!
//! Each churner connects, authenticates, subscribes to one of the publishers' channels,
//! receives for `hold` and then leaves, by one of three paths in turn:
//!
//! 1. `unsubscribe`, wait for `unsubscribed`, then a close frame (1000) and the server's
//!    close;
//! 2. a close frame (1000) and the server's close;
//! 3. a plain TCP close, with no close frame.
//!
//! Churners are counted apart from the run's subscribers, whose loss accounting they never
//! touch. A churner whose connect, login or subscription fails (or times out), or that the
//! server closes while it is present, is an error. While present, a churner checks what it
//! receives from each publisher: after the first message, every sequence number must follow
//! the one before (a gap, a duplicate or a step back is counted).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::conn::WsConn;
use crate::frame::{self, MaskGen};
use crate::message::{StampReader, channel_name, now_us};

/// Seconds a churner may take from its connect to `subscribed`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds a leaving churner waits for the server's answer (`unsubscribed`, the close).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Churners present at once, at most, per worker (a bound on open files).
const MAX_ACTIVE: usize = 5_000;

/// What the churn thread of one worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnSpec {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The hub's path.
    pub path: String,
    /// The user churners log in as.
    pub user: String,
    /// Its secret.
    pub secret: String,
    /// Churners started per second by this worker.
    pub rate: f64,
    /// How long each churner stays subscribed, in milliseconds.
    pub hold_ms: u64,
    /// Channels in the run; churner `k` takes channel `k % channels`.
    pub channels: u32,
    /// Publishers in the run.
    pub publishers: u32,
    /// This worker's number and the number of workers: churner `k` of this worker is
    /// number `k * workers + worker` overall (it picks the channel, source and leave path).
    pub worker: u32,
    /// Worker processes churning.
    pub workers: u32,
    /// Local addresses to connect from, in turn (empty: let the kernel choose).
    pub sources: Vec<std::net::IpAddr>,
}

/// Churn counters (running, and at the end).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnCounts {
    /// Connects started.
    pub started: u64,
    /// Churners that got as far as `subscribed`.
    pub subscribed: u64,
    /// Churners whose connect, upgrade, login or subscription failed or timed out.
    pub failed: u64,
    /// Churners the server closed while they were subscribed (or leaving, before the
    /// expected answer).
    pub dropped: u64,
    /// Churners that left, per path: `unsubscribe` then close, close, TCP close.
    pub left: [u64; 3],
    /// Leaves that got no answer from the server within the timeout.
    pub leave_timeouts: u64,
    /// Churners present now (connecting, subscribed or leaving).
    pub active: u64,
    /// Stamped messages churners received.
    pub delivered: u64,
    /// Messages missing between two that a churner received from one publisher.
    pub gaps: u64,
    /// Messages a churner received twice or after a later one.
    pub out_of_order: u64,
}

impl ChurnCounts {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ChurnCounts) {
        self.started += other.started;
        self.subscribed += other.subscribed;
        self.failed += other.failed;
        self.dropped += other.dropped;
        for (a, b) in self.left.iter_mut().zip(other.left) {
            *a += b;
        }
        self.leave_timeouts += other.leave_timeouts;
        self.active += other.active;
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.out_of_order += other.out_of_order;
    }
}

/// What the churn thread shares with its worker.
#[derive(Debug, Default)]
pub struct ChurnShared {
    /// Start churners (set by the parent's command).
    pub on: AtomicBool,
    /// Start no more churners; the present ones leave on their schedule.
    pub off: AtomicBool,
    /// Stop at once (the worker is ending).
    pub stop: AtomicBool,
    /// The counters so far.
    pub counts: Mutex<ChurnCounts>,
    /// The first few errors.
    pub errors: Mutex<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Authenticated,
    Subscribed,
    Present,
    /// Sent `unsubscribe`, waiting for `unsubscribed`.
    Unsubscribing,
    /// Sent a close frame, waiting for the server's close.
    Closing,
}

#[derive(Debug)]
struct Churner {
    conn: WsConn,
    state: State,
}

#[derive(Debug)]
struct State {
    number: u64,
    stage: Stage,
    /// Setup deadline, then the time to leave, then the leave deadline.
    deadline: Instant,
    /// Per publisher: the next sequence number expected, once one was seen.
    next: Vec<Option<u64>>,
}

impl State {
    fn leave_path(&self) -> usize {
        (self.number % 3) as usize
    }
}

fn error(errors: &mut Vec<String>, why: String) {
    if errors.len() < 10 {
        errors.push(why);
    }
}

fn text_frame(out: &mut Vec<u8>, json: &serde_json::Value, masks: &mut MaskGen) {
    frame::encode_masked(
        out,
        frame::OP_TEXT,
        json.to_string().as_bytes(),
        masks.next_mask(),
    );
}

fn close_frame(masks: &mut MaskGen) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_masked(
        &mut out,
        frame::OP_CLOSE,
        &1000u16.to_be_bytes(),
        masks.next_mask(),
    );
    out
}

/// What a text message did to a churner.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    /// The setup moved on to `Present`.
    Subscribed,
    /// `unsubscribed` arrived: close now.
    Unsubscribed,
    /// Something unexpected.
    Bad(String),
}

fn on_text(c: &mut State, counts: &mut ChurnCounts, reader: &StampReader, text: &[u8]) -> Seen {
    let expect: &[u8] = match c.stage {
        Stage::Greeting => br#"{"connected""#,
        Stage::Authenticated => br#"{"authenticated""#,
        Stage::Subscribed => br#"{"subscribed""#,
        Stage::Present | Stage::Unsubscribing | Stage::Closing => {
            if let Some(stamp) = reader.read(text) {
                counts.delivered += 1;
                match c.next.get_mut(stamp.publisher as usize) {
                    Some(next) => {
                        match *next {
                            Some(n) if stamp.seq < n => counts.out_of_order += 1,
                            Some(n) => counts.gaps += stamp.seq - n,
                            None => {}
                        }
                        if next.is_none_or(|n| stamp.seq >= n) {
                            *next = Some(stamp.seq + 1);
                        }
                    }
                    None => return Seen::Bad("a message from an unknown publisher".into()),
                }
                return Seen::Nothing;
            }
            if c.stage == Stage::Unsubscribing && text.starts_with(br#"{"unsubscribed""#) {
                return Seen::Unsubscribed;
            }
            return Seen::Bad(format!(
                "unexpected message: {}",
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ));
        }
    };
    if !text.starts_with(expect) {
        return Seen::Bad(format!(
            "setup: expected {} got {}",
            String::from_utf8_lossy(expect),
            String::from_utf8_lossy(&text[..text.len().min(200)])
        ));
    }
    c.stage = match c.stage {
        Stage::Greeting => Stage::Authenticated,
        Stage::Authenticated => Stage::Subscribed,
        _ => Stage::Present,
    };
    if c.stage == Stage::Present {
        Seen::Subscribed
    } else {
        Seen::Nothing
    }
}

/// Runs the churn of one worker until `shared.stop`, or until churn was switched off and
/// every churner has left. Returns the final counters.
pub fn run(spec: &ChurnSpec, shared: &ChurnShared) -> ChurnCounts {
    let mut counts = ChurnCounts::default();
    let mut errors: Vec<String> = Vec::new();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            error(&mut errors, format!("churn: epoll: {e}"));
            *shared.errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
            return counts;
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut masks = MaskGen::new(now_us() ^ (u64::from(spec.worker) << 40) ^ 0x5eed);
    let reader = StampReader::default();
    let mut slots: Vec<Option<Churner>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut started_at: Option<Instant> = None;
    let publish = |counts: &ChurnCounts, errors: &[String]| {
        *shared.counts.lock().unwrap_or_else(|e| e.into_inner()) = *counts;
        let mut e = shared.errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() != errors.len() {
            *e = errors.to_vec();
        }
    };
    let hold = Duration::from_millis(spec.hold_ms);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let off = shared.off.load(Ordering::Relaxed);
        if off && counts.active == 0 {
            break;
        }
        let now = Instant::now();
        // Start the churners due by now.
        if shared.on.load(Ordering::Relaxed) && !off && spec.rate > 0.0 {
            let since = *started_at.get_or_insert(now);
            let due = (now.duration_since(since).as_secs_f64() * spec.rate) as u64 + 1;
            while counts.started < due {
                let number =
                    counts.started * u64::from(spec.workers.max(1)) + u64::from(spec.worker);
                counts.started += 1;
                if counts.active as usize >= MAX_ACTIVE {
                    counts.failed += 1;
                    error(
                        &mut errors,
                        format!("churn: {MAX_ACTIVE} churners present at once; not starting more"),
                    );
                    continue;
                }
                let source = (!spec.sources.is_empty())
                    .then(|| spec.sources[number as usize % spec.sources.len()]);
                let slot = free.pop().unwrap_or_else(|| {
                    slots.push(None);
                    slots.len() - 1
                });
                let conn = WsConn::connect(spec.addr, source, &spec.host, &spec.path, None)
                    .and_then(|mut conn| {
                        poll.registry().register(
                            &mut conn.stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        Ok(conn)
                    });
                match conn {
                    Ok(conn) => {
                        counts.active += 1;
                        slots[slot] = Some(Churner {
                            conn,
                            state: State {
                                number,
                                stage: Stage::Greeting,
                                deadline: now + SETUP_TIMEOUT,
                                next: vec![None; spec.publishers.max(1) as usize],
                            },
                        });
                    }
                    Err(e) => {
                        free.push(slot);
                        counts.failed += 1;
                        error(&mut errors, format!("churn: connect: {e}"));
                    }
                }
            }
        }

        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            error(&mut errors, format!("churn: epoll: {e}"));
            break;
        }
        let now = Instant::now();
        let mut ended: Vec<usize> = Vec::new();
        for event in &events {
            let slot = event.token().0;
            let Some(Some(Churner { conn, state: c })) = slots.get_mut(slot) else {
                continue;
            };
            let mut seen = Vec::new();
            let progress = conn.on_event(&mut buf, &mut masks, |text| {
                let s = on_text(c, &mut counts, &reader, text);
                if s != Seen::Nothing {
                    seen.push(s);
                }
            });
            if progress.opened {
                let mut out = Vec::new();
                let channel = channel_name((c.number % u64::from(spec.channels.max(1))) as u32);
                text_frame(
                    &mut out,
                    &serde_json::json!({"authenticate": {"user": spec.user, "secret": spec.secret}}),
                    &mut masks,
                );
                text_frame(
                    &mut out,
                    &serde_json::json!({"subscribe": {"channel": channel}}),
                    &mut masks,
                );
                if let Err(e) = conn.send_raw(&out) {
                    counts.failed += 1;
                    error(&mut errors, format!("churn: write: {e}"));
                    ended.push(slot);
                    continue;
                }
            }
            let mut done = false;
            for s in seen {
                match s {
                    Seen::Nothing => {}
                    Seen::Subscribed => {
                        counts.subscribed += 1;
                        c.deadline = now + hold;
                    }
                    Seen::Unsubscribed => {
                        c.stage = Stage::Closing;
                        c.deadline = now + LEAVE_TIMEOUT;
                        if let Err(e) = conn.send_raw(&close_frame(&mut masks)) {
                            counts.dropped += 1;
                            error(&mut errors, format!("churn: write close: {e}"));
                            done = true;
                        }
                    }
                    Seen::Bad(why) => {
                        if matches!(
                            c.stage,
                            Stage::Greeting | Stage::Authenticated | Stage::Subscribed
                        ) {
                            counts.failed += 1;
                        } else {
                            counts.dropped += 1;
                        }
                        error(&mut errors, format!("churn: {why}"));
                        done = true;
                    }
                }
                if done {
                    break;
                }
            }
            if !done && let Some(why) = progress.closed {
                match c.stage {
                    // The server's close answers ours: a clean leave.
                    Stage::Closing
                        if matches!(conn.close_code, None | Some(1000))
                            && why.contains("closed by server") =>
                    {
                        counts.left[c.leave_path()] += 1;
                    }
                    Stage::Greeting | Stage::Authenticated | Stage::Subscribed => {
                        counts.failed += 1;
                        error(&mut errors, format!("churn: setup: {why}"));
                    }
                    _ => {
                        counts.dropped += 1;
                        error(&mut errors, format!("churn: closed while present: {why}"));
                    }
                }
                done = true;
            }
            if done {
                ended.push(slot);
            }
        }
        // Deadlines: setups that took too long, churners due to leave, leaves unanswered.
        for (slot, churner) in slots.iter_mut().enumerate() {
            let Some(Churner { conn, state: c }) = churner else {
                continue;
            };
            if now < c.deadline || ended.contains(&slot) {
                continue;
            }
            match c.stage {
                Stage::Greeting | Stage::Authenticated | Stage::Subscribed => {
                    counts.failed += 1;
                    error(
                        &mut errors,
                        format!("churn: setup took over {SETUP_TIMEOUT:?} ({:?})", c.stage),
                    );
                    ended.push(slot);
                }
                Stage::Present => {
                    c.deadline = now + LEAVE_TIMEOUT;
                    let sent = match c.leave_path() {
                        0 => {
                            c.stage = Stage::Unsubscribing;
                            let mut out = Vec::new();
                            let channel =
                                channel_name((c.number % u64::from(spec.channels.max(1))) as u32);
                            text_frame(
                                &mut out,
                                &serde_json::json!({"unsubscribe": {"channel": channel}}),
                                &mut masks,
                            );
                            conn.send_raw(&out)
                        }
                        1 => {
                            c.stage = Stage::Closing;
                            conn.send_raw(&close_frame(&mut masks))
                        }
                        _ => {
                            // A plain TCP close: dropping the socket sends a FIN.
                            counts.left[2] += 1;
                            ended.push(slot);
                            Ok(())
                        }
                    };
                    if let Err(e) = sent {
                        counts.dropped += 1;
                        error(&mut errors, format!("churn: write: {e}"));
                        ended.push(slot);
                    }
                }
                Stage::Unsubscribing | Stage::Closing => {
                    counts.leave_timeouts += 1;
                    error(
                        &mut errors,
                        format!(
                            "churn: no answer to the leave within {LEAVE_TIMEOUT:?} ({:?})",
                            c.stage
                        ),
                    );
                    ended.push(slot);
                }
            }
        }
        ended.sort_unstable();
        ended.dedup();
        for slot in ended {
            if let Some(mut c) = slots[slot].take() {
                let _ = poll.registry().deregister(&mut c.conn.stream);
                counts.active -= 1;
                free.push(slot);
            }
        }
        publish(&counts, &errors);
    }
    // Stopped with churners present: they are cut short, which is no error of the server.
    for c in slots.iter_mut().flatten() {
        let _ = poll.registry().deregister(&mut c.conn.stream);
    }
    counts.active = 0;
    publish(&counts, &errors);
    counts
}
