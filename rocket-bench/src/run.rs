//! A benchmark run: spawn the subscriber workers (this binary, re-executed), wait for
//! every subscriber to be set up, drive the publishers, drain, and collect the figures.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::churn::ChurnSpec;
use crate::message::now_us;
use crate::procfs::{self, ProcSample};
use crate::publisher::{Pace, PublisherLive, PublisherSpec, PublisherTotals, Publishers, Via};
use crate::result::{
    BackplaneFigures, ChurnFigures, ClientFigures, LoadFigures, MemoryTrend, NodeFigures,
    RunResult, SeriesRow, ServerFigures, SetupFigures,
};
use crate::stats::{Latency, SeqCounts};
use crate::subscriber::{self, Endpoint, WorkerFinal, WorkerMsg, WorkerProgress, WorkerSpec};
use crate::tls::TlsClient;

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Subscribe, then publish for `--duration` and measure deliveries and latency.
    Load,
    /// Subscribe and stay idle: measure the server's RSS per connection, then check that
    /// every connection is alive with one message per channel.
    Idle,
    /// Like idle, but the headline is how fast connections are accepted, authenticated and
    /// subscribed.
    Storm,
}

/// The options of `rocket-bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// WebSocket URL of the server's hub (`ws://`, or `wss://` with `--ca`). Repeat it for the nodes of a
    /// cluster: the publishers connect to the first, subscriber `i` to URL `i mod N`.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:9772/echo"
    )]
    pub urls: Vec<String>,
    /// `wss://`: trust the certificates in this PEM file, and no others (e.g. the server's
    /// self-signed certificate from `rocket-bench cert`).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// What to measure.
    #[arg(long, value_enum, default_value = "load")]
    pub mode: Mode,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u32,
    /// Channels; subscriber i subscribes to channel `c{i % channels}`.
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// How publishers publish: `ws` (a WebSocket each) or `http` (the publish API,
    /// `POST /api/broadcast` pipelined on a keep-alive connection each).
    #[arg(long, value_enum, default_value = "ws")]
    pub publish_via: Via,
    /// Messages per second per publisher; 0 is flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Flat out: broadcasts sent and not yet answered, per publisher.
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Flat out: messages per subscriber sent but not yet received, at most (keep it
    /// under the server's send queue, `SendQueueMessages`).
    #[arg(long, default_value_t = 256)]
    pub max_lag: u64,
    /// Bytes of `data` per message (the stamp included).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Seconds of measured publishing (load mode).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before the measurement starts (load mode).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Idle and storm modes: seconds to wait after the setup before reading the server's
    /// RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Idle and storm modes: seconds to hold the connections after measuring.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// User the subscribers log in as (needs READ).
    #[arg(long, default_value = "backend")]
    pub user: String,
    /// Its secret.
    #[arg(long, default_value = "secret")]
    pub secret: String,
    /// User the publishers log in as (needs WRITE); defaults to --user.
    #[arg(long)]
    pub pub_user: Option<String>,
    /// Its secret; defaults to --secret.
    #[arg(long)]
    pub pub_secret: Option<String>,
    /// Subscribers per worker process (one process may hold ~19,900 sockets here).
    #[arg(long, default_value_t = 10_000)]
    pub per_process: u32,
    /// Threads per worker process.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Connections in their setup at once, per thread.
    #[arg(long, default_value_t = 256)]
    pub concurrency: u32,
    /// Connect from 127.0.0.1 ..= 127.0.0.K in turn (loopback targets only), for more
    /// ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// PID of the server, to read its CPU time and memory from /proc. Repeat it for the
    /// nodes of a cluster, in the order of `--url`: the server figures are then summed over
    /// the nodes, and each node's are kept too.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// PID of the cluster's backplane (the `redis-server` the nodes share): its CPU time
    /// and memory are measured apart, not added to the server's.
    #[arg(long)]
    pub backplane_pid: Option<u32>,
    /// Seconds allowed for the setup of every subscriber.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A label for the run, kept in the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Which server is measured (kept in the JSON), e.g. rocket, peer, ceiling.
    #[arg(long, default_value = "rocket")]
    pub server_name: String,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Load mode: churners started per second while the load runs (all worker processes
    /// together): each connects, logs in, subscribes to a channel of the run, receives for
    /// `--churn-hold` and leaves (by `unsubscribe` then close, by close, or by dropping
    /// the connection, in turn). Counted apart from the subscribers.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Seconds each churner stays subscribed.
    #[arg(long, default_value_t = 2.0)]
    pub churn_hold: f64,
    /// Load mode: keep one reading of the server (RSS, CPU) per second of the measured
    /// window in the JSON, and the RSS trend (start, middle, end, slope).
    #[arg(long)]
    pub series: bool,
    /// The git commit the server was built from, kept in the JSON.
    #[arg(long, default_value = "")]
    pub commit: String,
}

/// The URL split into what the sockets need.
fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']'))
    {
        host.to_owned()
    } else {
        format!("{host}:{}", if tls { 443 } else { 80 })
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    Ok(Endpoint {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        tls,
    })
}

/// One worker process and what it last said.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    state: Arc<Mutex<WorkerState>>,
}

#[derive(Default)]
struct WorkerState {
    progress: WorkerProgress,
    fin: Option<WorkerFinal>,
    ended: Option<String>,
}

/// Deliveries to the subscribers of each target, all workers together, as they report.
struct PerTarget {
    delivered: Vec<AtomicU64>,
    duplicated: Vec<AtomicU64>,
}

impl PerTarget {
    fn new(targets: usize) -> Self {
        let zeros = || (0..targets).map(|_| AtomicU64::new(0)).collect();
        Self {
            delivered: zeros(),
            duplicated: zeros(),
        }
    }

    /// Messages received once so far, per target (duplicates left out).
    fn unique(&self) -> Vec<u64> {
        self.delivered
            .iter()
            .zip(&self.duplicated)
            .map(|(d, dup)| {
                let dup = dup.load(Ordering::Relaxed);
                d.load(Ordering::Relaxed).saturating_sub(dup)
            })
            .collect()
    }
}

/// Adds the growth of `now` since `last` to `sums`, and remembers `now`.
fn add_growth(sums: &[AtomicU64], last: &mut [u64], now: &[u64]) {
    for ((sum, last), &now) in sums.iter().zip(last).zip(now) {
        sum.fetch_add(now - (*last).min(now), Ordering::Relaxed);
        *last = now;
    }
}

impl Worker {
    fn spawn(
        spec: &WorkerSpec,
        delivered: Arc<AtomicU64>,
        per_target: Arc<PerTarget>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("worker")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            let mut last = 0u64;
            let mut last_delivered = vec![0u64; per_target.delivered.len()];
            let mut last_duplicated = vec![0u64; per_target.duplicated.len()];
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                match serde_json::from_str::<WorkerMsg>(&line) {
                    Ok(WorkerMsg::Progress(p)) => {
                        delivered.fetch_add(p.delivered - last.min(p.delivered), Ordering::Relaxed);
                        last = p.delivered;
                        add_growth(
                            &per_target.delivered,
                            &mut last_delivered,
                            &p.delivered_per_target,
                        );
                        add_growth(
                            &per_target.duplicated,
                            &mut last_duplicated,
                            &p.duplicated_per_target,
                        );
                        s.progress = p;
                    }
                    Ok(WorkerMsg::Final(f)) => s.fin = Some(f),
                    Err(e) => s.ended = Some(format!("bad worker line: {e}")),
                }
            }
            let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
            if s.fin.is_none() && s.ended.is_none() {
                s.ended = Some("worker exited early".into());
            }
        });
        Ok(Self {
            child,
            stdin,
            state,
        })
    }

    fn send(&mut self, cmd: &subscriber::Command) {
        if let Ok(line) = serde_json::to_string(cmd) {
            let _ = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush());
        }
    }

    fn progress(&self) -> WorkerProgress {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .progress
            .clone()
    }
}

/// All workers together.
struct Fleet {
    workers: Vec<Worker>,
    delivered: Arc<AtomicU64>,
}

impl Fleet {
    fn sum(&self) -> WorkerProgress {
        let mut total = WorkerProgress::default();
        for w in &self.workers {
            let p = w.progress();
            total.delivered += p.delivered;
            if total.delivered_per_target.len() < p.delivered_per_target.len() {
                total
                    .delivered_per_target
                    .resize(p.delivered_per_target.len(), 0);
            }
            for (sum, d) in total
                .delivered_per_target
                .iter_mut()
                .zip(&p.delivered_per_target)
            {
                *sum += d;
            }
            total.ready += p.ready;
            total.failed += p.failed;
            total.closed += p.closed;
            total.cpu_seconds += p.cpu_seconds;
            total.churn.merge(&p.churn);
        }
        total
    }

    fn broken(&self) -> Option<String> {
        self.workers.iter().find_map(|w| {
            let s = w.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.ended.clone()
        })
    }

    /// Seconds from the first connect to the last setup, once every worker is done.
    fn setup_window(&self) -> Option<f64> {
        let mut first = u64::MAX;
        let mut last = 0;
        for w in &self.workers {
            let p = w.progress();
            first = first.min(p.started_us);
            last = last.max(p.setup_done_us?);
        }
        Some(last.saturating_sub(first) as f64 / 1e6)
    }
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    procfs::sample(&pid?.to_string()).ok()
}

/// Reads each of `pids` (the nodes of a cluster, or one server); `None` when there are
/// none or one of them cannot be read.
fn sample_each(pids: &[u32]) -> Option<Vec<ProcSample>> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| sample(Some(pid))).collect()
}

/// Readings of several processes added up: CPU time, RSS and peak RSS (the peaks of
/// processes that may have peaked at different times, so an upper bound).
fn total(samples: &[ProcSample]) -> ProcSample {
    samples
        .iter()
        .fold(ProcSample::default(), |a, b| ProcSample {
            cpu_seconds: a.cpu_seconds + b.cpu_seconds,
            rss_kib: a.rss_kib + b.rss_kib,
            peak_rss_kib: a.peak_rss_kib + b.peak_rss_kib,
        })
}

/// The highest RSS seen, of all the servers together and of each.
#[derive(Debug, Default)]
struct RssWatch {
    total: u64,
    nodes: Vec<u64>,
}

impl RssWatch {
    fn see(&mut self, nodes: Option<&Vec<ProcSample>>) {
        let Some(nodes) = nodes else { return };
        self.total = self.total.max(total(nodes).rss_kib);
        self.nodes.resize(nodes.len().max(self.nodes.len()), 0);
        for (max, s) in self.nodes.iter_mut().zip(nodes) {
            *max = (*max).max(s.rss_kib);
        }
    }
}

/// The figures of one server process, or of several added up, from readings before the
/// run, with every connection set up, at the start and end of the measured window, and at
/// the very end.
struct ServerReadings {
    before: Option<ProcSample>,
    connected: Option<ProcSample>,
    start: Option<ProcSample>,
    end: Option<ProcSample>,
    last: Option<ProcSample>,
    rss_max_seen: u64,
}

/// `n / d`, or 0 when `d` is not positive (a window or a CPU time that did not elapse).
fn quotient(n: f64, d: f64) -> f64 {
    if d > 0.0 { n / d } else { 0.0 }
}

impl ServerReadings {
    fn figures(&self, pid: u32, window_s: f64, deliveries: u64, ready: u32) -> ServerFigures {
        let before = self.before.unwrap_or_default();
        let connected_kib = self.connected.or(self.start).map_or(0, |s| s.rss_kib);
        let cpu = match (self.start, self.end) {
            (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
            _ => 0.0,
        };
        ServerFigures {
            pid,
            cpu_seconds: cpu,
            cpu_percent: quotient(cpu * 100.0, window_s),
            deliveries_per_cpu_second: quotient(deliveries as f64, cpu),
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected_kib,
            rss_per_connection_kib: connected_kib.saturating_sub(before.rss_kib) as f64
                / f64::from(ready.max(1)),
            rss_max_seen_kib: self.rss_max_seen.max(self.last.map_or(0, |s| s.rss_kib)),
            peak_rss_kib: self.last.map_or(0, |s| s.peak_rss_kib),
        }
    }
}

fn self_cpu() -> f64 {
    procfs::sample("self").map_or(0.0, |s| s.cpu_seconds)
}

/// Deliveries that the broadcasts `accepted` (per `publisher * channels + channel`) owe to
/// the subscribers of each of `targets` nodes (subscriber `i` is on node `i mod targets`
/// and channel `i mod channels`).
fn owed_per_target(
    subscribers: u32,
    targets: usize,
    channels: u32,
    publishers: u32,
    accepted: &[u64],
) -> Vec<u64> {
    let targets = targets.max(1);
    let mut owed = vec![0u64; targets];
    for i in 0..subscribers {
        let c = i % channels.max(1);
        owed[i as usize % targets] += (0..publishers)
            .map(|p| {
                accepted
                    .get((p * channels + c) as usize)
                    .copied()
                    .unwrap_or(0)
            })
            .sum::<u64>();
    }
    owed
}

/// Subscribers on each of `targets` nodes (subscriber `i` is on node `i mod targets`).
fn subscribers_per_target(subscribers: u32, targets: usize) -> Vec<u64> {
    let (n, k) = (u64::from(subscribers), targets.max(1) as u64);
    (0..k).map(|t| n / k + u64::from(t < n % k)).collect()
}

/// The delivery count the publishers' flow control goes by: `total` on one node; on
/// several, the slowest node's count per subscriber times all subscribers (`counts[k]`
/// deliveries to the `shares[k]` subscribers of node `k`).
fn paced_by_slowest(total: u64, counts: &[u64], shares: &[u64]) -> u64 {
    if counts.len() < 2 {
        return total;
    }
    let all: u64 = shares.iter().sum();
    counts
        .iter()
        .zip(shares)
        .filter(|(_, share)| **share > 0)
        .map(|(count, share)| (u128::from(*count) * u128::from(all) / u128::from(*share)) as u64)
        .min()
        .unwrap_or(total)
        .min(total)
}

/// Runs a benchmark and returns its figures.
pub fn run(args: &RunArgs) -> Result<RunResult, String> {
    let targets = args
        .urls
        .iter()
        .map(|u| parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(target) = targets.first().cloned() else {
        return Err("no --url".into());
    };
    if args.server_pids.len() > 1 && args.server_pids.len() != targets.len() {
        return Err(format!(
            "{} --server-pid for {} --url: give one per node, in the same order",
            args.server_pids.len(),
            targets.len()
        ));
    }
    let ca = match (targets.iter().any(|t| t.tls), &args.ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(ca.clone()),
        (true, None) => return Err("wss:// needs --ca FILE".into()),
    };
    // Checked here, so that a bad file fails the run before any worker starts.
    let tls = ca
        .as_deref()
        .filter(|_| target.tls)
        .map(|ca| TlsClient::new(ca, &target.host))
        .transpose()?;
    let started = Instant::now();
    let say = |msg: &str| {
        if !args.quiet {
            eprintln!("[{:7.2}s] {msg}", started.elapsed().as_secs_f64());
        }
    };
    let channels = args.channels.max(1);
    let publishers = args.publishers.max(1);
    let per_process = args.per_process.clamp(1, 19_800);
    let processes = args.subscribers.div_ceil(per_process).max(1);
    let sources: Vec<IpAddr> =
        if args.sources > 1 && targets.iter().all(|t| t.addr.ip().is_loopback()) {
            (1..=args.sources)
                .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
                .collect()
        } else {
            Vec::new()
        };
    let nodes_before = sample_each(&args.server_pids);
    let server_before = nodes_before.as_deref().map(total);
    let backplane_before = sample(args.backplane_pid);
    let overflows_before = procfs::listen_overflows();
    let mut rss = RssWatch::default();
    rss.see(nodes_before.as_ref());

    // Subscribers, in worker processes.
    let delivered = Arc::new(AtomicU64::new(0));
    let per_target = Arc::new(PerTarget::new(targets.len()));
    let mut fleet = Fleet {
        workers: Vec::new(),
        delivered: Arc::clone(&delivered),
    };
    for w in 0..processes {
        let first = args.subscribers * w / processes;
        let count = args.subscribers * (w + 1) / processes - first;
        let spec = WorkerSpec {
            targets: targets.clone(),
            user: args.user.clone(),
            secret: args.secret.clone(),
            first,
            count,
            channels,
            publishers,
            threads: args.threads.max(1),
            concurrency: args.concurrency.max(1),
            sources: sources.clone(),
            churn: (args.churn > 0.0 && args.mode == Mode::Load).then(|| ChurnSpec {
                addr: target.addr,
                host: target.host.clone(),
                path: target.path.clone(),
                user: args.user.clone(),
                secret: args.secret.clone(),
                rate: args.churn / f64::from(processes),
                hold_ms: (args.churn_hold.max(0.0) * 1000.0) as u64,
                channels,
                publishers,
                worker: w,
                workers: processes,
                sources: sources.clone(),
            }),
            ca: ca.clone(),
        };
        fleet.workers.push(Worker::spawn(
            &spec,
            Arc::clone(&fleet.delivered),
            Arc::clone(&per_target),
        )?);
    }
    say(&format!(
        "{} subscribers in {processes} worker process(es) connecting to {}",
        args.subscribers,
        args.urls.join(", ")
    ));
    let setup_deadline = Instant::now() + Duration::from_secs_f64(args.setup_timeout);
    let mut last_print = Instant::now();
    let setup_seconds = loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(why) = fleet.broken() {
            shutdown(&mut fleet);
            return Err(why);
        }
        rss.see(sample_each(&args.server_pids).as_ref());
        if let Some(secs) = fleet.setup_window() {
            break secs;
        }
        if Instant::now() > setup_deadline {
            let p = fleet.sum();
            shutdown(&mut fleet);
            return Err(format!(
                "setup timed out: {} ready, {} failed of {}",
                p.ready, p.failed, args.subscribers
            ));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let p = fleet.sum();
            say(&format!("setup: {} ready, {} failed", p.ready, p.failed));
        }
    };
    let p = fleet.sum();
    let setup = SetupFigures {
        ready: p.ready,
        failed: p.failed,
        seconds: setup_seconds,
        per_second: f64::from(p.ready) / setup_seconds.max(1e-9),
        listen_overflows: match (overflows_before, procfs::listen_overflows()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        },
    };
    say(&format!(
        "setup: {} ready, {} failed in {:.2} s ({:.0}/s)",
        setup.ready, setup.failed, setup.seconds, setup.per_second
    ));

    let pub_spec = PublisherSpec {
        addr: target.addr,
        host: target.host.clone(),
        path: target.path.clone(),
        user: args.pub_user.clone().unwrap_or_else(|| args.user.clone()),
        secret: args
            .pub_secret
            .clone()
            .unwrap_or_else(|| args.secret.clone()),
        publishers,
        channels,
        subscribers: args.subscribers,
        payload: args.payload,
        via: args.publish_via,
        tls,
    };
    let publishers_ready = match Publishers::connect(pub_spec.clone(), Duration::from_secs(10)) {
        Ok(p) => p,
        Err(e) => {
            shutdown(&mut fleet);
            return Err(e);
        }
    };

    let mut nodes_connected = None;
    let live = Arc::new(PublisherLive::default());
    let (pace, measured) = match args.mode {
        Mode::Load => {
            let pace = if args.rate > 0.0 {
                Pace::Rate(args.rate)
            } else {
                Pace::FlatOut {
                    window: args.window.max(1),
                    max_lag: args.max_lag.max(1),
                }
            };
            (pace, true)
        }
        Mode::Idle | Mode::Storm => {
            std::thread::sleep(Duration::from_secs_f64(args.settle.max(0.0)));
            nodes_connected = sample_each(&args.server_pids);
            rss.see(nodes_connected.as_ref());
            if let Some(s) = nodes_connected.as_deref().map(total) {
                say(&format!(
                    "server RSS with every connection set up: {} KiB",
                    s.rss_kib
                ));
            }
            let hold_until = Instant::now() + Duration::from_secs_f64(args.hold.max(0.0));
            while Instant::now() < hold_until {
                std::thread::sleep(Duration::from_millis(200));
                rss.see(sample_each(&args.server_pids).as_ref());
            }
            say("liveness check: one message to every channel");
            (Pace::Once, false)
        }
    };

    let churning = args.churn > 0.0 && measured;
    if churning {
        for w in &mut fleet.workers {
            w.send(&subscriber::Command::Churn { on: true });
        }
        say(&format!(
            "churn: {} churners/s, each subscribed for {} s",
            args.churn, args.churn_hold
        ));
    }
    // Publish on their own thread while this one samples and prints.
    // A slow server may take long to answer a window of broadcasts to many subscribers.
    let drain = Duration::from_secs(30);
    let publisher_thread = {
        let live = Arc::clone(&live);
        std::thread::spawn(move || publishers_ready.run(pace, &live, drain))
    };
    let relay = {
        // Feed the workers' delivery counts to the publishers' flow control: on several
        // nodes, the count of the slowest node's subscribers (duplicates left out) scaled
        // to all of them, so that "flat out" keeps every node's subscribers within
        // `--max-lag`, not their average.
        let (live, delivered) = (Arc::clone(&live), Arc::clone(&delivered));
        let per_target = Arc::clone(&per_target);
        let shares = subscribers_per_target(args.subscribers, targets.len());
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let h = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let counts = per_target.unique();
                live.delivered.store(
                    paced_by_slowest(delivered.load(Ordering::Relaxed), &counts, &shares),
                    Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        (done, h)
    };

    struct Mark {
        at: Instant,
        delivered: u64,
        accepted: u64,
        /// All servers together.
        server: Option<ProcSample>,
        /// Each server.
        nodes: Option<Vec<ProcSample>>,
        backplane: Option<ProcSample>,
        /// Deliveries to the subscribers of each target.
        per_target: Vec<u64>,
        client_cpu: f64,
        machine: Option<(u64, u64)>,
        churn_subscribed: u64,
    }
    let mark = |fleet: &Fleet| {
        let nodes = sample_each(&args.server_pids);
        let workers = fleet.sum();
        Mark {
            at: Instant::now(),
            delivered: delivered.load(Ordering::Relaxed),
            accepted: live.accepted.load(Ordering::Relaxed),
            server: nodes.as_deref().map(total),
            nodes,
            backplane: sample(args.backplane_pid),
            per_target: workers.delivered_per_target,
            client_cpu: self_cpu() + workers.cpu_seconds,
            machine: procfs::machine_jiffies(),
            churn_subscribed: workers.churn.subscribed,
        }
    };
    let mut series: Vec<SeriesRow> = Vec::new();
    let (start, end) = if measured {
        std::thread::sleep(Duration::from_secs_f64(args.warmup.max(0.0)));
        let from_us = now_us();
        for w in &mut fleet.workers {
            w.send(&subscriber::Command::Measure { from_us });
        }
        // Workers report every 20 ms: let the counts catch up with the mark.
        std::thread::sleep(Duration::from_millis(40));
        let start = mark(&fleet);
        if args.series
            && let Some(s) = start.server
        {
            series.push(SeriesRow(0.0, s.rss_kib, 0.0, 0.0, start.churn_subscribed));
        }
        let until = start.at + Duration::from_secs_f64(args.duration.max(0.1));
        let mut prev = (
            start.at,
            start.delivered,
            start.accepted,
            start.server,
            start.backplane,
        );
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1).min(until - Instant::now()));
            let now = mark(&fleet);
            let dt = now.at.duration_since(prev.0).as_secs_f64().max(1e-9);
            rss.see(now.nodes.as_ref());
            let mut cpu = match (now.server, prev.3) {
                (Some(a), Some(b)) => format!(
                    ", server {:.0}% CPU, {} KiB",
                    (a.cpu_seconds - b.cpu_seconds) / dt * 100.0,
                    a.rss_kib
                ),
                _ => String::new(),
            };
            if let (Some(a), Some(b)) = (now.backplane, prev.4) {
                cpu += &format!(
                    ", backplane {:.0}% CPU",
                    (a.cpu_seconds - b.cpu_seconds) / dt * 100.0
                );
            }
            if args.series
                && let (Some(a), Some(b)) = (now.server, prev.3)
            {
                series.push(SeriesRow(
                    (now.at.duration_since(start.at).as_secs_f64() * 1000.0).round() / 1000.0,
                    a.rss_kib,
                    ((a.cpu_seconds - b.cpu_seconds) / dt * 1000.0).round() / 10.0,
                    ((now.delivered - prev.1) as f64 / dt).round(),
                    now.churn_subscribed,
                ));
            }
            let p = fleet.sum();
            let churn = if churning {
                format!(
                    ", churn: {} subscribed, {} present, {} failed, {} dropped",
                    p.churn.subscribed, p.churn.active, p.churn.failed, p.churn.dropped
                )
            } else {
                String::new()
            };
            say(&format!(
                "publishes accepted {:.0}/s, deliveries received {:.0}/s, lag {} msgs, {} closed{cpu}{churn}",
                (now.accepted - prev.2) as f64 / dt,
                (now.delivered - prev.1) as f64 / dt,
                live.sent.load(Ordering::Relaxed)
                    - now.accepted.min(live.sent.load(Ordering::Relaxed)),
                p.closed,
            ));
            prev = (
                now.at,
                now.delivered,
                now.accepted,
                now.server,
                now.backplane,
            );
            if let Some(why) = fleet.broken() {
                say(&format!("a worker failed: {why}"));
                break;
            }
        }
        let end = mark(&fleet);
        if churning {
            // Start no more churners; those present leave on their schedule, under load.
            for w in &mut fleet.workers {
                w.send(&subscriber::Command::Churn { on: false });
            }
            let deadline =
                Instant::now() + Duration::from_secs_f64(args.churn_hold.max(0.0) + 25.0);
            while fleet.sum().churn.active > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            say(&format!(
                "churn: stopped, {} still present",
                fleet.sum().churn.active
            ));
        }
        (Some(start), Some(end))
    } else {
        (None, None)
    };
    if measured {
        live.stop.store(true, Ordering::Relaxed);
    }
    let totals: PublisherTotals = publisher_thread
        .join()
        .map_err(|_| "the publisher thread panicked")?;

    // Drain: wait for what was accepted to arrive at every node's subscribers, duplicates
    // left out (no progress for 3 s, or 30 s at most).
    let expected: u64 = (0..publishers)
        .flat_map(|p| (0..channels).map(move |c| (p, c)))
        .map(|(p, c)| totals.accepted[(p * channels + c) as usize] * pub_spec.subscribers_on(c))
        .sum();
    let owed = owed_per_target(
        args.subscribers,
        targets.len(),
        channels,
        publishers,
        &totals.accepted,
    );
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last_change = (Instant::now(), delivered.load(Ordering::Relaxed));
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = delivered.load(Ordering::Relaxed);
        let arrived = per_target.unique().iter().zip(&owed).all(|(u, o)| u >= o);
        if arrived && now == fleet.sum().delivered {
            break;
        }
        if now != last_change.1 {
            last_change = (Instant::now(), now);
        }
        if last_change.0.elapsed() > Duration::from_secs(3) || Instant::now() > drain_deadline {
            say(&format!(
                "drain: stopped waiting at {now} of {expected} deliveries"
            ));
            break;
        }
    }
    relay.0.store(true, Ordering::Relaxed);
    let _ = relay.1.join();
    let nodes_end = sample_each(&args.server_pids);
    rss.see(nodes_end.as_ref());
    let backplane_end = sample(args.backplane_pid);

    // Collect the workers' totals.
    let accepted = totals.accepted.clone();
    for w in &mut fleet.workers {
        w.send(&subscriber::Command::Stop {
            accepted: accepted.clone(),
        });
    }
    let collect_deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = SeqCounts::default();
    let mut latency = Latency::default();
    let mut node_counts = vec![SeqCounts::default(); targets.len()];
    let mut node_latency: Vec<Latency> = targets.iter().map(|_| Latency::default()).collect();
    let mut errors: Vec<String> = totals.problems.clone();
    if totals.unanswered > 0 {
        errors.push(format!(
            "{} broadcasts unanswered when the publishers stopped waiting (not counted as accepted)",
            totals.unanswered
        ));
    }
    let mut codes = std::collections::BTreeMap::new();
    let mut unstamped = 0;
    let mut churn_counts = crate::churn::ChurnCounts::default();
    let mut churn_errors: Vec<String> = Vec::new();
    for w in &mut fleet.workers {
        let fin = loop {
            {
                let s = w.state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(f) = &s.fin {
                    break Some(f.clone());
                }
                if s.ended.is_some() {
                    break None;
                }
            }
            if Instant::now() > collect_deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match fin {
            Some(f) => {
                counts.merge(&f.counts);
                let mut l = Latency::default();
                l.add_buckets(&f.latency);
                latency.merge(&l);
                for ((c, l), t) in node_counts
                    .iter_mut()
                    .zip(&mut node_latency)
                    .zip(&f.per_target)
                {
                    c.merge(&t.counts);
                    l.add_buckets(&t.latency);
                }
                errors.extend(f.errors);
                unstamped += f.unstamped;
                churn_counts.merge(&f.churn);
                churn_errors.extend(f.churn_errors);
                for (code, n) in f.close_codes {
                    *codes.entry(code).or_insert(0u64) += n;
                }
            }
            None => errors.push("a worker gave no totals".into()),
        }
        let _ = w.child.wait();
    }
    if unstamped > 0 {
        errors.push(format!("{unstamped} messages without a stamp"));
    }
    errors.truncate(12);
    // Churn errors come after, so that the subscribers' own stay in view.
    errors.extend(churn_errors.into_iter().take(8));

    let closed = fleet.sum().closed;
    let machine_busy_percent = match (&start, &end) {
        (Some(a), Some(b)) => match (a.machine, b.machine) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                (busy1 - busy0) as f64 * 100.0 / (total1 - total0) as f64
            }
            _ => 0.0,
        },
        _ => 0.0,
    };
    let (window_s, window_deliveries, window_accepted, client_cpu) = match (&start, &end) {
        (Some(a), Some(b)) => (
            b.at.duration_since(a.at).as_secs_f64(),
            b.delivered - a.delivered,
            b.accepted - a.accepted,
            b.client_cpu - a.client_cpu,
        ),
        _ => (0.0, 0, 0, 0.0),
    };
    let churn_window = match (&start, &end) {
        (Some(a), Some(b)) => b.churn_subscribed - a.churn_subscribed,
        _ => 0,
    };
    let per_sec = |n: u64| {
        if window_s > 0.0 {
            n as f64 / window_s
        } else {
            0.0
        }
    };
    let server_connected = nodes_connected.as_deref().map(total);
    let server = args.server_pids.first().map(|&pid| {
        ServerReadings {
            before: server_before,
            connected: server_connected,
            start: start.as_ref().and_then(|m| m.server),
            end: end.as_ref().and_then(|m| m.server),
            last: nodes_end.as_deref().map(total),
            rss_max_seen: rss.total,
        }
        .figures(pid, window_s, window_deliveries, setup.ready)
    });

    // A cluster: each node's share.
    let n = targets.len();
    let nodes = if n > 1 {
        let shares = subscribers_per_target(args.subscribers, n);
        let node_of = |samples: Option<&Vec<ProcSample>>, k: usize| samples?.get(k).copied();
        (0..n)
            .map(|k| {
                // Subscriber i is on node i % n and channel i % channels.
                let subscribers = shares[k] as u32;
                let owed = owed[k];
                let window = match (&start, &end) {
                    (Some(a), Some(b)) => {
                        let at = |m: &Mark| m.per_target.get(k).copied().unwrap_or(0);
                        at(b).saturating_sub(at(a))
                    }
                    _ => 0,
                };
                let c = node_counts[k];
                NodeFigures {
                    url: args.urls[k].clone(),
                    subscribers,
                    deliveries_expected: owed,
                    deliveries: c.received,
                    deliveries_per_second: per_sec(window),
                    lost: c.lost,
                    duplicated: c.duplicated,
                    reordered: c.reordered,
                    latency: node_latency[k].summary(),
                    server: args
                        .server_pids
                        .get(k)
                        .filter(|_| args.server_pids.len() == n)
                        .map(|&pid| {
                            ServerReadings {
                                before: node_of(nodes_before.as_ref(), k),
                                connected: node_of(nodes_connected.as_ref(), k),
                                start: node_of(start.as_ref().and_then(|m| m.nodes.as_ref()), k),
                                end: node_of(end.as_ref().and_then(|m| m.nodes.as_ref()), k),
                                last: node_of(nodes_end.as_ref(), k),
                                rss_max_seen: rss.nodes.get(k).copied().unwrap_or(0),
                            }
                            .figures(
                                pid,
                                window_s,
                                window,
                                subscribers,
                            )
                        }),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let backplane = args.backplane_pid.map(|pid| {
        let cpu = match (
            start.as_ref().and_then(|m| m.backplane),
            end.as_ref().and_then(|m| m.backplane),
        ) {
            (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
            _ => 0.0,
        };
        BackplaneFigures {
            pid,
            cpu_seconds: cpu,
            cpu_percent: quotient(cpu * 100.0, window_s),
            cpu_us_per_publish: quotient(cpu * 1e6, window_accepted as f64),
            rss_before_kib: backplane_before.map_or(0, |s| s.rss_kib),
            rss_end_kib: backplane_end.map_or(0, |s| s.rss_kib),
            peak_rss_kib: backplane_end.map_or(0, |s| s.peak_rss_kib),
        }
    });
    Ok(RunResult {
        label: args.label.clone(),
        server_name: args.server_name.clone(),
        command: command_line(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        // Not empty: `targets` has one entry per URL, and it has a first.
        url: args.urls[0].clone(),
        subscribers: args.subscribers,
        channels,
        publishers,
        rate: args.rate,
        payload: args.payload,
        duration_s: window_s,
        processes,
        threads: args.threads.max(1),
        setup,
        load: LoadFigures {
            publishes_sent: totals.sent,
            publishes_accepted: totals.accepted.iter().sum(),
            publish_errors: totals.errors,
            publishes_per_second: per_sec(window_accepted),
            deliveries_expected: expected,
            deliveries: counts.received,
            deliveries_per_second: per_sec(window_deliveries),
            lost: counts.lost,
            duplicated: counts.duplicated,
            reordered: counts.reordered,
            subscribers_closed: closed,
            close_codes: codes.into_iter().collect(),
        },
        latency: latency.summary(),
        server,
        nodes,
        backplane,
        client: ClientFigures {
            cpu_seconds: client_cpu,
            us_per_delivery: if window_deliveries > 0 {
                client_cpu * 1e6 / window_deliveries as f64
            } else {
                0.0
            },
            machine_busy_percent,
        },
        errors,
        commit: args.commit.clone(),
        churn: churning.then(|| ChurnFigures {
            rate: args.churn,
            hold_s: args.churn_hold,
            subscribed_per_second: per_sec(churn_window),
            counts: churn_counts,
        }),
        memory: MemoryTrend::from_series(&series),
        series,
    })
}

/// This run's command line, with the binary named relative to the workspace when it
/// was built there (`target/release/rocket-bench`).
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(exe) = args.first_mut()
        && let Some(i) = exe.find("target/")
    {
        *exe = exe[i..].to_owned();
    }
    args.join(" ")
}

fn shutdown(fleet: &mut Fleet) {
    for w in &mut fleet.workers {
        w.send(&subscriber::Command::Stop {
            accepted: Vec::new(),
        });
    }
    for w in &mut fleet.workers {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = w.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_control_goes_by_the_slowest_node() {
        assert_eq!(subscribers_per_target(1000, 3), [334, 333, 333]);
        assert_eq!(subscribers_per_target(2, 3), [1, 1, 0]);
        // One node: the total as it is.
        assert_eq!(paced_by_slowest(5000, &[5000], &[1000]), 5000);
        // Three nodes, node 3 behind by 100 messages per subscriber: as if all were.
        let shares = [334, 333, 333];
        let counts = [334 * 500, 333 * 500, 333 * 400];
        let total = counts.iter().sum();
        assert_eq!(paced_by_slowest(total, &counts, &shares), 400_000);
        // In step: the total.
        let counts = [334 * 500, 333 * 500, 333 * 500];
        assert_eq!(paced_by_slowest(500_000, &counts, &shares), 500_000);
        // A node without subscribers does not hold the others back.
        assert_eq!(paced_by_slowest(20, &[10, 10, 0], &[1, 1, 0]), 20);
    }

    #[test]
    fn owed_deliveries_per_node() {
        // 2 publishers x 3 channels, 7 subscribers on 2 nodes.
        let accepted = [1, 2, 3, 10, 20, 30];
        // Node 0: subscribers 0, 2, 4, 6 on channels 0, 2, 1, 0; node 1: 1, 3, 5 on 1, 0, 2.
        let per_channel = [11, 22, 33];
        assert_eq!(
            owed_per_target(7, 2, 3, 2, &accepted),
            [
                per_channel[0] + per_channel[2] + per_channel[1] + per_channel[0],
                per_channel[1] + per_channel[0] + per_channel[2]
            ]
        );
        assert_eq!(
            owed_per_target(7, 1, 3, 2, &accepted),
            [11 * 3 + 22 * 2 + 33 * 2]
        );
    }

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:9772/echo").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9772".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:9772", "/echo")
        );
        let t = parse_url("ws://127.0.0.1:9000").unwrap();
        assert_eq!((t.path.as_str(), t.tls), ("/", false));
        let t = parse_url("wss://127.0.0.1:9000/x").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str(), t.tls), (9000, "/x", true));
        assert_eq!(parse_url("wss://127.0.0.1/x").unwrap().addr.port(), 443);
        assert_eq!(parse_url("ws://[::1]/x").unwrap().addr.port(), 80);
        assert_eq!(parse_url("ws://[::1]:9000/x").unwrap().addr.port(), 9000);
        assert!(parse_url("http://127.0.0.1:9000/x").is_err());
    }
}
