//! The publishers: one thread, one mio loop, `P` connections. Each publisher owns the
//! channels `c` with `c % P == p` (or channel `p % channels` when there are fewer channels
//! than publishers), cycles through them, and numbers its messages per channel so that
//! every subscriber can check the sequence it sees.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::conn::WsConn;
use crate::frame::{self, MaskGen};
use crate::message::{Stamp, channel_name, now_us, write_api_publish, write_publish};
use crate::tls::TlsClient;

/// How publishers pace their messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the server accepts them: at most `window` unanswered per publisher,
    /// and no more than `max_lag` messages per subscriber sent but not yet received.
    FlatOut {
        /// Broadcasts sent and not yet answered, per publisher.
        window: u32,
        /// Messages per subscriber (on average) sent but not yet delivered.
        max_lag: u64,
    },
    /// A fixed rate per publisher (messages per second), on an open-loop schedule.
    Rate(f64),
    /// One message to each of the publisher's channels (a liveness check).
    Once,
}

/// How publishers reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// A WebSocket each, authenticated once, sending `broadcast` requests.
    Ws,
    /// The publish API: `POST /api/broadcast` on a keep-alive HTTP/1.1 connection each,
    /// pipelined, with HTTP Basic credentials on every request.
    Http,
}

/// What the publishers are asked to do.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The hub's path.
    pub path: String,
    /// The user publishers log in as (needs WRITE).
    pub user: String,
    /// Its secret.
    pub secret: String,
    /// Number of publishers.
    pub publishers: u32,
    /// Number of channels.
    pub channels: u32,
    /// Subscribers in the run (subscriber `i` is on channel `i % channels`).
    pub subscribers: u32,
    /// Bytes of `data` per message.
    pub payload: usize,
    /// WebSocket or the HTTP publish API.
    pub via: Via,
    /// TLS (`wss://`, `https://`), when the server is reached over it.
    pub tls: Option<TlsClient>,
}

impl PublisherSpec {
    /// The channels publisher `p` publishes to.
    pub fn channels_of(&self, p: u32) -> Vec<u32> {
        if self.channels >= self.publishers {
            (p..self.channels)
                .step_by(self.publishers as usize)
                .collect()
        } else {
            vec![p % self.channels]
        }
    }

    /// Subscribers on channel `c`.
    pub fn subscribers_on(&self, c: u32) -> u64 {
        let (n, k) = (u64::from(self.subscribers), u64::from(self.channels));
        n / k + u64::from(u64::from(c) < n % k)
    }
}

/// Counters the parent reads while publishers run.
#[derive(Debug, Default)]
pub struct PublisherLive {
    /// Broadcasts answered with `broadcasted`.
    pub accepted: AtomicU64,
    /// Broadcasts written.
    pub sent: AtomicU64,
    /// Deliveries all workers reported (written by the parent, read for flow control).
    pub delivered: AtomicU64,
    /// Set by the parent: stop sending, collect the outstanding answers, return.
    pub stop: AtomicBool,
}

/// What the publishers did.
#[derive(Debug, Default, Clone)]
pub struct PublisherTotals {
    /// Broadcasts accepted per `publisher * channels + channel`.
    pub accepted: Vec<u64>,
    /// Broadcasts written.
    pub sent: u64,
    /// Error replies (broadcasts the server refused).
    pub errors: u64,
    /// Broadcasts left unanswered when the publishers gave up waiting.
    pub unanswered: u64,
    /// The first few problems.
    pub problems: Vec<String>,
}

#[derive(Debug)]
struct Pub {
    conn: WsConn,
    id: u32,
    /// 0: greeting, 1: authenticated, 2: ready.
    stage: u8,
    channels: Vec<u32>,
    turn: usize,
    seq: Vec<u64>,
    names: Vec<String>,
    /// Channel index (into `channels`) of each unanswered broadcast, oldest first.
    inflight: VecDeque<usize>,
    sent: u64,
    dead: bool,
}

/// Logged-in publishers, ready to run.
#[derive(Debug)]
pub struct Publishers {
    spec: PublisherSpec,
    poll: Poll,
    pubs: Vec<Pub>,
    masks: MaskGen,
    buf: Vec<u8>,
    totals: PublisherTotals,
    /// `Authorization: Basic …` for the publish API.
    basic: String,
}

impl Publishers {
    /// Connects and logs in every publisher (waits at most `timeout`).
    pub fn connect(spec: PublisherSpec, timeout: Duration) -> Result<Self, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut pubs = Vec::new();
        for id in 0..spec.publishers {
            let conn = match spec.via {
                Via::Ws => {
                    WsConn::connect(spec.addr, None, &spec.host, &spec.path, spec.tls.as_ref())
                }
                Via::Http => WsConn::connect_http(spec.addr, &spec.host, spec.tls.as_ref()),
            };
            let mut conn = conn.map_err(|e| format!("publisher connect: {e}"))?;
            poll.registry()
                .register(
                    &mut conn.stream,
                    Token(id as usize),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| e.to_string())?;
            let channels = spec.channels_of(id);
            pubs.push(Pub {
                conn,
                id,
                stage: 0,
                seq: vec![0; channels.len()],
                names: channels.iter().map(|&c| channel_name(c)).collect(),
                channels,
                turn: 0,
                inflight: VecDeque::new(),
                sent: 0,
                dead: false,
            });
        }
        let basic = {
            use base64::Engine as _;
            let credentials = format!("{}:{}", spec.user, spec.secret);
            base64::engine::general_purpose::STANDARD.encode(credentials)
        };
        let mut this = Self {
            basic,
            totals: PublisherTotals {
                accepted: vec![0; (spec.publishers * spec.channels) as usize],
                ..Default::default()
            },
            spec,
            poll,
            pubs,
            masks: MaskGen::new(now_us()),
            buf: vec![0; 64 * 1024],
        };
        let deadline = Instant::now() + timeout;
        while this.pubs.iter().any(|p| p.stage < 2) {
            if Instant::now() > deadline {
                return Err("publishers: login timed out".into());
            }
            this.turn(Some(Duration::from_millis(20)))?;
            if let Some(p) = this.pubs.iter().find(|p| p.dead) {
                return Err(format!(
                    "publisher {} failed: {}",
                    p.id,
                    this.totals.problems.join("; ")
                ));
            }
        }
        Ok(this)
    }

    /// One poll and the handling of its events.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        let mut events = Events::with_capacity(64);
        match self.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        for event in &events {
            let Some(p) = self.pubs.get_mut(event.token().0) else {
                continue;
            };
            if p.dead {
                continue;
            }
            let totals = &mut self.totals;
            let channels = self.spec.channels as usize;
            let mut login_failed = None;
            let progress = p.conn.on_event(&mut self.buf, &mut self.masks, |text| {
                match p.stage {
                    0 => p.stage = 1,
                    1 if text.starts_with(br#"{"authenticated""#) => p.stage = 2,
                    1 => login_failed = Some(String::from_utf8_lossy(text).into_owned()),
                    _ => {
                        let Some(k) = p.inflight.pop_front() else {
                            return; // an event of a channel it subscribed to: not ours
                        };
                        if text.starts_with(br#"{"broadcasted""#) {
                            let c = p.channels[k] as usize;
                            totals.accepted[p.id as usize * channels + c] += 1;
                        } else {
                            totals.errors += 1;
                            if totals.problems.len() < 10 {
                                totals
                                    .problems
                                    .push(String::from_utf8_lossy(text).into_owned());
                            }
                        }
                    }
                }
            });
            if progress.opened && self.spec.via == Via::Http {
                p.stage = 2; // no greeting, no login: credentials go with every request
            } else if progress.opened {
                let auth = serde_json::json!({"authenticate": {"user": self.spec.user, "secret": self.spec.secret}});
                if let Err(e) = p
                    .conn
                    .send_text(auth.to_string().as_bytes(), &mut self.masks)
                {
                    login_failed = Some(e.to_string());
                }
            }
            if let Some(why) = progress.closed.or(login_failed) {
                p.dead = true;
                self.totals
                    .problems
                    .push(format!("publisher {}: {why}", p.id));
            }
        }
        Ok(())
    }

    /// Writes one broadcast of publisher `i` on its next channel (not flushed).
    fn queue_one(&mut self, i: usize) {
        let p = &mut self.pubs[i];
        let k = p.turn;
        p.turn = (p.turn + 1) % p.channels.len();
        let stamp = Stamp {
            publisher: p.id,
            seq: p.seq[k],
            sent_us: now_us(),
        };
        p.seq[k] += 1;
        let mut text = Vec::with_capacity(self.spec.payload + 80);
        match self.spec.via {
            Via::Ws => {
                write_publish(&mut text, &p.names[k], stamp, self.spec.payload);
                let mut framed = Vec::with_capacity(text.len() + 14);
                frame::encode_masked(&mut framed, frame::OP_TEXT, &text, self.masks.next_mask());
                // Errors surface at the flush.
                p.conn.send_raw_queued(&framed);
            }
            Via::Http => {
                let path = &self.spec.path;
                write_api_publish(&mut text, path, &p.names[k], stamp, self.spec.payload);
                let head = format!(
                    "POST /api/broadcast HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    self.spec.host,
                    self.basic,
                    text.len()
                );
                p.conn.send_raw_queued(head.as_bytes());
                p.conn.send_raw_queued(&text);
            }
        }
        p.inflight.push_back(k);
        p.sent += 1;
    }

    /// Publishes at `pace` until `live.stop` is set (or, for [`Pace::Once`], until each
    /// channel got its message), then waits up to `drain` for the outstanding answers.
    pub fn run(mut self, pace: Pace, live: &PublisherLive, drain: Duration) -> PublisherTotals {
        let start = Instant::now();
        let n = self.pubs.len();
        let mut due = vec![0u64; n]; // messages due so far, per publisher (rate pace)
        let fanout: Vec<Vec<u64>> = self
            .pubs
            .iter()
            .map(|p| {
                p.channels
                    .iter()
                    .map(|&c| self.spec.subscribers_on(c))
                    .collect()
            })
            .collect();
        let mut expected_deliveries = 0u64;
        let subscribers = u64::from(self.spec.subscribers.max(1));
        let mut once_done = false;
        while !live.stop.load(Ordering::Relaxed) && !once_done {
            let mut timeout = Duration::from_millis(20);
            match pace {
                Pace::FlatOut { window, max_lag } => {
                    let lag_limit = max_lag * subscribers;
                    for (i, fanout) in fanout.iter().enumerate() {
                        while !self.pubs[i].dead
                            && self.pubs[i].inflight.len() < window as usize
                            && expected_deliveries
                                .saturating_sub(live.delivered.load(Ordering::Relaxed))
                                < lag_limit
                        {
                            let k = self.pubs[i].turn;
                            expected_deliveries += fanout[k];
                            self.queue_one(i);
                        }
                    }
                    timeout = Duration::from_millis(1);
                }
                Pace::Rate(rate) => {
                    let elapsed = start.elapsed().as_secs_f64();
                    let want = (elapsed * rate) as u64 + 1;
                    for (i, due) in due.iter_mut().enumerate() {
                        while *due < want && !self.pubs[i].dead {
                            *due += 1;
                            self.queue_one(i);
                        }
                    }
                    let next_at = want as f64 / rate;
                    let wait = (next_at - start.elapsed().as_secs_f64()).max(0.0);
                    timeout = Duration::from_secs_f64(wait.min(0.02));
                }
                Pace::Once => {
                    for i in 0..n {
                        for _ in 0..self.pubs[i].channels.len() {
                            self.queue_one(i);
                        }
                    }
                    once_done = true;
                }
            }
            self.flush_all();
            live.sent
                .store(self.pubs.iter().map(|p| p.sent).sum(), Ordering::Relaxed);
            if let Err(e) = self.turn(Some(timeout)) {
                self.totals.problems.push(e);
                break;
            }
            live.accepted
                .store(self.totals.accepted.iter().sum::<u64>(), Ordering::Relaxed);
        }
        let deadline = Instant::now() + drain;
        while self.pubs.iter().any(|p| !p.dead && !p.inflight.is_empty())
            && Instant::now() < deadline
        {
            self.flush_all();
            if let Err(e) = self.turn(Some(Duration::from_millis(20))) {
                self.totals.problems.push(e);
                break;
            }
        }
        live.accepted
            .store(self.totals.accepted.iter().sum::<u64>(), Ordering::Relaxed);
        self.totals.sent = self.pubs.iter().map(|p| p.sent).sum();
        self.totals.unanswered = self.pubs.iter().map(|p| p.inflight.len() as u64).sum();
        self.totals
    }

    fn flush_all(&mut self) {
        for p in &mut self.pubs {
            if p.dead || !p.conn.has_unsent() {
                continue;
            }
            if let Err(e) = p.conn.flush() {
                p.dead = true;
                self.totals
                    .problems
                    .push(format!("publisher {}: {e}", p.id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(publishers: u32, channels: u32, subscribers: u32) -> PublisherSpec {
        PublisherSpec {
            addr: "127.0.0.1:1".parse().unwrap(),
            host: String::new(),
            path: String::new(),
            user: String::new(),
            secret: String::new(),
            publishers,
            channels,
            subscribers,
            payload: 100,
            via: Via::Ws,
            tls: None,
        }
    }

    #[test]
    fn every_channel_has_a_publisher_and_subscribers_add_up() {
        let s = spec(10, 1000, 10_000);
        let mut seen = vec![0; 1000];
        for p in 0..10 {
            for c in s.channels_of(p) {
                seen[c as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!((0..1000).map(|c| s.subscribers_on(c)).sum::<u64>(), 10_000);
        let s = spec(4, 1, 1001);
        assert!((0..4).all(|p| s.channels_of(p) == [0]));
        assert_eq!(s.subscribers_on(0), 1001);
        let s = spec(3, 2, 5);
        assert_eq!(s.channels_of(2), [0]);
        assert_eq!((s.subscribers_on(0), s.subscribers_on(1)), (3, 2));
    }
}
