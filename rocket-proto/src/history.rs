//! Channel history on a History hub: per channel an epoch, the last offset given, and the
//! last `Size` deliveries, kept for `TtlMs` after the channel's last broadcast.
//!
//! Time comes only from [`Histories::handle_timeout`]. A broadcast cannot read the clock, so
//! it marks its channel *unstamped*; the next `handle_timeout(now)` stamps every unstamped
//! channel with `expires = now + TtlMs`. [`Histories::poll_timeout`] asks for that stamp at
//! most [`STAMP_DELAY`] after the last time the engine was given, so a history is kept at
//! least `TtlMs` after its last broadcast (the stamp is never earlier than the broadcast) and
//! at most `TtlMs` + `STAMP_DELAY` + the driver's timer latency. Until the engine has been
//! given the time once, nothing is stamped and nothing expires (the server gives it at start).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Payload;
use crate::config::HistoryConfig;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// How long after the last known time unstamped channels ask to be stamped: this bounds how
/// much longer than `TtlMs` a history may be kept, and how often a busy hub's timer fires
/// (at most once per `STAMP_DELAY`).
pub(crate) const STAMP_DELAY: Duration = Duration::from_millis(10);

/// One channel's stream.
struct Stream {
    epoch: Arc<str>,
    /// The last offset given (0 before the first broadcast).
    offset: u64,
    /// The kept deliveries, oldest first: offsets `offset - len + 1 ..= offset`.
    events: VecDeque<Payload>,
    /// When the events expire; `None` while unstamped or empty.
    expires: Option<Instant>,
    /// A broadcast happened since the last stamp.
    unstamped: bool,
}

/// The histories of one hub's channels.
pub(crate) struct Histories {
    size: usize,
    ttl: Duration,
    streams: Map<Arc<str>, Stream>,
    /// Stamped streams by expiry.
    expiries: BTreeSet<(Instant, Arc<str>)>,
    /// Channels broadcast to since the last stamp.
    unstamped: Vec<Arc<str>>,
    /// The latest time the engine was given.
    clock: Option<Instant>,
    hasher: ahash::RandomState,
    next_epoch: u64,
}

impl Histories {
    pub(crate) fn new(config: &HistoryConfig, hasher: ahash::RandomState) -> Self {
        Self {
            size: config.size.max(1),
            ttl: Duration::from_millis(config.ttl_ms.max(1)),
            streams: Map::with_hasher(hasher.clone()),
            expiries: BTreeSet::new(),
            unstamped: Vec::new(),
            clock: None,
            hasher,
            next_epoch: 0,
        }
    }

    /// Streams kept (channels with subscribers, and channels whose history outlives them).
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// The channel's last offset and epoch; starts a stream with a fresh epoch if there is
    /// none (a channel's first subscribe, or one whose history was lost).
    pub(crate) fn position(&mut self, channel: &Arc<str>) -> (u64, Arc<str>) {
        let stream = match self.streams.get_mut(&**channel) {
            Some(stream) => stream,
            None => {
                // Unpredictable without the hub's secret seed, distinct for every stream.
                let epoch = format!("{:016x}", self.hasher.hash_one(self.next_epoch));
                self.next_epoch += 1;
                self.streams.entry(Arc::clone(channel)).or_insert(Stream {
                    epoch: epoch.into(),
                    offset: 0,
                    events: VecDeque::new(),
                    expires: None,
                    unstamped: false,
                })
            }
        };
        (stream.offset, Arc::clone(&stream.epoch))
    }

    /// The channel's last offset and epoch if it has a stream; `(0, "")` otherwise.
    pub(crate) fn peek(&self, channel: &str) -> (u64, &str) {
        self.streams
            .get(channel)
            .map_or((0, ""), |s| (s.offset, &*s.epoch))
    }

    /// Records a broadcast to `channel` (which has a stream: it has subscribers): `build`
    /// makes the delivery from its offset and epoch; it is kept and returned.
    pub(crate) fn append(
        &mut self,
        name: &Arc<str>,
        build: impl FnOnce(u64, &str) -> Payload,
    ) -> Payload {
        // A channel with subscribers has a stream: subscribe starts it.
        let stream = self
            .streams
            .get_mut(&**name)
            .expect("a subscribed channel has a stream");
        stream.offset += 1;
        let payload = build(stream.offset, &stream.epoch);
        if stream.events.len() == self.size {
            stream.events.pop_front();
        }
        stream.events.push_back(payload.clone());
        if !stream.unstamped {
            stream.unstamped = true;
            self.unstamped.push(Arc::clone(name));
        }
        payload
    }

    /// The deliveries after `offset` in `epoch`, if the channel kept every one of them:
    /// `None` when the epoch differs, the offset lies ahead of the channel, or an event
    /// after it is no longer kept.
    pub(crate) fn recover(
        &self,
        channel: &str,
        offset: u64,
        epoch: &str,
    ) -> Option<impl Iterator<Item = &Payload>> {
        let stream = self.streams.get(channel)?;
        if *stream.epoch != *epoch || offset > stream.offset {
            return None;
        }
        let missed = stream.offset - offset;
        let kept = stream.events.len() as u64;
        if missed > kept {
            return None;
        }
        // missed <= kept = events.len(), a usize.
        Some(stream.events.range(stream.events.len() - missed as usize..))
    }

    /// The last `limit` kept deliveries (all of them for 0), oldest first.
    pub(crate) fn last(&self, channel: &str, limit: u64) -> impl Iterator<Item = &Payload> {
        let events = self.streams.get(channel).map(|s| &s.events);
        let len = events.map_or(0, VecDeque::len);
        let take = if limit == 0 {
            len
        } else {
            usize::try_from(limit).unwrap_or(usize::MAX).min(len)
        };
        events.into_iter().flat_map(move |e| e.range(len - take..))
    }

    /// `channel` lost its last subscriber: its stream goes unless events are kept (they
    /// then outlive the channel until they expire).
    pub(crate) fn channel_emptied(&mut self, channel: &str) {
        if self
            .streams
            .get(channel)
            .is_some_and(|s| s.events.is_empty())
        {
            // Empty streams are neither stamped nor unstamped.
            self.streams.remove(channel);
        }
    }

    /// The time is `now`: stamps the channels broadcast to since the last call, then
    /// expires what is due. A stream whose events expire is dropped when its channel has no
    /// subscriber (`subscribed` says); otherwise it keeps its offset and epoch, so that a
    /// client that missed nothing still recovers.
    pub(crate) fn handle_timeout(&mut self, now: Instant, subscribed: impl Fn(&str) -> bool) {
        let now = self.clock.map_or(now, |clock| clock.max(now));
        self.clock = Some(now);
        for name in std::mem::take(&mut self.unstamped) {
            let Some(stream) = self.streams.get_mut(&name) else {
                continue;
            };
            stream.unstamped = false;
            if let Some(old) = stream.expires.take() {
                self.expiries.remove(&(old, Arc::clone(&name)));
            }
            let expires = now + self.ttl;
            stream.expires = Some(expires);
            self.expiries.insert((expires, name));
        }
        while let Some((at, _)) = self.expiries.first()
            && *at <= now
        {
            // Just looked at it.
            let (_, name) = self.expiries.pop_first().expect("a first entry");
            let stream = self.streams.get_mut(&name).expect("stamped streams exist");
            stream.expires = None;
            stream.events.clear();
            if !subscribed(&name) {
                self.streams.remove(&name);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiries.first().map(|(at, _)| *at);
        let stamp = if self.unstamped.is_empty() {
            None
        } else {
            self.clock.map(|clock| clock + STAMP_DELAY)
        };
        match (expiry, stamp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
