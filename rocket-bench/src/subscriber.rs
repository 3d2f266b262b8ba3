//! The subscriber side, run in worker processes: each thread holds a share of the
//! connections on one edge-triggered mio loop, logs them in, subscribes them, and then
//! counts what arrives (sequence checks and latency) without a JSON parser.
//!
//! A worker talks to its parent through its standard streams: one JSON [`WorkerMsg`] per
//! line on stdout, one JSON [`Command`] per line on stdin.

use std::io::{BufRead, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::churn::{ChurnCounts, ChurnShared, ChurnSpec};
use crate::conn::WsConn;
use crate::frame::MaskGen;
use crate::message::{StampReader, channel_name, now_us};
use crate::stats::{Buckets, Latency, SeqCounts, SeqTracker};
use crate::tls::TlsClient;

/// A server's hub: where a subscriber connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The hub's path.
    pub path: String,
    /// `wss://` (the worker's `ca` says whom to trust).
    #[serde(default)]
    pub tls: bool,
}

/// What one worker process is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The servers (the nodes of a cluster, or one server): subscriber `i` connects to
    /// `targets[i % targets.len()]`.
    pub targets: Vec<Endpoint>,
    /// The user subscribers log in as.
    pub user: String,
    /// Its secret.
    pub secret: String,
    /// Global index of this worker's first subscriber.
    pub first: u32,
    /// How many subscribers this worker holds.
    pub count: u32,
    /// Channels in the run; subscriber `i` takes channel `i % channels`.
    pub channels: u32,
    /// Publishers in the run (sizes the per-publisher sequence trackers).
    pub publishers: u32,
    /// Threads (each with its own mio loop).
    pub threads: u32,
    /// Connections in the middle of their setup at once, per thread.
    pub concurrency: u32,
    /// Local addresses to connect from, in turn (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Churners to run beside the subscribers, if any (started by [`Command::Churn`]).
    #[serde(default)]
    pub churn: Option<ChurnSpec>,
    /// `wss://`: the PEM file of the certificates to trust (`--ca`); `None` for `ws://`.
    pub ca: Option<PathBuf>,
}

/// A line a worker writes to its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Counters so far (sent every 20 ms).
    Progress(WorkerProgress),
    /// The totals, after a [`Command::Stop`].
    Final(WorkerFinal),
}

/// A worker's running counters.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Stamped messages received.
    pub delivered: u64,
    /// Stamped messages received, per target (by subscribers of `targets[k]`).
    #[serde(default)]
    pub delivered_per_target: Vec<u64>,
    /// Of those, messages received a second time, per target.
    #[serde(default)]
    pub duplicated_per_target: Vec<u64>,
    /// Subscribers logged in and subscribed.
    pub ready: u32,
    /// Subscribers whose setup failed.
    pub failed: u32,
    /// Subscribers that were ready and then lost their connection.
    pub closed: u32,
    /// When the first connect was started (µs since the epoch).
    pub started_us: u64,
    /// When the last subscriber finished its setup, once all did (µs since the epoch).
    pub setup_done_us: Option<u64>,
    /// CPU seconds the worker process used so far.
    pub cpu_seconds: f64,
    /// The churners' counters so far.
    #[serde(default)]
    pub churn: ChurnCounts,
}

/// A worker's totals.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerFinal {
    /// Sequence counts over all its subscribers (lost against the accepted counts).
    pub counts: SeqCounts,
    /// Latencies of messages sent after the measurement began.
    pub latency: Buckets,
    /// Messages that carried no stamp.
    pub unstamped: u64,
    /// The first few errors.
    pub errors: Vec<String>,
    /// Close codes received from the server, with counts.
    pub close_codes: Vec<(u16, u64)>,
    /// CPU seconds the worker process used.
    pub cpu_seconds: f64,
    /// The churners' totals.
    #[serde(default)]
    pub churn: ChurnCounts,
    /// The churners' first few errors.
    #[serde(default)]
    pub churn_errors: Vec<String>,
    /// Sequence counts and latencies per target (by subscribers of `targets[k]`).
    #[serde(default)]
    pub per_target: Vec<TargetFinal>,
}

/// A worker's totals for the subscribers of one target.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TargetFinal {
    /// Sequence counts (lost against the accepted counts).
    pub counts: SeqCounts,
    /// Latencies of messages sent after the measurement began.
    pub latency: Buckets,
}

/// A line the parent writes to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Record latencies only of messages sent at or after this time (µs since the epoch).
    Measure {
        /// The start of the measurement.
        from_us: u64,
    },
    /// Start churning (`on`), or start no more churners and let the present ones leave.
    Churn {
        /// Whether to start churners from now on.
        on: bool,
    },
    /// Finish: count losses against the messages accepted per `publisher * channels +
    /// channel`, report [`WorkerMsg::Final`] and exit.
    Stop {
        /// Broadcasts the server accepted, per publisher and channel.
        accepted: Vec<u64>,
    },
}

#[derive(Debug, Default)]
struct Shared {
    delivered: AtomicU64,
    /// Per target; empty when not counted apart.
    delivered_per_target: Vec<AtomicU64>,
    /// Per target, like `delivered_per_target`.
    duplicated_per_target: Vec<AtomicU64>,
    ready: AtomicU32,
    failed: AtomicU32,
    closed: AtomicU32,
    stop: AtomicBool,
    measure_from_us: AtomicU64,
    accepted: Mutex<Vec<u64>>,
}

/// The setup a subscriber goes through, in the order of the server's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Authenticated,
    Subscribed,
    Ready,
    Failed,
}

#[derive(Debug)]
struct SubState {
    stage: Stage,
    /// Reached [`Stage::Ready`] once: losses are counted for it, even if it closed later.
    ever_ready: bool,
    channel: u32,
    /// Index of its server in [`WorkerSpec::targets`].
    target: usize,
    trackers: Vec<SeqTracker>,
}

#[derive(Debug)]
struct Sub {
    conn: WsConn,
    state: SubState,
}

/// What the subscribers of one target received.
#[derive(Debug, Default)]
struct TargetTotals {
    counts: SeqCounts,
    latency: Latency,
    delivered: u64,
}

#[derive(Debug, Default)]
struct ThreadTotals {
    /// Per target.
    per_target: Vec<TargetTotals>,
    unstamped: u64,
    errors: Vec<String>,
    close_codes: std::collections::BTreeMap<u16, u64>,
    setup_error: Option<String>,
}

/// Runs a worker: reads its spec from `spec_json`, serves until told to stop.
pub fn run_worker(spec_json: &str) -> Result<(), String> {
    let spec: WorkerSpec = serde_json::from_str(spec_json).map_err(|e| e.to_string())?;
    if spec.targets.is_empty() {
        return Err("a worker needs at least one target".into());
    }
    let shared = Arc::new(Shared {
        delivered_per_target: spec.targets.iter().map(|_| AtomicU64::new(0)).collect(),
        duplicated_per_target: spec.targets.iter().map(|_| AtomicU64::new(0)).collect(),
        ..Shared::default()
    });
    let started_us = now_us();
    let threads = spec.threads.clamp(1, 64);
    let mut handles = Vec::new();
    for t in 0..threads {
        let lo = spec.first + spec.count * t / threads;
        let hi = spec.first + spec.count * (t + 1) / threads;
        let (spec, shared) = (spec.clone(), Arc::clone(&shared));
        let handle = std::thread::Builder::new()
            .name(format!("sub-{t}"))
            .spawn(move || run_thread(&spec, lo..hi, &shared))
            .map_err(|e| e.to_string())?;
        handles.push(handle);
    }
    let churn_shared = Arc::new(ChurnShared::default());
    let churn_handle = match &spec.churn {
        Some(churn) => {
            let (churn, shared) = (churn.clone(), Arc::clone(&churn_shared));
            Some(
                std::thread::Builder::new()
                    .name("churn".into())
                    .spawn(move || crate::churn::run(&churn, &shared))
                    .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };
    // Commands arrive on stdin; a closed stdin (the parent died) stops the worker too.
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Option<Command>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(cmd) => {
                    if cmd_tx.send(Some(cmd)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("rocket-bench worker: bad command {line:?}: {e}"),
            }
        }
        let _ = cmd_tx.send(None);
    });
    let mut stdout = std::io::stdout().lock();
    let mut setup_done_us = None;
    loop {
        let cmd = match cmd_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(cmd) => Some(cmd),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(None),
        };
        match cmd {
            Some(Some(Command::Measure { from_us })) => {
                shared.measure_from_us.store(from_us, Ordering::Relaxed)
            }
            Some(Some(Command::Churn { on })) => {
                let flag = if on {
                    &churn_shared.on
                } else {
                    &churn_shared.off
                };
                flag.store(true, Ordering::Relaxed);
            }
            Some(Some(Command::Stop { accepted })) => {
                *shared
                    .accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = accepted;
                break;
            }
            Some(None) => break,
            None => {}
        }
        let ready = shared.ready.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if setup_done_us.is_none() && ready + failed >= spec.count {
            setup_done_us = Some(now_us());
        }
        let progress = WorkerProgress {
            delivered: shared.delivered.load(Ordering::Relaxed),
            delivered_per_target: shared
                .delivered_per_target
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect(),
            duplicated_per_target: shared
                .duplicated_per_target
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect(),
            ready,
            failed,
            closed: shared.closed.load(Ordering::Relaxed),
            started_us,
            setup_done_us,
            cpu_seconds: crate::procfs::sample("self").map_or(0.0, |s| s.cpu_seconds),
            churn: *churn_shared
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        };
        let line = serde_json::to_string(&WorkerMsg::Progress(progress)).unwrap_or_default();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // the parent is gone
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    churn_shared.stop.store(true, Ordering::Relaxed);
    let mut latency = Latency::default();
    let mut per_target: Vec<(SeqCounts, Latency)> = spec
        .targets
        .iter()
        .map(|_| (SeqCounts::default(), Latency::default()))
        .collect();
    let mut fin = WorkerFinal::default();
    let mut codes = std::collections::BTreeMap::new();
    for h in handles {
        let t = h.join().map_err(|_| "a subscriber thread panicked")?;
        for (mine, theirs) in per_target.iter_mut().zip(&t.per_target) {
            fin.counts.merge(&theirs.counts);
            latency.merge(&theirs.latency);
            mine.0.merge(&theirs.counts);
            mine.1.merge(&theirs.latency);
        }
        fin.unstamped += t.unstamped;
        fin.errors.extend(t.errors.into_iter().chain(t.setup_error));
        for (code, n) in t.close_codes {
            *codes.entry(code).or_insert(0) += n;
        }
    }
    fin.errors.truncate(10);
    if let Some(h) = churn_handle {
        fin.churn = h.join().map_err(|_| "the churn thread panicked")?;
        fin.churn_errors = churn_shared
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
    }
    fin.latency = latency.to_buckets();
    fin.per_target = per_target
        .iter()
        .map(|(counts, latency)| TargetFinal {
            counts: *counts,
            latency: latency.to_buckets(),
        })
        .collect();
    fin.close_codes = codes.into_iter().collect();
    fin.cpu_seconds = crate::procfs::sample("self").map_or(0.0, |s| s.cpu_seconds);
    let line = serde_json::to_string(&WorkerMsg::Final(fin)).map_err(|e| e.to_string())?;
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| e.to_string())
}

/// The setup requests of a subscriber, framed and ready to write.
fn setup_frames(spec: &WorkerSpec, channel: u32, masks: &mut MaskGen) -> Vec<u8> {
    let auth = serde_json::json!({"authenticate": {"user": spec.user, "secret": spec.secret}});
    let sub = serde_json::json!({"subscribe": {"channel": channel_name(channel)}});
    let mut out = Vec::new();
    for msg in [auth, sub] {
        crate::frame::encode_masked(
            &mut out,
            crate::frame::OP_TEXT,
            msg.to_string().as_bytes(),
            masks.next_mask(),
        );
    }
    out
}

fn on_text(
    state: &mut SubState,
    totals: &mut ThreadTotals,
    reader: &StampReader,
    now: u64,
    measure_from: u64,
    text: &[u8],
) {
    let expect: &[u8] = match state.stage {
        Stage::Ready => {
            match reader.read(text) {
                Some(stamp) => {
                    // A target's totals exist for every subscriber's target (run_thread).
                    let mine = &mut totals.per_target[state.target];
                    mine.delivered += 1;
                    match state.trackers.get_mut(stamp.publisher as usize) {
                        Some(t) => t.record(stamp.seq, &mut mine.counts),
                        None => totals.unstamped += 1,
                    }
                    if stamp.sent_us >= measure_from {
                        mine.latency.record_us(now.saturating_sub(stamp.sent_us));
                    }
                }
                None => totals.unstamped += 1,
            }
            return;
        }
        Stage::Failed => return,
        Stage::Greeting => br#"{"connected""#,
        Stage::Authenticated => br#"{"authenticated""#,
        Stage::Subscribed => br#"{"subscribed""#,
    };
    if text.starts_with(expect) {
        state.stage = match state.stage {
            Stage::Greeting => Stage::Authenticated,
            Stage::Authenticated => Stage::Subscribed,
            _ => Stage::Ready,
        };
    } else {
        state.stage = Stage::Failed;
        if totals.setup_error.is_none() {
            totals.setup_error = Some(format!(
                "setup: expected {} got {}",
                String::from_utf8_lossy(expect),
                String::from_utf8_lossy(&text[..text.len().min(200)])
            ));
        }
    }
}

fn run_thread(spec: &WorkerSpec, range: std::ops::Range<u32>, shared: &Shared) -> ThreadTotals {
    let mut totals = ThreadTotals {
        per_target: spec
            .targets
            .iter()
            .map(|_| TargetTotals::default())
            .collect(),
        ..ThreadTotals::default()
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            totals.setup_error = Some(format!("epoll: {e}"));
            shared
                .failed
                .fetch_add(range.len() as u32, Ordering::Relaxed);
            return totals;
        }
    };
    // One TLS client per `wss://` target (it names the server it expects).
    let mut tls = Vec::with_capacity(spec.targets.len());
    for target in &spec.targets {
        match (target.tls, spec.ca.as_deref()) {
            (false, _) => tls.push(None),
            (true, None) => {
                totals.setup_error = Some("wss:// needs --ca FILE".into());
                shared
                    .failed
                    .fetch_add(range.len() as u32, Ordering::Relaxed);
                return totals;
            }
            (true, Some(ca)) => match TlsClient::new(ca, &target.host) {
                Ok(client) => tls.push(Some(client)),
                Err(e) => {
                    totals.setup_error = Some(e);
                    shared
                        .failed
                        .fetch_add(range.len() as u32, Ordering::Relaxed);
                    return totals;
                }
            },
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut masks = MaskGen::new(now_us() ^ (u64::from(range.start) << 32));
    let reader = StampReader::default();
    let mut subs: Vec<Option<Sub>> = Vec::with_capacity(range.len());
    let mut next = range.start;
    let mut in_setup = 0u32;
    let mut reported_delivered = vec![0u64; spec.targets.len()];
    let mut reported_duplicated = vec![0u64; spec.targets.len()];
    let fail = |totals: &mut ThreadTotals, why: String| {
        if totals.errors.len() < 10 {
            totals.errors.push(why);
        }
    };
    while !shared.stop.load(Ordering::Relaxed) {
        // Start connects, keeping at most `concurrency` in their setup.
        while next < range.end && in_setup < spec.concurrency.max(1) {
            let i = next;
            next += 1;
            let source =
                (!spec.sources.is_empty()).then(|| spec.sources[i as usize % spec.sources.len()]);
            let token = Token(subs.len());
            let target = i as usize % spec.targets.len();
            let to = &spec.targets[target];
            let registered =
                WsConn::connect(to.addr, source, &to.host, &to.path, tls[target].as_ref())
                    .and_then(|mut conn| {
                        poll.registry().register(
                            &mut conn.stream,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        Ok(conn)
                    });
            match registered {
                Ok(conn) => {
                    in_setup += 1;
                    subs.push(Some(Sub {
                        conn,
                        state: SubState {
                            stage: Stage::Greeting,
                            ever_ready: false,
                            channel: i % spec.channels.max(1),
                            target,
                            trackers: vec![SeqTracker::default(); spec.publishers as usize],
                        },
                    }));
                }
                Err(e) => {
                    subs.push(None);
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    fail(&mut totals, format!("connect: {e}"));
                }
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            fail(&mut totals, format!("epoll: {e}"));
            break;
        }
        if events.is_empty() {
            continue;
        }

        let measure_from = shared.measure_from_us.load(Ordering::Relaxed);
        for event in &events {
            let Some(Some(sub)) = subs.get_mut(event.token().0) else {
                continue;
            };
            let before = sub.state.stage;
            // The receive time is read once per event, when its first message is in hand
            // (after the read: bytes may arrive between the poll and the read).
            let mut now = None;
            let progress = sub.conn.on_event(&mut buf, &mut masks, |text| {
                let now = *now.get_or_insert_with(now_us);
                on_text(
                    &mut sub.state,
                    &mut totals,
                    &reader,
                    now,
                    measure_from,
                    text,
                )
            });
            if progress.opened {
                let frames = setup_frames(spec, sub.state.channel, &mut masks);
                if let Err(e) = sub.conn.send_raw(&frames) {
                    sub.state.stage = Stage::Failed;
                    fail(&mut totals, format!("write: {e}"));
                }
            }
            let after = sub.state.stage;
            let was_setting_up = !matches!(before, Stage::Ready | Stage::Failed);
            if was_setting_up && after == Stage::Ready {
                sub.state.ever_ready = true;
                in_setup -= 1;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            let failed_now = after == Stage::Failed || progress.closed.is_some();
            if !failed_now {
                continue;
            }
            if let Some(code) = sub.conn.close_code {
                *totals.close_codes.entry(code).or_insert(0) += 1;
            }
            if let Some(why) = progress.closed {
                fail(&mut totals, why);
            }
            if after == Stage::Ready {
                shared.closed.fetch_add(1, Ordering::Relaxed);
            } else if was_setting_up {
                in_setup -= 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = poll.registry().deregister(&mut sub.conn.stream);
            // Keep the trackers: losses are counted for closed subscribers too.
            sub.state.stage = Stage::Failed;
        }
        for (k, mine) in totals.per_target.iter().enumerate() {
            let new = mine.delivered - reported_delivered[k];
            if new > 0 {
                shared.delivered.fetch_add(new, Ordering::Relaxed);
                if let Some(d) = shared.delivered_per_target.get(k) {
                    d.fetch_add(new, Ordering::Relaxed);
                }
                reported_delivered[k] = mine.delivered;
            }
            let new = mine.counts.duplicated - reported_duplicated[k];
            if new > 0 {
                if let Some(d) = shared.duplicated_per_target.get(k) {
                    d.fetch_add(new, Ordering::Relaxed);
                }
                reported_duplicated[k] = mine.counts.duplicated;
            }
        }
    }
    // Say goodbye properly (close 1000), so the server logs a clean close.
    let mut close = Vec::new();
    for sub in subs.iter_mut().flatten() {
        if sub.state.stage == Stage::Ready && sub.conn.is_open() {
            close.clear();
            let payload = 1000u16.to_be_bytes();
            crate::frame::encode_masked(
                &mut close,
                crate::frame::OP_CLOSE,
                &payload,
                masks.next_mask(),
            );
            let _ = sub.conn.send_raw(&close);
        }
    }
    let accepted = shared
        .accepted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let channels = spec.channels.max(1) as usize;
    for sub in subs.iter().flatten() {
        if !sub.state.ever_ready {
            continue;
        }
        for (p, tracker) in sub.state.trackers.iter().enumerate() {
            let n = accepted
                .get(p * channels + sub.state.channel as usize)
                .copied()
                .unwrap_or(0);
            totals.per_target[sub.state.target].counts.lost += tracker.lost(n);
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::{Pace, PublisherLive, PublisherSpec, Publishers};
    use std::time::Instant;

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Subscribers and publishers through the ceiling server, all in this process: every
    /// message arrives once, in order, with a latency. The subscribers alternate between two
    /// targets (the same server under two paths), and each target's subscribers are counted
    /// apart.
    #[test]
    fn subscribers_and_publishers_through_the_ceiling() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        std::thread::spawn(move || crate::ceiling::serve_on(listener, Some(deadline)));
        let spec = WorkerSpec {
            targets: ["/t", "/u"]
                .map(|path| Endpoint {
                    addr,
                    host: addr.to_string(),
                    path: path.into(),
                    tls: false,
                })
                .to_vec(),
            user: "u".into(),
            secret: "s".into(),
            first: 0,
            count: 20,
            channels: 3,
            publishers: 2,
            threads: 1,
            concurrency: 8,
            sources: Vec::new(),
            churn: None,
            ca: None,
        };
        let shared = Arc::new(Shared {
            delivered_per_target: vec![AtomicU64::new(0), AtomicU64::new(0)],
            ..Shared::default()
        });
        let thread = {
            let (spec, shared) = (spec.clone(), Arc::clone(&shared));
            std::thread::spawn(move || run_thread(&spec, 0..20, &shared))
        };
        wait_for("subscribers", || shared.ready.load(Ordering::Relaxed) == 20);
        let pub_spec = PublisherSpec {
            addr,
            host: spec.targets[0].host.clone(),
            path: spec.targets[0].path.clone(),
            user: "u".into(),
            secret: "s".into(),
            publishers: 2,
            channels: 3,
            subscribers: 20,
            payload: 60,
            via: crate::publisher::Via::Ws,
            tls: None,
        };
        let publishers = Publishers::connect(pub_spec.clone(), Duration::from_secs(10)).unwrap();
        let live = Arc::new(PublisherLive::default());
        let runner = {
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                publishers.run(Pace::Rate(500.0), &live, Duration::from_secs(10))
            })
        };
        wait_for("publishes", || live.accepted.load(Ordering::Relaxed) >= 40);
        live.stop.store(true, Ordering::Relaxed);
        let totals = runner.join().unwrap();
        assert_eq!(totals.errors, 0);
        assert_eq!(totals.unanswered, 0);
        let expected: u64 = (0..2u32)
            .flat_map(|p| (0..3u32).map(move |c| (p, c)))
            .map(|(p, c)| totals.accepted[(p * 3 + c) as usize] * pub_spec.subscribers_on(c))
            .sum();
        assert!(expected > 0);
        wait_for("deliveries", || {
            shared.delivered.load(Ordering::Relaxed) >= expected
        });
        *shared.accepted.lock().unwrap() = totals.accepted.clone();
        shared.stop.store(true, Ordering::Relaxed);
        let t = thread.join().unwrap();
        // Subscriber i is on target i % 2 and channel i % 3.
        let accepted = &totals.accepted;
        let owed = |target: u32| -> u64 {
            (0..20u32)
                .filter(|i| i % 2 == target)
                .flat_map(|i| (0..2u32).map(move |p| accepted[(p * 3 + i % 3) as usize]))
                .sum()
        };
        assert_eq!(t.per_target.len(), 2);
        for (k, mine) in t.per_target.iter().enumerate() {
            assert_eq!(mine.counts.received, owed(k as u32));
            assert_eq!(mine.delivered, owed(k as u32));
            assert_eq!(
                (
                    mine.counts.lost,
                    mine.counts.duplicated,
                    mine.counts.reordered
                ),
                (0, 0, 0)
            );
            assert_eq!(mine.latency.count(), owed(k as u32));
        }
        assert_eq!(owed(0) + owed(1), expected);
        let counted: Vec<u64> = shared
            .delivered_per_target
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counted, [owed(0), owed(1)]);
        assert_eq!(t.unstamped, 0);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
    }
}
