//! CPU time and memory of a process, from `/proc/PID/stat` and `/proc/PID/status`.

use serde::{Deserialize, Serialize};

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every Linux ABI that
/// this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads process `pid` (`"self"` works too).
pub fn sample(pid: &str) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc format");
    let cpu_seconds = parse_stat_cpu(&stat).ok_or_else(bad)?;
    let (rss_kib, peak_rss_kib) = parse_status_rss(&status);
    Ok(ProcSample {
        cpu_seconds,
        rss_kib,
        peak_rss_kib,
    })
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its closing parenthesis.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` and `VmHWM` of a `/proc/PID/status` text, in KiB (0 when absent).
pub fn parse_status_rss(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Busy and total jiffies of the whole machine (all cores), from `/proc/stat`.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    parse_machine_jiffies(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The `cpu` line of `/proc/stat`: (busy, total), where idle and iowait are not busy.
pub fn parse_machine_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    // Niced work counts as busy: with autogroup scheduling a niced job in another session
    // still takes its share of the cores.
    let total: u64 = v.iter().take(8).sum();
    let idle: u64 = [3, 4].iter().map(|&i| v.get(i).copied().unwrap_or(0)).sum();
    Some((total - idle, total))
}

/// `TcpExt: ListenOverflows` of `/proc/net/netstat`: connections dropped (their SYN or
/// final ACK ignored, to be retried a second later) because a listener's accept queue was
/// full. Machine-wide.
pub fn listen_overflows() -> Option<u64> {
    parse_listen_overflows(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// Finds `ListenOverflows` in the `TcpExt:` header and value lines.
pub fn parse_listen_overflows(netstat: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat =
            "4242 (rocket (cli) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.25));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_memory_lines() {
        let status = "Name:\trocket-cli\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), (10240, 20480));
        assert_eq!(parse_status_rss(""), (0, 0));
    }

    #[test]
    fn machine_cpu_line() {
        let stat = "cpu  100 5 50 800 20 3 7 15 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_jiffies(stat), Some((180, 1000)));
        assert_eq!(parse_machine_jiffies("intr 1"), None);
    }

    #[test]
    fn listen_overflows_line() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 1123 1123\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_listen_overflows(netstat), Some(1123));
        assert_eq!(parse_listen_overflows("IpExt: a\nIpExt: 1\n"), None);
    }

    #[test]
    fn reads_itself() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
    }
}
