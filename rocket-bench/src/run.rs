//! A benchmark run: spawn the subscriber workers (this binary, re-executed), wait for
//! every subscriber to be set up, drive the publishers, drain, and collect the figures.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::message::now_us;
use crate::procfs::{self, ProcSample};
use crate::publisher::{Pace, PublisherLive, PublisherSpec, PublisherTotals, Publishers, Via};
use crate::result::{ClientFigures, LoadFigures, RunResult, ServerFigures, SetupFigures};
use crate::stats::{Latency, SeqCounts};
use crate::subscriber::{self, WorkerFinal, WorkerMsg, WorkerProgress, WorkerSpec};
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
    /// WebSocket URL of the server's hub: `ws://`, or `wss://` with `--ca`.
    #[arg(long, default_value = "ws://127.0.0.1:9772/echo")]
    pub url: String,
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
    /// PID of the server, to read its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
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
}

/// The URL split into what the sockets need.
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    /// `wss://`.
    tls: bool,
}

fn parse_url(url: &str) -> Result<Target, String> {
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
    Ok(Target {
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

impl Worker {
    fn spawn(spec: &WorkerSpec, delivered: Arc<AtomicU64>) -> Result<Self, String> {
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
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                match serde_json::from_str::<WorkerMsg>(&line) {
                    Ok(WorkerMsg::Progress(p)) => {
                        delivered.fetch_add(p.delivered - last.min(p.delivered), Ordering::Relaxed);
                        last = p.delivered;
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
            total.ready += p.ready;
            total.failed += p.failed;
            total.closed += p.closed;
            total.cpu_seconds += p.cpu_seconds;
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

fn self_cpu() -> f64 {
    procfs::sample("self").map_or(0.0, |s| s.cpu_seconds)
}

/// Runs a benchmark and returns its figures.
pub fn run(args: &RunArgs) -> Result<RunResult, String> {
    let target = parse_url(&args.url)?;
    let ca = match (target.tls, &args.ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(ca.clone()),
        (true, None) => return Err(format!("{}: wss:// needs --ca FILE", args.url)),
    };
    // Checked here, so that a bad file fails the run before any worker starts.
    let tls = ca
        .as_deref()
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
    let sources: Vec<IpAddr> = if args.sources > 1 && target.addr.ip().is_loopback() {
        (1..=args.sources)
            .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
            .collect()
    } else {
        Vec::new()
    };
    let server_before = sample(args.server_pid);
    let overflows_before = procfs::listen_overflows();
    let mut rss_max_seen = server_before.map_or(0, |s| s.rss_kib);

    // Subscribers, in worker processes.
    let delivered = Arc::new(AtomicU64::new(0));
    let mut fleet = Fleet {
        workers: Vec::new(),
        delivered: Arc::clone(&delivered),
    };
    for w in 0..processes {
        let first = args.subscribers * w / processes;
        let count = args.subscribers * (w + 1) / processes - first;
        let spec = WorkerSpec {
            addr: target.addr,
            host: target.host.clone(),
            path: target.path.clone(),
            user: args.user.clone(),
            secret: args.secret.clone(),
            first,
            count,
            channels,
            publishers,
            threads: args.threads.max(1),
            concurrency: args.concurrency.max(1),
            sources: sources.clone(),
            ca: ca.clone(),
        };
        fleet
            .workers
            .push(Worker::spawn(&spec, Arc::clone(&fleet.delivered))?);
    }
    say(&format!(
        "{} subscribers in {processes} worker process(es) connecting to {}",
        args.subscribers, args.url
    ));
    let setup_deadline = Instant::now() + Duration::from_secs_f64(args.setup_timeout);
    let mut last_print = Instant::now();
    let setup_seconds = loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(why) = fleet.broken() {
            shutdown(&mut fleet);
            return Err(why);
        }
        if let Some(s) = sample(args.server_pid) {
            rss_max_seen = rss_max_seen.max(s.rss_kib);
        }
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

    let mut server_connected = None;
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
            server_connected = sample(args.server_pid);
            if let Some(s) = server_connected {
                rss_max_seen = rss_max_seen.max(s.rss_kib);
                say(&format!(
                    "server RSS with every connection set up: {} KiB",
                    s.rss_kib
                ));
            }
            let hold_until = Instant::now() + Duration::from_secs_f64(args.hold.max(0.0));
            while Instant::now() < hold_until {
                std::thread::sleep(Duration::from_millis(200));
                if let Some(s) = sample(args.server_pid) {
                    rss_max_seen = rss_max_seen.max(s.rss_kib);
                }
            }
            say("liveness check: one message to every channel");
            (Pace::Once, false)
        }
    };

    // Publish on their own thread while this one samples and prints.
    // A slow server may take long to answer a window of broadcasts to many subscribers.
    let drain = Duration::from_secs(30);
    let publisher_thread = {
        let live = Arc::clone(&live);
        std::thread::spawn(move || publishers_ready.run(pace, &live, drain))
    };
    let relay = {
        // Feed the workers' delivery counts to the publishers' flow control.
        let (live, delivered) = (Arc::clone(&live), Arc::clone(&delivered));
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let h = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                live.delivered
                    .store(delivered.load(Ordering::Relaxed), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        (done, h)
    };

    struct Mark {
        at: Instant,
        delivered: u64,
        accepted: u64,
        server: Option<ProcSample>,
        client_cpu: f64,
        machine: Option<(u64, u64)>,
    }
    let mark = |fleet: &Fleet| Mark {
        at: Instant::now(),
        delivered: delivered.load(Ordering::Relaxed),
        accepted: live.accepted.load(Ordering::Relaxed),
        server: sample(args.server_pid),
        client_cpu: self_cpu() + fleet.sum().cpu_seconds,
        machine: procfs::machine_jiffies(),
    };
    let (start, end) = if measured {
        std::thread::sleep(Duration::from_secs_f64(args.warmup.max(0.0)));
        let from_us = now_us();
        for w in &mut fleet.workers {
            w.send(&subscriber::Command::Measure { from_us });
        }
        // Workers report every 20 ms: let the counts catch up with the mark.
        std::thread::sleep(Duration::from_millis(40));
        let start = mark(&fleet);
        let until = start.at + Duration::from_secs_f64(args.duration.max(0.1));
        let mut prev = (start.at, start.delivered, start.accepted, start.server);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1).min(until - Instant::now()));
            let now = mark(&fleet);
            let dt = now.at.duration_since(prev.0).as_secs_f64().max(1e-9);
            let cpu = match (now.server, prev.3) {
                (Some(a), Some(b)) => {
                    rss_max_seen = rss_max_seen.max(a.rss_kib);
                    format!(
                        ", server {:.0}% CPU, {} KiB",
                        (a.cpu_seconds - b.cpu_seconds) / dt * 100.0,
                        a.rss_kib
                    )
                }
                _ => String::new(),
            };
            let p = fleet.sum();
            say(&format!(
                "publishes accepted {:.0}/s, deliveries received {:.0}/s, lag {} msgs, {} closed{cpu}",
                (now.accepted - prev.2) as f64 / dt,
                (now.delivered - prev.1) as f64 / dt,
                live.sent.load(Ordering::Relaxed)
                    - now.accepted.min(live.sent.load(Ordering::Relaxed)),
                p.closed,
            ));
            prev = (now.at, now.delivered, now.accepted, now.server);
            if let Some(why) = fleet.broken() {
                say(&format!("a worker failed: {why}"));
                break;
            }
        }
        let end = mark(&fleet);
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

    // Drain: wait for what was accepted to arrive (no progress for 3 s, or 30 s at most).
    let expected: u64 = (0..publishers)
        .flat_map(|p| (0..channels).map(move |c| (p, c)))
        .map(|(p, c)| totals.accepted[(p * channels + c) as usize] * pub_spec.subscribers_on(c))
        .sum();
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last_change = (Instant::now(), delivered.load(Ordering::Relaxed));
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = delivered.load(Ordering::Relaxed);
        if now >= expected && now == fleet.sum().delivered {
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
    let server_end = sample(args.server_pid);

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
    let mut errors: Vec<String> = totals.problems.clone();
    if totals.unanswered > 0 {
        errors.push(format!(
            "{} broadcasts unanswered when the publishers stopped waiting (not counted as accepted)",
            totals.unanswered
        ));
    }
    let mut codes = std::collections::BTreeMap::new();
    let mut unstamped = 0;
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
                errors.extend(f.errors);
                unstamped += f.unstamped;
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
    let (window_s, window_deliveries, window_accepted, server_cpu, client_cpu) =
        match (&start, &end) {
            (Some(a), Some(b)) => (
                b.at.duration_since(a.at).as_secs_f64(),
                b.delivered - a.delivered,
                b.accepted - a.accepted,
                match (a.server, b.server) {
                    (Some(x), Some(y)) => Some(y.cpu_seconds - x.cpu_seconds),
                    _ => None,
                },
                b.client_cpu - a.client_cpu,
            ),
            _ => (0.0, 0, 0, None, 0.0),
        };
    let per_sec = |n: u64| {
        if window_s > 0.0 {
            n as f64 / window_s
        } else {
            0.0
        }
    };
    let server = args.server_pid.map(|pid| {
        let before = server_before.unwrap_or_default();
        let connected = server_connected.or(start.as_ref().and_then(|m| m.server));
        let connected_kib = connected.map_or(0, |s| s.rss_kib);
        let cpu = server_cpu.unwrap_or(0.0);
        ServerFigures {
            pid,
            cpu_seconds: cpu,
            cpu_percent: if window_s > 0.0 {
                cpu / window_s * 100.0
            } else {
                0.0
            },
            deliveries_per_cpu_second: if cpu > 0.0 {
                window_deliveries as f64 / cpu
            } else {
                0.0
            },
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected_kib,
            rss_per_connection_kib: connected_kib.saturating_sub(before.rss_kib) as f64
                / f64::from(setup.ready.max(1)),
            rss_max_seen_kib: rss_max_seen.max(server_end.map_or(0, |s| s.rss_kib)),
            peak_rss_kib: server_end.map_or(0, |s| s.peak_rss_kib),
        }
    });
    Ok(RunResult {
        label: args.label.clone(),
        server_name: args.server_name.clone(),
        command: command_line(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        url: args.url.clone(),
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
