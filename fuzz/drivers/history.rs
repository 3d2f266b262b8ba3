//! The model of history, recovery, presence and join/leave, shared by the proptest
//! `rocket-proto/tests/history_model.rs` and the fuzz target `history`.
//!
//! Sequences of connects, disconnects, subscribes (with and without `since`),
//! unsubscribes, logouts, broadcasts, `history` and `presence` requests, and steps of time run
//! against a History hub (`Size` 3, `TtlMs` 1000) with `Presence` and `JoinLeave`, next to a
//! small model of offsets, epochs, kept events, expiry and membership. After every step each
//! client must have received exactly what the model predicts, in order; at the end, after
//! everyone left and the histories expired, the engine must be idle.
//!
//! Bytes decode into steps ([`Op::decode_all`]): each step is a kind byte and the bytes its
//! fields need; every byte string decodes, so every input is a valid test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rocket_proto::ClientId;
use serde_json::{Value, json};

use crate::support::Sim;

pub const SLOTS: usize = 3;
pub const CHANNELS: [&str; 2] = ["a", "b\"é"];
const SIZE: usize = 3;
const TTL_MS: u64 = 1000;

/// Fails the run with a message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Fails the run unless both sides are equal.
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        check_eq!($left, $right, "")
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!(
                "{}\n  left: {:?}\n right: {:?}",
                format!($($fmt)+),
                left,
                right
            ));
        }
    }};
}

#[derive(Clone, Debug)]
pub enum Op {
    /// Connects and authenticates a client in an empty slot; authenticates again otherwise.
    Connect(usize),
    Disconnect(usize),
    Logout(usize),
    Subscribe {
        slot: usize,
        channel: usize,
        since: bool,
    },
    Unsubscribe(usize, usize),
    Broadcast(usize, usize),
    History {
        slot: usize,
        channel: usize,
        limit: u64,
    },
    Presence(usize, usize),
    Tick(u64),
}

impl Op {
    /// Decodes `data` into steps; trailing bytes a step would need read as 0.
    pub fn decode_all(data: &[u8]) -> Vec<Op> {
        let mut bytes = data.iter().copied();
        let mut next = || bytes.next();
        let mut ops = Vec::new();
        while let Some(kind) = next() {
            let mut field = |n: usize| usize::from(next().unwrap_or(0)) % n;
            let op = match kind % 9 {
                0 => Op::Connect(field(SLOTS)),
                1 => Op::Disconnect(field(SLOTS)),
                2 => Op::Logout(field(SLOTS)),
                3 => {
                    let (slot, channel) = (field(SLOTS), field(CHANNELS.len()));
                    Op::Subscribe {
                        slot,
                        channel,
                        since: field(2) == 1,
                    }
                }
                4 => Op::Unsubscribe(field(SLOTS), field(CHANNELS.len())),
                5 => Op::Broadcast(field(SLOTS), field(CHANNELS.len())),
                6 => {
                    let (slot, channel) = (field(SLOTS), field(CHANNELS.len()));
                    Op::History {
                        slot,
                        channel,
                        limit: field(5) as u64,
                    }
                }
                7 => Op::Presence(field(SLOTS), field(CHANNELS.len())),
                _ => Op::Tick(field(256) as u64 * 6),
            };
            ops.push(op);
        }
        ops
    }
}

/// One channel's stream in the model.
#[derive(Debug)]
struct Stream {
    epoch: String,
    offset: u64,
    events: VecDeque<Value>,
    /// Expiry in ms since the start; `None` while unstamped or empty.
    expires: Option<u64>,
    unstamped: bool,
}

#[derive(Debug, Default)]
struct Model {
    /// Live client and whether it is logged in (everyone logs in as `admin` on connect).
    clients: [Option<(ClientId, bool)>; SLOTS],
    members: [Vec<usize>; 2],
    streams: [Option<Stream>; 2],
    /// The last position each slot saw of each channel (kept across reconnects).
    seen: [[Option<(u64, String)>; 2]; SLOTS],
    /// Every epoch each channel ever had.
    epochs: [BTreeSet<String>; 2],
    now: u64,
    expected: BTreeMap<ClientId, Vec<Value>>,
    next_data: u64,
}

impl Model {
    fn expect(&mut self, id: ClientId, v: Value) {
        self.expected.entry(id).or_default().push(v);
    }

    fn id(&self, slot: usize) -> Option<ClientId> {
        self.clients[slot].map(|(id, _)| id)
    }

    /// `slot` leaves `ch` (it was a member): leave to the others; the stream goes with the
    /// channel unless it keeps events.
    fn leave(&mut self, sim: &Sim, slot: usize, ch: usize) {
        self.members[ch].retain(|&s| s != slot);
        let id = self.id(slot).unwrap();
        let leave = json!({ "leave": { "channel": CHANNELS[ch], "client": sim.token(id), "user": "admin" } });
        for &s in &self.members[ch].clone() {
            self.expect(self.id(s).unwrap(), leave.clone());
        }
        if self.members[ch].is_empty()
            && self.streams[ch]
                .as_ref()
                .is_some_and(|s| s.events.is_empty())
        {
            self.streams[ch] = None;
        }
    }

    fn leave_all(&mut self, sim: &Sim, slot: usize) {
        for ch in 0..CHANNELS.len() {
            if self.members[ch].contains(&slot) {
                self.leave(sim, slot, ch);
            }
        }
    }

    fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        for (ch, stream) in self.streams.iter_mut().enumerate() {
            let Some(s) = stream else { continue };
            if s.unstamped {
                s.unstamped = false;
                s.expires = Some(self.now + TTL_MS);
            }
            if s.expires.is_some_and(|at| at <= self.now) {
                s.expires = None;
                s.events.clear();
                if self.members[ch].is_empty() {
                    *stream = None;
                }
            }
        }
    }
}

/// Runs `ops` against the engine and the model; the first difference is the error.
pub fn run(ops: Vec<Op>) -> Result<(), String> {
    let config = json!({
        "Users": { "admin": { "Secret": "s", "Permission": 7 } },
        "History": { "Size": SIZE, "TtlMs": TTL_MS },
        "Presence": true,
        "JoinLeave": true,
    });
    let mut sim = Sim::new(&config.to_string());
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    sim.time(at(0));
    let mut m = Model::default();
    for op in ops {
        'step: {
            match op {
                Op::Connect(slot) => {
                    if let Some((id, _)) = m.clients[slot] {
                        // Authenticate again: a new session leaves every channel first.
                        m.leave_all(&sim, slot);
                        m.clients[slot] = Some((id, true));
                        m.expect(id, json!({ "authenticated": "admin" }));
                        sim.send(
                            id,
                            json!({ "authenticate": { "user": "admin", "secret": "s" } }),
                        );
                        break 'step;
                    }
                    let id = sim.connect();
                    sim.auth(id, "admin", "s");
                    m.clients[slot] = Some((id, true));
                }
                Op::Disconnect(slot) => {
                    let Some(id) = m.id(slot) else { break 'step };
                    m.leave_all(&sim, slot);
                    m.clients[slot] = None;
                    sim.disconnect(id);
                }
                Op::Logout(slot) => {
                    let Some(id) = m.id(slot) else { break 'step };
                    m.leave_all(&sim, slot);
                    m.clients[slot] = Some((id, false));
                    m.expect(id, json!({ "loggedOut": true }));
                    sim.send(id, json!({ "logout": true }));
                }
                Op::Subscribe {
                    slot,
                    channel: ch,
                    since,
                } => {
                    let Some((id, session)) = m.clients[slot] else {
                        break 'step;
                    };
                    let name = CHANNELS[ch];
                    let position = m.seen[slot][ch].clone().filter(|_| since);
                    let mut request = json!({ "subscribe": { "channel": name } });
                    if let Some((offset, epoch)) = &position {
                        request["subscribe"]["since"] = json!({ "offset": offset, "epoch": epoch });
                    }
                    sim.send(id, request);
                    if !session {
                        m.expect(id, json!({ "err": "ACCESS_DENIED" }));
                        break 'step;
                    }
                    if !m.members[ch].contains(&slot) {
                        let join = json!({ "join": { "channel": name, "client": sim.token(id), "user": "admin" } });
                        for &s in &m.members[ch].clone() {
                            m.expect(m.id(s).unwrap(), join.clone());
                        }
                        m.members[ch].push(slot);
                    }
                    // The reply: check it against the model (the epoch of a new stream is the
                    // engine's to choose; it must be one the channel never had).
                    let got = sim.take(id);
                    let expected_before = m.expected.remove(&id).unwrap_or_default();
                    check_eq!(&got[..got.len() - 1], &expected_before[..]);
                    let reply = got.last().unwrap().clone();
                    if m.streams[ch].is_none() {
                        let epoch = reply["epoch"].as_str().unwrap().to_owned();
                        check!(
                            m.epochs[ch].insert(epoch.clone()),
                            "epoch reused: {}",
                            epoch
                        );
                        m.streams[ch] = Some(Stream {
                            epoch,
                            offset: 0,
                            events: VecDeque::new(),
                            expires: None,
                            unstamped: false,
                        });
                    }
                    let s = m.streams[ch].as_ref().unwrap();
                    let mut expected =
                        json!({ "subscribed": name, "offset": s.offset, "epoch": s.epoch });
                    if let Some((offset, epoch)) = position {
                        let missed = s.offset.checked_sub(offset);
                        let ok = epoch == s.epoch
                            && missed.is_some_and(|missed| missed <= s.events.len() as u64);
                        expected["recovered"] = json!(ok);
                        if ok {
                            let skip = s.events.len() - missed.unwrap() as usize;
                            expected["events"] =
                                Value::Array(s.events.iter().skip(skip).cloned().collect());
                        }
                    }
                    check_eq!(&reply, &expected);
                    m.seen[slot][ch] = Some((s.offset, s.epoch.clone()));
                }
                Op::Unsubscribe(slot, ch) => {
                    let Some(id) = m.id(slot) else { break 'step };
                    if m.members[ch].contains(&slot) {
                        m.leave(&sim, slot, ch);
                    }
                    m.expect(id, json!({ "unsubscribed": CHANNELS[ch] }));
                    sim.send(id, json!({ "unsubscribe": { "channel": CHANNELS[ch] } }));
                }
                Op::Broadcast(slot, ch) => {
                    let Some((id, session)) = m.clients[slot] else {
                        break 'step;
                    };
                    let name = CHANNELS[ch];
                    m.next_data += 1;
                    let data = m.next_data;
                    sim.send(
                        id,
                        json!({ "broadcast": { "event": "e", "channel": name, "data": data } }),
                    );
                    if !session {
                        m.expect(id, json!({ "err": "ACCESS_DENIED" }));
                        break 'step;
                    }
                    if m.members[ch].is_empty() {
                        m.expect(id, json!({ "err": "INVALID_CHANNEL" }));
                        break 'step;
                    }
                    let s = m.streams[ch].as_mut().unwrap();
                    s.offset += 1;
                    let event = json!({ "event": "e", "channel": name, "data": data,
                                        "offset": s.offset, "epoch": s.epoch });
                    if s.events.len() == SIZE {
                        s.events.pop_front();
                    }
                    s.events.push_back(event.clone());
                    s.unstamped = true;
                    let position = (s.offset, s.epoch.clone());
                    for &sub in &m.members[ch].clone() {
                        m.expect(m.id(sub).unwrap(), event.clone());
                        m.seen[sub][ch] = Some(position.clone());
                    }
                    m.expect(id, json!({ "broadcasted": name }));
                }
                Op::History {
                    slot,
                    channel: ch,
                    limit,
                } => {
                    let Some((id, session)) = m.clients[slot] else {
                        break 'step;
                    };
                    let name = CHANNELS[ch];
                    sim.send(
                        id,
                        json!({ "history": { "channel": name, "limit": limit } }),
                    );
                    let reply = if !session {
                        json!({ "err": "ACCESS_DENIED" })
                    } else if let Some(s) = &m.streams[ch] {
                        let take = if limit == 0 {
                            s.events.len()
                        } else {
                            (limit as usize).min(s.events.len())
                        };
                        let events: Vec<_> = s
                            .events
                            .iter()
                            .skip(s.events.len() - take)
                            .cloned()
                            .collect();
                        json!({ "history": { "channel": name, "offset": s.offset, "epoch": s.epoch, "events": events } })
                    } else {
                        json!({ "history": { "channel": name, "offset": 0, "epoch": "", "events": [] } })
                    };
                    m.expect(id, reply);
                }
                Op::Presence(slot, ch) => {
                    let Some((id, session)) = m.clients[slot] else {
                        break 'step;
                    };
                    let name = CHANNELS[ch];
                    sim.send(id, json!({ "presence": { "channel": name } }));
                    let reply = if session {
                        let clients: serde_json::Map<_, _> = m.members[ch]
                            .iter()
                            .map(|&s| (sim.token(m.id(s).unwrap()), json!({ "user": "admin" })))
                            .collect();
                        json!({ "presence": { "channel": name, "clients": clients } })
                    } else {
                        json!({ "err": "ACCESS_DENIED" })
                    };
                    m.expect(id, reply);
                }
                Op::Tick(ms) => {
                    let now = m.now + ms;
                    m.tick(now);
                    sim.time(at(now));
                }
            }
        }
        for slot in 0..SLOTS {
            let Some(id) = m.id(slot) else { continue };
            let expected = m.expected.remove(&id).unwrap_or_default();
            check_eq!(sim.take(id), expected, "slot {}", slot);
        }
        sim.assert_silent();
        check_eq!(
            sim.engine().history_count(),
            m.streams.iter().flatten().count()
        );
        let expected_timeout = m
            .streams
            .iter()
            .flatten()
            .filter_map(|s| s.expires)
            .min()
            .map(at);
        let stamp = m
            .streams
            .iter()
            .flatten()
            .any(|s| s.unstamped)
            .then(|| at(m.now + 10));
        let expected_timeout = match (expected_timeout, stamp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        check_eq!(sim.engine().poll_timeout(), expected_timeout);
    }
    for slot in 0..SLOTS {
        if let Some(id) = m.id(slot) {
            sim.disconnect(id);
        }
    }
    sim.take_all();
    // The first time stamps the last broadcasts, the second is past their expiry.
    sim.time(at(m.now));
    sim.time(at(m.now + TTL_MS));
    check!(
        sim.engine().is_idle(),
        "not idle at the end: {:?}",
        sim.engine()
    );
    Ok(())
}
