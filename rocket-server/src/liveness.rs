//! A connection's timers as a small sans-IO state machine: pings, the idle timeout and the
//! write deadline. The driver feeds it the time (`now`) and what it saw; the tests feed it
//! made-up instants, so every rule is checked without waiting on a clock.
//!
//! The driver wakes every [`Liveness::period`] (the shortest of `PingIntervalMs`,
//! `IdleTimeoutMs` and `WriteTimeoutMs`) and calls [`Liveness::handle_timeout`]. The timers
//! run whatever the socket does: a write that cannot finish does not stop them.

use std::time::{Duration, Instant};

use crate::config::Limits;

/// What a timer tick asks the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a ping.
    Ping,
    /// No frame for `IdleTimeoutMs`: close with 1001 "idle timeout".
    IdleTimeout,
    /// A pending write made no progress for `WriteTimeoutMs`: drop the connection.
    WriteTimeout,
}

/// Ping, idle and write-deadline state of one connection.
#[derive(Debug)]
pub(crate) struct Liveness {
    ping_every: Option<Duration>,
    idle_after: Option<Duration>,
    write_timeout: Duration,
    /// When a frame was last seen, as of the last tick that noticed it.
    last_seen: Instant,
    /// A frame arrived since the last tick (saves reading the clock per frame).
    heard: bool,
    next_ping: Option<Instant>,
    /// While a write is pending: the byte count it had last made progress at, and when.
    stall: Option<(u64, Instant)>,
}

impl Liveness {
    /// Timers for a connection that opened at `now`.
    pub(crate) fn new(limits: &Limits, now: Instant) -> Self {
        let ms = |ms: u64| (ms != 0).then(|| Duration::from_millis(ms));
        let ping_every = ms(limits.ping_interval_ms);
        Self {
            ping_every,
            idle_after: ms(limits.idle_timeout_ms),
            // The config guarantees at least 1 ms.
            write_timeout: Duration::from_millis(limits.write_timeout_ms.max(1)),
            last_seen: now,
            heard: false,
            next_ping: ping_every.map(|p| now + p),
            stall: None,
        }
    }

    /// How often the driver must call [`handle_timeout`](Self::handle_timeout).
    pub(crate) fn period(&self) -> Duration {
        [self.ping_every, self.idle_after]
            .into_iter()
            .flatten()
            .fold(self.write_timeout, Duration::min)
    }

    /// A frame (of any kind, pongs included) arrived.
    pub(crate) fn handle_message(&mut self) {
        self.heard = true;
    }

    /// A tick at `now`. `writing` is the connection's count of bytes written to its socket
    /// while a write is pending, `None` when nothing waits to be written.
    pub(crate) fn handle_timeout(&mut self, now: Instant, writing: Option<u64>) -> Due {
        if std::mem::take(&mut self.heard) {
            self.last_seen = now;
        }
        match (writing, self.stall) {
            (None, _) => self.stall = None,
            (Some(written), Some((at, since))) if written == at => {
                if now.saturating_duration_since(since) >= self.write_timeout {
                    return Due::WriteTimeout;
                }
            }
            (Some(written), _) => self.stall = Some((written, now)),
        }
        if self
            .idle_after
            .is_some_and(|idle| now.saturating_duration_since(self.last_seen) >= idle)
        {
            return Due::IdleTimeout;
        }
        if let (Some(every), Some(next)) = (self.ping_every, self.next_ping)
            && now >= next
        {
            self.next_ping = Some(now + every);
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ping: u64, idle: u64, write: u64) -> Limits {
        Limits {
            ping_interval_ms: ping,
            idle_timeout_ms: idle,
            write_timeout_ms: write,
            ..Limits::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_period_is_the_shortest_timer() {
        let t0 = Instant::now();
        assert_eq!(
            Liveness::new(&limits(500, 2000, 10_000), t0).period(),
            ms(500)
        );
        assert_eq!(Liveness::new(&limits(0, 0, 300), t0).period(), ms(300));
        assert_eq!(
            Liveness::new(&limits(0, 4000, 10_000), t0).period(),
            ms(4000)
        );
    }

    #[test]
    fn pings_every_interval_and_closes_a_silent_client() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(500, 2000, 10_000), t0);
        let mut dues = Vec::new();
        for tick in 1..=4 {
            dues.push(l.handle_timeout(t0 + ms(500 * tick), None));
        }
        assert_eq!(dues, [Due::Ping, Due::Ping, Due::Ping, Due::IdleTimeout]);
    }

    #[test]
    fn a_frame_keeps_the_client_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(500, 2000, 10_000), t0);
        for tick in 1..=20 {
            l.handle_message(); // e.g. the pong to the last ping
            assert_eq!(l.handle_timeout(t0 + ms(500 * tick), None), Due::Ping);
        }
        // Silent from here: closed once 2 s have passed since the last tick that heard it.
        let last = t0 + ms(500 * 20);
        assert_eq!(l.handle_timeout(last + ms(1500), None), Due::Ping);
        assert_eq!(l.handle_timeout(last + ms(2000), None), Due::IdleTimeout);
    }

    #[test]
    fn no_timers_no_dues() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(0, 0, 10_000), t0);
        assert_eq!(l.handle_timeout(t0 + ms(3_600_000), None), Due::Nothing);
    }

    #[test]
    fn a_stalled_write_times_out_and_progress_resets_the_deadline() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(0, 0, 1000), t0);
        // The write starts between ticks: its deadline counts from the first tick seeing it.
        assert_eq!(l.handle_timeout(t0 + ms(1000), Some(10)), Due::Nothing);
        assert_eq!(l.handle_timeout(t0 + ms(1999), Some(10)), Due::Nothing);
        // Progress: the clock starts again.
        assert_eq!(l.handle_timeout(t0 + ms(2500), Some(20)), Due::Nothing);
        assert_eq!(l.handle_timeout(t0 + ms(3000), Some(20)), Due::Nothing);
        assert_eq!(l.handle_timeout(t0 + ms(3500), Some(20)), Due::WriteTimeout);
    }

    #[test]
    fn a_finished_write_clears_the_deadline() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(0, 0, 1000), t0);
        assert_eq!(l.handle_timeout(t0 + ms(1000), Some(10)), Due::Nothing);
        assert_eq!(l.handle_timeout(t0 + ms(2000), None), Due::Nothing);
        // A new write with the same byte count is a new write, not the old stall.
        assert_eq!(l.handle_timeout(t0 + ms(3000), Some(10)), Due::Nothing);
        assert_eq!(l.handle_timeout(t0 + ms(4000), Some(10)), Due::WriteTimeout);
    }

    #[test]
    fn timers_run_while_a_write_is_pending() {
        let t0 = Instant::now();
        let mut l = Liveness::new(&limits(500, 2000, 10_000), t0);
        let dues: Vec<_> = (1..=4)
            .map(|tick| l.handle_timeout(t0 + ms(500 * tick), Some(7)))
            .collect();
        assert_eq!(dues, [Due::Ping, Due::Ping, Due::Ping, Due::IdleTimeout]);
    }
}
