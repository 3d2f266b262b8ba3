//! What subscribers count: per-publisher sequence checks (lost, duplicated, out of order)
//! and the publish-to-receive latency histogram.

use std::collections::BTreeSet;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Gaps remembered per tracker; beyond this a missing message is counted lost for good
/// (a late arrival of it would then count as a duplicate).
const MAX_REMEMBERED_GAPS: usize = 4096;

/// Counts shared by every tracker of one thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqCounts {
    /// Messages received, duplicates included.
    pub received: u64,
    /// Messages received a second time.
    pub duplicated: u64,
    /// Messages received after a later one of the same publisher.
    pub reordered: u64,
    /// Messages never received (filled in at the end).
    pub lost: u64,
}

impl SeqCounts {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &SeqCounts) {
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.lost += other.lost;
    }
}

/// Checks the sequence numbers one subscriber sees from one publisher on its channel.
/// The in-order case is one comparison; gaps are remembered (bounded) so that a late
/// message counts as reordered, not as lost plus duplicated.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    next: u64,
    missing: BTreeSet<u64>,
    forgotten: u64,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64, counts: &mut SeqCounts) {
        counts.received += 1;
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            for s in self.next..seq {
                if self.missing.len() < MAX_REMEMBERED_GAPS {
                    self.missing.insert(s);
                } else {
                    self.forgotten += 1;
                }
            }
            self.next = seq + 1;
        } else if self.missing.remove(&seq) {
            counts.reordered += 1;
        } else {
            counts.duplicated += 1;
        }
    }

    /// Messages lost once the publisher's accepted count on this channel is `accepted`.
    pub fn lost(&self, accepted: u64) -> u64 {
        self.missing.len() as u64 + self.forgotten + accepted.saturating_sub(self.next)
    }
}

/// Publish-to-receive latency in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// The highest latency recorded exactly, in microseconds (one minute); above, it saturates.
const MAX_LATENCY_US: u64 = 60_000_000;

impl Default for Latency {
    fn default() -> Self {
        Self {
            // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
            // 3 significant figures), so this cannot fail: a panic means a bug.
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
        }
    }
}

/// A histogram as `(value, count)` pairs, to move it between processes as JSON.
pub type Buckets = Vec<(u64, u64)>;

/// Latency figures in milliseconds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// `(percentile, ms)` points for a percentile plot.
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    /// Records one latency.
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, and saturating histograms never fail to add.
        let _ = self.hist.add(&other.hist);
    }

    /// The recorded values as `(value, count)` pairs.
    pub fn to_buckets(&self) -> Buckets {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Adds pairs made by [`Latency::to_buckets`].
    pub fn add_buckets(&mut self, buckets: &Buckets) {
        for &(value, count) in buckets {
            let _ = self.hist.record_n(value.clamp(1, MAX_LATENCY_US), count);
        }
    }

    /// Samples recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The figures of the distribution.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
        ]
        .iter()
        .map(|&p| (p, ms(h.value_at_percentile(p))))
        .collect();
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            curve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64], accepted: u64) -> SeqCounts {
        let mut t = SeqTracker::default();
        let mut c = SeqCounts::default();
        for &s in seqs {
            t.record(s, &mut c);
        }
        c.lost = t.lost(accepted);
        c
    }

    #[test]
    fn in_order_is_clean() {
        let c = run(&[0, 1, 2, 3], 4);
        assert_eq!(
            c,
            SeqCounts {
                received: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn gaps_tail_losses_duplicates_and_reorders_are_told_apart() {
        // 2 arrives late (reordered), 4 never (lost), 1 twice (duplicate), 6..8 at the end
        // never (tail loss against 8 accepted).
        let c = run(&[0, 1, 3, 2, 1, 5], 8);
        assert_eq!(c.received, 6);
        assert_eq!(c.reordered, 1);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.lost, 1 + 2);
    }

    #[test]
    fn huge_gaps_stay_bounded_in_memory_and_still_count() {
        let mut t = SeqTracker::default();
        let mut c = SeqCounts::default();
        t.record(1_000_000, &mut c);
        assert!(t.missing.len() <= MAX_REMEMBERED_GAPS);
        assert_eq!(t.lost(1_000_001), 1_000_000);
    }

    #[test]
    fn latency_percentiles_and_round_trip_through_buckets() {
        let mut a = Latency::default();
        for us in 1..=1000 {
            a.record_us(us);
        }
        let mut b = Latency::default();
        b.add_buckets(&a.to_buckets());
        b.record_us(0); // clamped to 1
        b.record_us(u64::MAX); // saturates at one minute
        let s = b.summary();
        assert_eq!(s.count, 1002);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 60_000.0).abs() < 60.0, "{s:?}");
        let mut c = Latency::default();
        c.merge(&a);
        c.merge(&a);
        assert_eq!(c.count(), 2000);
        assert_eq!(Latency::default().summary(), LatencySummary::default());
    }
}
