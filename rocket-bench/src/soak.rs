//! The "Soak" section of the report: long runs with subscriber churn and the server's RSS
//! read every second (`scripts/soak.sh`), from the soak results committed beside the plots
//! (`soak-RUNTIME.json`), so that regenerating the report keeps the section.
//!
//! The section sits between two markers, so `rocket-bench report --soak-only` can replace
//! it in an existing report without the results of the other scenarios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plot::{self, Series};
use crate::report::grouped;
use crate::result::RunResult;

/// The line that opens the section.
pub const BEGIN: &str =
    "<!-- soak: written by `rocket-bench report` from docs/bench/soak-*.json -->";
/// The line that closes the section.
pub const END: &str = "<!-- /soak -->";
/// The plot's file name, in the plots folder.
pub const PLOT: &str = "soak-rss.svg";

/// The soak results in `dir` (`soak-*.json`), tokio first, then by name.
pub fn load(dir: &Path) -> Result<Vec<(String, RunResult)>, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("soak-"))
        })
        .collect();
    paths.sort_by_key(|p| (!p.ends_with("soak-tokio.json"), p.clone()));
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let r: RunResult =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let runtime = path
                .file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches("soak-").to_owned())
                .unwrap_or_default();
            Ok((runtime, r))
        })
        .collect()
}

fn minutes(seconds: f64) -> String {
    if seconds >= 600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// `+12,498` / `-3,173`.
fn signed(x: f64) -> String {
    format!("{}{}", if x < 0.0 { "-" } else { "+" }, grouped(x.abs()))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The section, markers included; empty when there are no soak results. `plot_link` is
/// the plot's path relative to the report; the plot is drawn into `plots`.
pub fn section(
    runs: &[(String, RunResult)],
    plots: &Path,
    plot_link: &str,
    notes: Option<&Path>,
) -> Result<String, String> {
    if runs.is_empty() {
        return Ok(String::new());
    }
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    md.push_str("## Soak: long runs with subscriber churn (issue 14)\n\n");
    md.push_str(
        "A long run per runtime: `rocket-cli` on `scripts/bench.json`, one publisher at 100 \
         publishes/s to 1,000 subscribers on one channel (about 100,000 deliveries/s), while \
         *churners* come and go: each connects, logs in, subscribes to the same channel, \
         receives for a while and leaves, by `unsubscribe` then a close frame, by a close \
         frame, or by dropping the TCP connection, in turn. Loss, duplicates and reorders are \
         counted exactly for the 1,000 subscribers present throughout; churners are counted \
         apart (a churner that fails to connect or subscribe, or that the server closes, is an \
         error; while present, each checks that its sequence has no gap). The server's RSS \
         (`VmRSS` of `/proc/PID/status`) is read every second after a 1 s warm-up; the slope \
         is the least-squares fit over the whole window and over its second half. Run with \
         `scripts/soak.sh`.\n\n",
    );
    md.push_str(
        "| runtime | duration | commit | deliveries/s | publishes accepted | lost / dup / reordered | subscribers closed | churners subscribed / failed / dropped | churn leaves: unsubscribe+close / close / disconnect | churn gaps / out of order | server CPU | RSS start | RSS middle | RSS end | RSS slope | slope, second half |\n\
         |---|---:|---|---:|---:|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (runtime, r) in runs {
        let l = &r.load;
        let c = r.churn.as_ref().map(|c| c.counts).unwrap_or_default();
        let m = r.memory.unwrap_or_default();
        let cpu = r.server.as_ref().map_or(0.0, |s| s.cpu_percent);
        let _ = writeln!(
            md,
            "| {runtime} | {} | {} | {} | {} | {} / {} / {} | {} | {} / {} / {} | {} / {} / {} | {} / {} | {:.0}% | {} | {} | {} | {} KiB/h | {} KiB/h |",
            minutes(r.duration_s),
            if r.commit.is_empty() { "-" } else { &r.commit },
            grouped(l.deliveries_per_second),
            grouped(l.publishes_accepted as f64),
            l.lost,
            l.duplicated,
            l.reordered,
            l.subscribers_closed,
            grouped(c.subscribed as f64),
            c.failed,
            c.dropped,
            grouped(c.left[0] as f64),
            grouped(c.left[1] as f64),
            grouped(c.left[2] as f64),
            c.gaps,
            c.out_of_order,
            cpu,
            mib(m.start_kib),
            mib(m.middle_kib),
            mib(m.end_kib),
            signed(m.slope_kib_per_hour),
            signed(m.slope_second_half_kib_per_hour),
        );
    }
    md.push('\n');
    let series: Vec<Series> = runs
        .iter()
        .filter(|(_, r)| !r.series.is_empty())
        .map(|(runtime, r)| Series {
            name: format!("rocket-cli --runtime {runtime}"),
            points: r
                .series
                .iter()
                .map(|row| (row.t_s() / 60.0, row.rss_kib() as f64 / 1024.0))
                .collect(),
        })
        .collect();
    if !series.is_empty() {
        std::fs::create_dir_all(plots).map_err(|e| format!("{}: {e}", plots.display()))?;
        plot::rss_over_time(
            &plots.join(PLOT),
            &series,
            "Server RSS during the soak (100 publishes/s to 1,000 subscribers, with churn)",
        )?;
        let _ = writeln!(md, "![server RSS over the soak]({plot_link})\n");
    }
    for (runtime, r) in runs {
        let _ = writeln!(md, "{runtime}: `{}`\n", r.command);
        let errors: Vec<&String> = r.errors.iter().collect();
        if !errors.is_empty() {
            let _ = writeln!(md, "Errors reported by the {runtime} run:\n");
            for e in errors {
                let _ = writeln!(md, "- `{e}`");
            }
            md.push('\n');
        }
    }
    if let Some(notes) = notes
        && let Ok(text) = std::fs::read_to_string(notes)
    {
        md.push_str(text.trim_end());
        md.push_str("\n\n");
    }
    let _ = writeln!(md, "{END}");
    md.push('\n');
    Ok(md)
}

/// `report` with the section replaced by `section` (or, without markers, inserted before
/// the line `before` when present, else before `## Exact commands`, else at the end).
pub fn splice(report: &str, section: &str, before: Option<&str>) -> String {
    if let (Some(a), Some(b)) = (report.find(BEGIN), report.find(END))
        && a < b
    {
        let mut end = b + END.len();
        // The section's own blank line after the end marker.
        while report[end..].starts_with('\n') && end - b - END.len() < 2 {
            end += 1;
        }
        return format!("{}{section}{}", &report[..a], &report[end..]);
    }
    let at = before
        .and_then(|line| find_line(report, line))
        .or_else(|| find_line(report, "## Exact commands"))
        .unwrap_or(report.len());
    format!("{}{section}{}", &report[..at], &report[at..])
}

/// Where the line `line` starts in `text`.
fn find_line(text: &str, line: &str) -> Option<usize> {
    let line = line.trim_end();
    if line.is_empty() {
        return None;
    }
    let mut at = 0;
    for l in text.split_inclusive('\n') {
        if l.trim_end() == line {
            return Some(at);
        }
        at += l.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{MemoryTrend, SeriesRow};

    #[test]
    fn splice_replaces_between_markers_or_inserts() {
        let section = format!("{BEGIN}\nnew\n{END}\n\n");
        let report = "# R\n\n## Notes\n\nx\n\n## Exact commands\n\ny\n";
        let once = splice(report, &section, Some("## Notes"));
        assert_eq!(
            once,
            format!("# R\n\n{BEGIN}\nnew\n{END}\n\n## Notes\n\nx\n\n## Exact commands\n\ny\n")
        );
        let other = format!("{BEGIN}\nother\n{END}\n\n");
        let twice = splice(&once, &other, Some("## Notes"));
        assert_eq!(twice, once.replace("new", "other"));
        assert_eq!(splice(&twice, &other, None), twice, "idempotent");
        let no_notes = splice(report, &section, Some("## Missing"));
        assert!(no_notes.contains(&format!("{END}\n\n## Exact commands")));
        assert_eq!(splice("a\n", &section, None), format!("a\n{section}"));
    }

    #[test]
    fn section_from_results() {
        let dir = std::env::temp_dir().join(format!("rocket-bench-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RunResult {
            commit: "abc1234".into(),
            command: "target/release/rocket-bench run --churn 50".into(),
            duration_s: 3600.0,
            series: (0..10)
                .map(|t| SeriesRow(f64::from(t), 30_000, 50.0, 1e5, 0))
                .collect(),
            ..Default::default()
        };
        r.memory = MemoryTrend::from_series(&r.series);
        for runtime in ["async-std", "tokio"] {
            std::fs::write(
                dir.join(format!("soak-{runtime}.json")),
                r.to_json().unwrap(),
            )
            .unwrap();
        }
        let runs = load(&dir).unwrap();
        assert_eq!(runs[0].0, "tokio", "tokio first");
        let md = section(&runs, &dir, "bench/soak-rss.svg", None).unwrap();
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END));
        assert!(md.contains("| tokio | 60 min | abc1234 |"), "{md}");
        assert!(
            md.contains("29.3 MiB | 29.3 MiB | 29.3 MiB | +0 KiB/h | +0 KiB/h |"),
            "{md}"
        );
        assert!(md.contains("![server RSS over the soak](bench/soak-rss.svg)"));
        assert!(dir.join(PLOT).exists());
        assert!(load(&dir.join("missing")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
