//! The figures of one run, as printed in the summary table and written with `--json`.

use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

/// Everything one run measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunResult {
    /// A free label (`--label`), e.g. the scenario's name.
    pub label: String,
    /// Which server was measured (`--server-name`), e.g. `rocket`.
    pub server_name: String,
    /// The command line of this run.
    pub command: String,
    /// `load`, `idle` or `storm`.
    pub mode: String,
    /// The server URL (in a cluster run, the node the publishers use).
    pub url: String,
    /// Subscribers asked for.
    pub subscribers: u32,
    /// Channels.
    pub channels: u32,
    /// Publishers.
    pub publishers: u32,
    /// Messages per second per publisher; 0 means flat out.
    pub rate: f64,
    /// Bytes of `data` per message.
    pub payload: usize,
    /// Seconds of measured publishing.
    pub duration_s: f64,
    /// Subscriber processes and threads per process.
    pub processes: u32,
    /// Threads per subscriber process.
    pub threads: u32,
    /// Connection setup.
    pub setup: SetupFigures,
    /// Publishing and delivery (zero for idle and storm runs, but for the liveness check).
    pub load: LoadFigures,
    /// Publish-to-receive latency.
    pub latency: LatencySummary,
    /// The server process, when `--server-pid` was given; in a cluster run, every node's
    /// process added up.
    pub server: Option<ServerFigures>,
    /// A cluster run (several `--url`): each node, in the order of the URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    /// The cluster's backplane process (`--backplane-pid`), measured apart from the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backplane: Option<BackplaneFigures>,
    /// The load generator's own CPU (all its processes).
    pub client: ClientFigures,
    /// The first few errors seen.
    pub errors: Vec<String>,
}

/// How fast connections were set up.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SetupFigures {
    /// Subscribers connected, logged in and subscribed.
    pub ready: u32,
    /// Subscribers whose setup failed.
    pub failed: u32,
    /// Seconds from the first connect to the last subscription.
    pub seconds: f64,
    /// Connections accepted + authenticated + subscribed per second.
    pub per_second: f64,
    /// Connection attempts the kernel dropped meanwhile because a listener's accept queue
    /// was full (`ListenOverflows`, machine-wide); each costs that connection a 1 s retry.
    #[serde(default)]
    pub listen_overflows: u64,
}

/// Publishing and delivery counts and rates.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LoadFigures {
    /// Broadcasts written by the publishers.
    pub publishes_sent: u64,
    /// Broadcasts the server accepted (answered `broadcasted`).
    pub publishes_accepted: u64,
    /// Broadcasts answered with an error.
    pub publish_errors: u64,
    /// Broadcasts accepted per second over the measured window (the publishers' side).
    pub publishes_per_second: f64,
    /// Deliveries that every accepted broadcast owed to the subscribers.
    pub deliveries_expected: u64,
    /// Deliveries received by subscribers (the whole run, drain included).
    pub deliveries: u64,
    /// Deliveries received per second over the measured window (the subscribers' side).
    pub deliveries_per_second: f64,
    /// Messages never received.
    pub lost: u64,
    /// Messages received twice.
    pub duplicated: u64,
    /// Messages received after a later one of the same publisher.
    pub reordered: u64,
    /// Subscribers that were ready and then lost their connection.
    pub subscribers_closed: u32,
    /// Close codes received, with counts.
    pub close_codes: Vec<(u16, u64)>,
}

/// One node of a cluster run and the subscribers connected to it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeFigures {
    /// The node's URL.
    pub url: String,
    /// Subscribers that connect to it (subscriber `i` of `N` nodes is on node `i mod N`).
    pub subscribers: u32,
    /// Deliveries that every accepted broadcast owed to its subscribers.
    pub deliveries_expected: u64,
    /// Deliveries its subscribers received (the whole run, drain included).
    pub deliveries: u64,
    /// Deliveries its subscribers received per second over the measured window.
    pub deliveries_per_second: f64,
    /// Messages its subscribers never received.
    pub lost: u64,
    /// Messages its subscribers received twice.
    pub duplicated: u64,
    /// Messages its subscribers received after a later one of the same publisher.
    pub reordered: u64,
    /// Publish-to-receive latency of its subscribers.
    pub latency: LatencySummary,
    /// Its process (with one `--server-pid` per node); deliveries per CPU-second count
    /// the deliveries to its own subscribers only.
    pub server: Option<ServerFigures>,
}

/// The backplane process (Redis), from `/proc/PID`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct BackplaneFigures {
    /// Its PID.
    pub pid: u32,
    /// CPU seconds over the measured window.
    pub cpu_seconds: f64,
    /// CPU use over the measured window, in percent of one core.
    pub cpu_percent: f64,
    /// CPU microseconds per broadcast accepted over the measured window.
    pub cpu_us_per_publish: f64,
    /// RSS before the run's connections opened, KiB.
    pub rss_before_kib: u64,
    /// RSS at the end of the run, KiB.
    pub rss_end_kib: u64,
    /// Its peak RSS since it started (`VmHWM`) at the end, KiB.
    pub peak_rss_kib: u64,
}

/// The server process, from `/proc/PID` (or, in a cluster run, every node's process
/// added up: CPU, RSS, and the sum of their peaks).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServerFigures {
    /// Its PID (the first node's, in a cluster run).
    pub pid: u32,
    /// CPU seconds over the measured window.
    pub cpu_seconds: f64,
    /// CPU use over the measured window, in percent of one core.
    pub cpu_percent: f64,
    /// Deliveries received per server CPU-second over the measured window.
    pub deliveries_per_cpu_second: f64,
    /// RSS before the run's connections opened, KiB.
    pub rss_before_kib: u64,
    /// RSS with every connection set up and idle (after `--settle`), KiB.
    pub rss_connected_kib: u64,
    /// (RSS connected − RSS before) / ready connections, KiB.
    pub rss_per_connection_kib: f64,
    /// The highest RSS seen while the run went on, KiB.
    pub rss_max_seen_kib: u64,
    /// The process's peak RSS since it started (`VmHWM`) at the end, KiB.
    pub peak_rss_kib: u64,
}

/// The load generator's CPU.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ClientFigures {
    /// CPU seconds of all its processes over the measured window.
    pub cpu_seconds: f64,
    /// Client CPU microseconds per delivery over the measured window.
    pub us_per_delivery: f64,
    /// How busy the whole machine was over the measured window, in percent of all its
    /// cores (from `/proc/stat`; includes kernel work not charged to any process and any
    /// other job running meanwhile).
    #[serde(default)]
    pub machine_busy_percent: f64,
}

impl RunResult {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        row("server", format!("{} {}", self.server_name, self.url));
        row(
            "scenario",
            format!(
                "{} {}: {} subscribers, {} channels, {} publishers, {}, {} B data",
                self.mode,
                self.label,
                self.subscribers,
                self.channels,
                self.publishers,
                if self.rate > 0.0 {
                    format!("{} msg/s per publisher", self.rate)
                } else {
                    "flat out".into()
                },
                self.payload
            ),
        );
        let s = &self.setup;
        row(
            "connections",
            format!(
                "{} ready, {} failed, in {:.2} s = {:.0} connections/s (accepted+authenticated+subscribed); {} accept-queue overflows",
                s.ready, s.failed, s.seconds, s.per_second, s.listen_overflows
            ),
        );
        let l = &self.load;
        row(
            "publishes accepted/s",
            format!(
                "{:.0}  (publisher side: {} accepted of {} sent, {} errors)",
                l.publishes_per_second, l.publishes_accepted, l.publishes_sent, l.publish_errors
            ),
        );
        row(
            "deliveries received/s",
            format!(
                "{:.0}  (subscriber side: {} received of {} owed)",
                l.deliveries_per_second, l.deliveries, l.deliveries_expected
            ),
        );
        row(
            "lost / dup / reordered",
            format!(
                "{} / {} / {}   ({} subscribers closed{})",
                l.lost,
                l.duplicated,
                l.reordered,
                l.subscribers_closed,
                if l.close_codes.is_empty() {
                    String::new()
                } else {
                    format!(", close codes {:?}", l.close_codes)
                }
            ),
        );
        let t = &self.latency;
        row(
            "latency ms",
            format!(
                "p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                t.p50_ms, t.p99_ms, t.p999_ms, t.max_ms, t.count
            ),
        );
        if let Some(sv) = &self.server {
            row(
                if self.nodes.is_empty() {
                    "server CPU"
                } else {
                    "server CPU, all nodes"
                },
                format!(
                    "{:.2} s ({:.0}% of a core) -> {:.0} deliveries per server CPU-second",
                    sv.cpu_seconds, sv.cpu_percent, sv.deliveries_per_cpu_second
                ),
            );
            row(
                "server RSS",
                format!(
                    "{} KiB before, {} KiB connected = {:.2} KiB per connection; max seen {} KiB, peak (VmHWM) {} KiB",
                    sv.rss_before_kib,
                    sv.rss_connected_kib,
                    sv.rss_per_connection_kib,
                    sv.rss_max_seen_kib,
                    sv.peak_rss_kib
                ),
            );
        }
        for (k, n) in self.nodes.iter().enumerate() {
            let cpu = n.server.as_ref().map_or(String::new(), |sv| {
                format!(
                    "; {:.2} s CPU ({:.0}%) -> {:.0} per CPU-second; RSS max {} KiB",
                    sv.cpu_seconds,
                    sv.cpu_percent,
                    sv.deliveries_per_cpu_second,
                    sv.rss_max_seen_kib
                )
            });
            row(
                &format!("node {}", k + 1),
                format!(
                    "{}: {} subscribers, {:.0} deliveries/s ({} of {} owed), lost/dup/reordered {} / {} / {}, p99 {:.3} ms{cpu}",
                    n.url,
                    n.subscribers,
                    n.deliveries_per_second,
                    n.deliveries,
                    n.deliveries_expected,
                    n.lost,
                    n.duplicated,
                    n.reordered,
                    n.latency.p99_ms
                ),
            );
        }
        if let Some(b) = &self.backplane {
            row(
                "backplane",
                format!(
                    "pid {}: {:.2} s CPU ({:.0}% of a core) = {:.1} us per publish; RSS {} KiB before, {} KiB at the end",
                    b.pid,
                    b.cpu_seconds,
                    b.cpu_percent,
                    b.cpu_us_per_publish,
                    b.rss_before_kib,
                    b.rss_end_kib
                ),
            );
        }
        row(
            "client CPU",
            format!(
                "{:.2} s = {:.2} us per delivery ({} processes x {} threads)",
                self.client.cpu_seconds, self.client.us_per_delivery, self.processes, self.threads
            ),
        );
        row(
            "machine CPU",
            format!(
                "{:.0}% busy (all cores, everything running)",
                self.client.machine_busy_percent
            ),
        );
        for e in &self.errors {
            row("error", e.clone());
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}
