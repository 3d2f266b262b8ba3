//! The figures of one run, as printed in the summary table and written with `--json`.

use serde::{Deserialize, Serialize};

use crate::churn::ChurnCounts;
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
    /// The git commit the server was built from (`--commit`), when given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    /// Subscribers that came and went during the run (`--churn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnFigures>,
    /// The server's RSS over the measured window (`--series`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryTrend>,
    /// One reading of the server per second of the measured window (`--series`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesRow>,
}

/// The churners of a run: connects, leaves and what went wrong.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ChurnFigures {
    /// Churners started per second (all workers together).
    pub rate: f64,
    /// Seconds each churner stayed subscribed.
    pub hold_s: f64,
    /// Churners subscribed per second over the measured window.
    pub subscribed_per_second: f64,
    /// The counters, whole run.
    pub counts: ChurnCounts,
}

/// One reading of the server, a second apart: `[seconds since the measurement began,
/// RSS in KiB, CPU in percent of one core over the last interval, deliveries per second
/// to the run's subscribers over the last interval, churners subscribed so far]`. An
/// array rather than an object keeps an hour of readings small.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesRow(pub f64, pub u64, pub f64, pub f64, pub u64);

impl SeriesRow {
    /// Seconds since the measurement began.
    pub fn t_s(&self) -> f64 {
        self.0
    }

    /// The server's RSS, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.1
    }
}

/// The server's RSS over the measured window, from its [`SeriesRow`]s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryTrend {
    /// RSS at the start of the measured window (after the warm-up), KiB.
    pub start_kib: u64,
    /// RSS at the reading nearest the middle of the window, KiB.
    pub middle_kib: u64,
    /// RSS at the end of the window, KiB.
    pub end_kib: u64,
    /// The lowest reading, KiB.
    pub min_kib: u64,
    /// The highest reading, KiB.
    pub max_kib: u64,
    /// Least-squares slope of RSS against time over the whole window, KiB per hour.
    pub slope_kib_per_hour: f64,
    /// The same over the second half of the window only, KiB per hour.
    pub slope_second_half_kib_per_hour: f64,
}

impl MemoryTrend {
    /// The trend of `rows` (`None` with fewer than two readings).
    pub fn from_series(rows: &[SeriesRow]) -> Option<Self> {
        if rows.len() < 2 {
            return None;
        }
        let first = rows[0].t_s();
        let last = rows[rows.len() - 1].t_s();
        let mid_t = (first + last) / 2.0;
        let middle = rows
            .iter()
            .min_by(|a, b| (a.t_s() - mid_t).abs().total_cmp(&(b.t_s() - mid_t).abs()))?;
        let points = |rows: &[SeriesRow]| -> Vec<(f64, f64)> {
            rows.iter()
                .map(|r| (r.t_s() / 3600.0, r.rss_kib() as f64))
                .collect()
        };
        let second_half: Vec<SeriesRow> =
            rows.iter().copied().filter(|r| r.t_s() >= mid_t).collect();
        Some(Self {
            start_kib: rows[0].rss_kib(),
            middle_kib: middle.rss_kib(),
            end_kib: rows[rows.len() - 1].rss_kib(),
            min_kib: rows.iter().map(SeriesRow::rss_kib).min()?,
            max_kib: rows.iter().map(SeriesRow::rss_kib).max()?,
            slope_kib_per_hour: slope(&points(rows)),
            slope_second_half_kib_per_hour: slope(&points(&second_half)),
        })
    }
}

/// Puts each array of `json` that holds no array or object on one line: `[\n  1,\n  2\n]`
/// becomes `[1, 2]`. Strings are copied as they are.
fn one_line_leaf_arrays(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut i = 0;
    // Copies the string starting at `i` (a quote) and returns the index after it.
    let string_end = |mut j: usize| {
        j += 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => return j + 1,
                _ => j += 1,
            }
        }
        bytes.len()
    };
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(i);
                out.push_str(&json[i..end]);
                i = end;
            }
            b'[' => {
                // Find the matching `]` if nothing nested comes first.
                let mut j = i + 1;
                let mut leaf = None;
                while j < bytes.len() {
                    match bytes[j] {
                        b'"' => j = string_end(j),
                        b'[' | b'{' => break,
                        b']' => {
                            leaf = Some(j);
                            break;
                        }
                        _ => j += 1,
                    }
                }
                match leaf {
                    Some(end) => {
                        let mut items = Vec::new();
                        let mut k = i + 1;
                        let mut item_start = k;
                        while k < end {
                            match bytes[k] {
                                b'"' => k = string_end(k),
                                b',' => {
                                    items.push(json[item_start..k].trim());
                                    k += 1;
                                    item_start = k;
                                }
                                _ => k += 1,
                            }
                        }
                        let last = json[item_start..end].trim();
                        if !last.is_empty() {
                            items.push(last);
                        }
                        out.push('[');
                        out.push_str(&items.join(", "));
                        out.push(']');
                        i = end + 1;
                    }
                    None => {
                        out.push('[');
                        i += 1;
                    }
                }
            }
            _ => {
                let next = json[i..].find(['"', '[']).map_or(json.len(), |n| i + n);
                out.push_str(&json[i..next]);
                i = next;
            }
        }
    }
    out
}

/// The least-squares slope of `points` (`dy/dx`; 0 when x does not vary).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
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
    /// The result as pretty JSON, with every array of plain values on one line (an hour of
    /// [`SeriesRow`]s is then an hour of lines, not five times as many).
    pub fn to_json(&self) -> Result<String, String> {
        let pretty = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        Ok(one_line_leaf_arrays(&pretty))
    }

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
        if let Some(c) = &self.churn {
            let n = &c.counts;
            row(
                "churn",
                format!(
                    "{} started at {}/s, {} subscribed ({:.1}/s), {} failed, {} dropped; left: {} unsubscribe+close, {} close, {} disconnect; {} leave timeouts; {} received, {} gaps, {} out of order",
                    n.started,
                    c.rate,
                    n.subscribed,
                    c.subscribed_per_second,
                    n.failed,
                    n.dropped,
                    n.left[0],
                    n.left[1],
                    n.left[2],
                    n.leave_timeouts,
                    n.delivered,
                    n.gaps,
                    n.out_of_order
                ),
            );
        }
        if let Some(m) = &self.memory {
            row(
                "server RSS trend",
                format!(
                    "start {} KiB, middle {} KiB, end {} KiB (min {}, max {}); slope {:+.0} KiB/h, second half {:+.0} KiB/h ({} readings)",
                    m.start_kib,
                    m.middle_kib,
                    m.end_kib,
                    m.min_kib,
                    m.max_kib,
                    m.slope_kib_per_hour,
                    m.slope_second_half_kib_per_hour,
                    self.series.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise_around_it() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-12);
        assert!((slope(&[(0.0, 0.0), (1.0, 2.0), (2.0, 0.0), (3.0, 2.0)]) - 0.4).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), 0.0);
    }

    #[test]
    fn memory_trend_of_a_series() {
        // 10 KiB per second for the first half, flat afterwards.
        let rows: Vec<SeriesRow> = (0..=100)
            .map(|t| SeriesRow(f64::from(t), 1000 + 10 * t.min(50) as u64, 0.0, 0.0, 0))
            .collect();
        let m = MemoryTrend::from_series(&rows).unwrap();
        assert_eq!((m.start_kib, m.middle_kib, m.end_kib), (1000, 1500, 1500));
        assert_eq!((m.min_kib, m.max_kib), (1000, 1500));
        assert!(m.slope_kib_per_hour > 0.0);
        assert_eq!(m.slope_second_half_kib_per_hour, 0.0);
        assert!(MemoryTrend::from_series(&rows[..1]).is_none());
    }

    #[test]
    fn leaf_arrays_go_on_one_line() {
        let v =
            serde_json::json!({"a": [[1, 2], [3, 4]], "s": "x[\"]", "e": [], "o": [{"k": [5]}]});
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let short = one_line_leaf_arrays(&pretty);
        assert!(short.contains("[1, 2]") && short.contains("[5]"), "{short}");
        assert!(short.contains(r#""s": "x[\"]""#), "{short}");
        let back: serde_json::Value = serde_json::from_str(&short).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn series_rows_are_arrays_and_old_results_still_read() {
        let row = SeriesRow(1.5, 2048, 12.5, 100000.0, 7);
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            "[1.5,2048,12.5,100000.0,7]"
        );
        let old = serde_json::to_string(&RunResult::default()).unwrap();
        assert!(!old.contains("series"));
        let back: RunResult = serde_json::from_str(&old).unwrap();
        assert!(back.series.is_empty() && back.churn.is_none());
    }
}
