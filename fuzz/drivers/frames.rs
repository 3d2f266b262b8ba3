//! The `frames` fuzz driver: bytes become a sequence of [`Event`]s (connects, disconnects
//! and frames of several clients) applied to one [`Engine`], with the contract checked
//! after every event against a small model built from the engine's own replies.
//!
//! Shared by the `frames` fuzz target and by `rocket-proto/tests/fuzz_corpus.rs`, which
//! include this file with `#[path]`, so a corpus file means the same thing to both.
//!
//! # Byte format
//! The input is a list of events, each one *op* byte followed by its arguments. The op's low
//! four bits pick the kind, bits 4-5 the client slot (0..4). Arguments that run past the end of the input read as zero; a length that runs past
//! the end takes what is left. Lengths are one byte (names) or two bytes little-endian
//! (frames, raw data).
//!
//! | kind | event | arguments |
//! |---|---|---|
//! | 0 | [`Event::Connect`] | — |
//! | 1 | [`Event::Disconnect`] | — |
//! | 2 | [`Event::Text`] | len u16, bytes (lossy UTF-8) |
//! | 3 | [`Event::Binary`] | len u16, bytes |
//! | 4 | [`Event::Authenticate`] | `user + 8 * secret` |
//! | 5 | [`Event::Subscribe`] | channel |
//! | 6 | [`Event::Unsubscribe`] | channel |
//! | 7 | [`Event::Broadcast`] | `channel + 16 * data` |
//! | 8 | [`Event::BroadcastRaw`] | channel, len u16, raw `data` text |
//! | 9 | [`Event::Direct`] | `target + 4 * how + 16 * data` |
//! | 10 | [`Event::Logout`] | object flag |
//! | 11 | [`Event::DisconnectRequest`] | object flag |
//! | 12 | [`Event::SubscribeNamed`] | len u8, name bytes |
//! | 13 | [`Event::DirectNamed`] | len u8, client bytes |
//! | 14 | [`Event::RemoteBroadcast`] | channel |
//! | 15 | [`Event::Verified`] | ok flag |

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rocket_proto::{ClientId, CloseCode, Completion, ConnectError, Engine, EngineConfig, Message};
use rocket_proto::{HashSeed, OpId, Operation, Output, Payload, Permissions, Token, Topic};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The configuration every run uses: users with different permissions, one of them with an
/// argon2 PHC secret that the driver, as the frontend, "verifies" ([`Event::Verified`]), and
/// small limits, so that the limits are reached within a few events.
pub const CONFIG: &str = r#"{
    "Users": {
        "admin": { "Secret": "s3cret", "Permission": 7 },
        "reader": { "Secret": "r3ad", "Permission": 1 },
        "writer": { "Secret": "", "Permission": 2 },
        "hashed": {
            "Secret": "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
            "Permission": 3
        }
    },
    "Limits": { "MaxSubscriptionsPerClient": 3, "MaxFailedAuth": 3 }
}"#;

/// Client slots: each holds at most one live connection at a time.
pub const SLOTS: usize = 4;
/// `MaxSubscriptionsPerClient` in [`CONFIG`].
const MAX_SUBSCRIPTIONS: usize = 3;
/// `MaxFailedAuth` in [`CONFIG`].
const MAX_FAILED_AUTH: u32 = 3;

/// Users of the templates: the four of [`CONFIG`] and one it does not have.
pub const USERS: [&str; 5] = ["admin", "reader", "writer", "hashed", "ghost"];
/// The one user of [`CONFIG`] with a PHC secret.
const HASHED: &str = "hashed";
/// Channel names of the templates, two of them needing JSON escapes.
pub const CHANNELS: [&str; 5] = ["news", "sport", "chat", "a\"b\\c\u{1}\n", "é€😀"];
/// How many `data` variants the templates have (see [`data_text`]).
pub const DATA_KINDS: u8 = 9;

/// One step of a run. `slot` and the template selectors are taken modulo their ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The slot's client connects (with a fresh id and token). On a live slot, checks that
    /// reusing its id or its token is refused instead.
    Connect {
        /// Client slot.
        slot: u8,
    },
    /// The slot's connection ends (`handle_disconnect`), also for a slot that is not live.
    Disconnect {
        /// Client slot.
        slot: u8,
    },
    /// A text frame with arbitrary content (made UTF-8 lossily).
    Text {
        /// Client slot.
        slot: u8,
        /// The frame's bytes.
        text: Vec<u8>,
    },
    /// A binary frame.
    Binary {
        /// Client slot.
        slot: u8,
        /// The frame's bytes.
        bytes: Vec<u8>,
    },
    /// `authenticate` as [`USERS`]`[user]` with the right secret (0), a wrong one (1) or
    /// the empty one (2). For the PHC user, the secret sent is `right` or `nope` or empty,
    /// and the verdict comes with [`Event::Verified`].
    Authenticate {
        /// Client slot.
        slot: u8,
        /// Index into [`USERS`].
        user: u8,
        /// 0 right, 1 wrong, 2 empty.
        secret: u8,
    },
    /// `subscribe` to [`CHANNELS`]`[channel]`.
    Subscribe {
        /// Client slot.
        slot: u8,
        /// Index into [`CHANNELS`].
        channel: u8,
    },
    /// `unsubscribe` from [`CHANNELS`]`[channel]`.
    Unsubscribe {
        /// Client slot.
        slot: u8,
        /// Index into [`CHANNELS`].
        channel: u8,
    },
    /// `broadcast` on [`CHANNELS`]`[channel]` with data variant `data` ([`data_text`]).
    Broadcast {
        /// Client slot.
        slot: u8,
        /// Index into [`CHANNELS`].
        channel: u8,
        /// Data variant.
        data: u8,
    },
    /// `broadcast` whose `data` is the given text, inserted unchecked.
    BroadcastRaw {
        /// Client slot.
        slot: u8,
        /// Index into [`CHANNELS`].
        channel: u8,
        /// The raw `data` text.
        data: Vec<u8>,
    },
    /// `direct` to slot `target`'s token (its current or, if none, its last one) written as
    /// is (`how` 0), in uppercase (1), as `""` (2) or with the last digit changed (3).
    Direct {
        /// Client slot.
        slot: u8,
        /// Slot whose token is the target.
        target: u8,
        /// How the token is written.
        how: u8,
        /// Data variant.
        data: u8,
    },
    /// `logout`, with `true` or an object.
    Logout {
        /// Client slot.
        slot: u8,
        /// `{"why":1}` instead of `true`.
        object: bool,
    },
    /// The `disconnect` request, with `true` or an object.
    DisconnectRequest {
        /// Client slot.
        slot: u8,
        /// `{}` instead of `true`.
        object: bool,
    },
    /// `subscribe` to an arbitrary channel name (made UTF-8 lossily, then JSON-escaped).
    SubscribeNamed {
        /// Client slot.
        slot: u8,
        /// The name's bytes.
        name: Vec<u8>,
    },
    /// `direct` to an arbitrary client string (made UTF-8 lossily, then JSON-escaped).
    DirectNamed {
        /// Client slot.
        slot: u8,
        /// The client string's bytes.
        client: Vec<u8>,
    },
    /// A broadcast from another node of a cluster on [`CHANNELS`]`[channel]`.
    RemoteBroadcast {
        /// Index into [`CHANNELS`].
        channel: u8,
    },
    /// The frontend's verdict on the slot's outstanding verification ([`Output::Start`] of
    /// [`Operation::VerifySecret`]), fed with `handle_completion`. When none is outstanding,
    /// the slot's last operation id (stale) or one the engine never gave is fed instead,
    /// which must do nothing. Until the verdict comes, the driver feeds no frame from that
    /// slot, as a frontend must not.
    Verified {
        /// Client slot.
        slot: u8,
        /// Whether the secret matched.
        ok: bool,
    },
}

/// Reads the input bytes; reads past the end give zeros.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    fn short(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte());
        self.take(len).to_vec()
    }

    fn long(&mut self) -> Vec<u8> {
        let len = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        self.take(len).to_vec()
    }
}

impl Event {
    /// Decodes every event of `data`.
    pub fn decode_all(data: &[u8]) -> Vec<Event> {
        let mut reader = Reader { data };
        let mut events = Vec::new();
        while !reader.data.is_empty() {
            events.push(Event::decode(&mut reader));
        }
        events
    }

    fn decode(r: &mut Reader<'_>) -> Event {
        let op = r.byte();
        let slot = (op >> 4) & 3;
        match op & 0x0f {
            0 => Event::Connect { slot },
            1 => Event::Disconnect { slot },
            2 => Event::Text {
                slot,
                text: r.long(),
            },
            3 => Event::Binary {
                slot,
                bytes: r.long(),
            },
            4 => {
                let a = r.byte();
                Event::Authenticate {
                    slot,
                    user: (a % 8) % USERS.len() as u8,
                    secret: (a / 8) % 3,
                }
            }
            5 => Event::Subscribe {
                slot,
                channel: r.byte() % CHANNELS.len() as u8,
            },
            6 => Event::Unsubscribe {
                slot,
                channel: r.byte() % CHANNELS.len() as u8,
            },
            7 => {
                let a = r.byte();
                Event::Broadcast {
                    slot,
                    channel: (a % 16) % CHANNELS.len() as u8,
                    data: (a / 16) % DATA_KINDS,
                }
            }
            8 => Event::BroadcastRaw {
                slot,
                channel: r.byte() % CHANNELS.len() as u8,
                data: r.long(),
            },
            9 => {
                let a = r.byte();
                Event::Direct {
                    slot,
                    target: a % 4,
                    how: (a / 4) % 4,
                    data: (a / 16) % DATA_KINDS,
                }
            }
            10 => Event::Logout {
                slot,
                object: r.byte() & 1 == 1,
            },
            11 => Event::DisconnectRequest {
                slot,
                object: r.byte() & 1 == 1,
            },
            12 => Event::SubscribeNamed {
                slot,
                name: r.short(),
            },
            13 => Event::DirectNamed {
                slot,
                client: r.short(),
            },
            14 => Event::RemoteBroadcast {
                channel: r.byte() % CHANNELS.len() as u8,
            },
            _ => Event::Verified {
                slot,
                ok: r.byte() & 1 == 1,
            },
        }
    }

    /// Appends this event's bytes to `out`. Decoding them gives the event back when its
    /// fields are in range and its byte strings fit their length prefix.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let op = |kind: u8, slot: u8| kind | ((slot & 3) << 4);
        let long = |out: &mut Vec<u8>, bytes: &[u8]| {
            let len = u16::try_from(bytes.len()).expect("at most 65535 bytes");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        };
        let short = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.push(u8::try_from(bytes.len()).expect("at most 255 bytes"));
            out.extend_from_slice(bytes);
        };
        match self {
            Event::Connect { slot } => out.push(op(0, *slot)),
            Event::Disconnect { slot } => out.push(op(1, *slot)),
            Event::Text { slot, text } => {
                out.push(op(2, *slot));
                long(out, text);
            }
            Event::Binary { slot, bytes } => {
                out.push(op(3, *slot));
                long(out, bytes);
            }
            Event::Authenticate { slot, user, secret } => {
                out.extend([op(4, *slot), user + 8 * secret]);
            }
            Event::Subscribe { slot, channel } => out.extend([op(5, *slot), *channel]),
            Event::Unsubscribe { slot, channel } => out.extend([op(6, *slot), *channel]),
            Event::Broadcast {
                slot,
                channel,
                data,
            } => out.extend([op(7, *slot), channel + 16 * data]),
            Event::BroadcastRaw {
                slot,
                channel,
                data,
            } => {
                out.extend([op(8, *slot), *channel]);
                long(out, data);
            }
            Event::Direct {
                slot,
                target,
                how,
                data,
            } => out.extend([op(9, *slot), target + 4 * how + 16 * data]),
            Event::Logout { slot, object } => out.extend([op(10, *slot), u8::from(*object)]),
            Event::DisconnectRequest { slot, object } => {
                out.extend([op(11, *slot), u8::from(*object)]);
            }
            Event::SubscribeNamed { slot, name } => {
                out.push(op(12, *slot));
                short(out, name);
            }
            Event::DirectNamed { slot, client } => {
                out.push(op(13, *slot));
                short(out, client);
            }
            Event::RemoteBroadcast { channel } => out.extend([op(14, 0), *channel]),
            Event::Verified { slot, ok } => out.extend([op(15, *slot), u8::from(*ok)]),
        }
    }
}

/// Encodes a whole sequence of events.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        event.encode(&mut out);
    }
    out
}

/// The `data` text of template variant `kind`, or `None` for a request without `data`.
/// Variant 8 nests one level too deep, so its request is `INVALID_PAYLOAD`.
pub fn data_text(kind: u8) -> Option<String> {
    // The request object and the action object are levels 1 and 2.
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    match kind % DATA_KINDS {
        0 => None,
        1 => Some("null".into()),
        2 => Some("-42.5e3".into()),
        3 => Some(r#""quote \" backslash \\ \u0001 é""#.into()),
        4 => Some(r#"{"a":[1,{"b":null}],"a":"dup"}"#.into()),
        5 => Some(format!("\"{}\"", "x".repeat(98))),
        6 => Some("1e999999".into()),
        7 => Some(nest(rocket_proto::MAX_NESTING - 2)),
        _ => Some(nest(rocket_proto::MAX_NESTING - 1)),
    }
}

/// Replays `data` as events against a fresh engine, panicking when the engine breaks its
/// contract (see the module docs).
pub fn run(data: &[u8]) {
    run_events(&Event::decode_all(data));
}

/// Replays already decoded events, like [`run`]: twice, with broadcasts as one
/// `Output::Send` per recipient and as one `Output::Broadcast` each
/// (`Engine::set_whole_broadcasts`), which must look the same to every client.
pub fn run_events(events: &[Event]) {
    for whole in [false, true] {
        let mut world = World::new(whole);
        for event in events {
            world.apply(event);
        }
        world.finish();
    }
}

/// What the model knows about one live connection, learnt from the engine's replies.
#[derive(Debug)]
struct Conn {
    id: ClientId,
    token: Token,
    /// `token` as the protocol writes it (lowercase hex), kept to compare replies with.
    hex: String,
    /// The session's permissions; `None` while anonymous.
    session: Option<Permissions>,
    subscriptions: BTreeSet<String>,
    failed_auth: u32,
    /// A verification awaits the frontend's verdict.
    verifying: Option<OpId>,
}

/// The reply a template request must get, when the model can tell.
#[derive(Debug)]
enum Expect {
    /// `{"err":NAME}`.
    Err(&'static str),
    /// `{"key":"value"}`.
    Ok(&'static str, String),
    /// `{"loggedOut":true}`.
    LoggedOut,
    /// No reply, a close with 1000.
    Closed,
    /// No reply yet, an [`Operation::VerifySecret`] of this secret.
    Verify(String),
}

/// A delivery's expected `data`: absent, or this text.
type Data = Option<String>;

/// A set of at most [`SLOTS`] client ids, without allocating (the model's sets of live
/// clients and of recipients).
#[derive(Default, Clone, Copy)]
struct IdSet([Option<ClientId>; SLOTS]);

impl IdSet {
    fn insert(&mut self, id: ClientId) {
        if !self.contains(&id) {
            let free = self.0.iter_mut().find(|s| s.is_none());
            *free.expect("at most SLOTS ids") = Some(id);
        }
    }

    fn contains(&self, id: &ClientId) -> bool {
        self.0.contains(&Some(*id))
    }

    /// Removes `id`; whether it was there.
    fn remove(&mut self, id: &ClientId) -> bool {
        match self.0.iter_mut().find(|s| **s == Some(*id)) {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    fn len(&self) -> usize {
        self.0.iter().flatten().count()
    }
}

impl std::fmt::Debug for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.iter().flatten()).finish()
    }
}

struct World {
    engine: Engine,
    config: EngineConfig,
    slots: [Option<Conn>; SLOTS],
    /// Each slot's last connection, for frames and directs to clients that are gone.
    last: [Option<(ClientId, Token)>; SLOTS],
    /// Each slot's last operation, for verdicts on operations that are over.
    last_op: [Option<OpId>; SLOTS],
    next_id: u64,
    outputs: Vec<Output>,
}

impl World {
    fn new(whole_broadcasts: bool) -> Self {
        let config = EngineConfig::from_json(CONFIG).expect("the fuzz config is valid");
        let mut engine = Engine::new(&config, HashSeed([1, 2, 3, 4]));
        engine.set_whole_broadcasts(whole_broadcasts);
        assert_eq!(
            config.limits.max_subscriptions_per_client,
            MAX_SUBSCRIPTIONS
        );
        assert_eq!(config.limits.max_failed_auth, MAX_FAILED_AUTH);
        World {
            engine,
            config,
            slots: Default::default(),
            last: [None; SLOTS],
            last_op: [None; SLOTS],
            next_id: 1,
            outputs: Vec::new(),
        }
    }

    fn fresh(&mut self) -> (ClientId, Token) {
        let n = self.next_id;
        self.next_id += 1;
        let mut bytes = [0x5a; 16];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        (ClientId(n), Token::from_bytes(bytes))
    }

    /// The id frames from `slot` carry: its live connection, else its last one, else one
    /// that never connected.
    fn id_of(&self, slot: usize) -> ClientId {
        match (&self.slots[slot], self.last[slot]) {
            (Some(conn), _) => conn.id,
            (None, Some((id, _))) => id,
            (None, None) => ClientId(u64::MAX - slot as u64),
        }
    }

    fn conn(&self, id: ClientId) -> Option<&Conn> {
        self.slots.iter().flatten().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ClientId) -> Option<&mut Conn> {
        self.slots.iter_mut().flatten().find(|c| c.id == id)
    }

    /// The engine's outputs, a whole broadcast as a send to each of its clients.
    fn drain(&mut self) -> Vec<Output> {
        self.engine.drain_outputs(&mut self.outputs);
        self.outputs.drain(..).flat_map(Output::split).collect()
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Connect { slot } => self.connect(usize::from(slot & 3)),
            Event::Disconnect { slot } => {
                let slot = usize::from(slot & 3);
                let id = self.id_of(slot);
                self.engine.handle_disconnect(id);
                self.slots[slot] = None;
                let outputs = self.drain();
                assert!(outputs.is_empty(), "disconnect produced {outputs:?}");
            }
            Event::Text { slot, text } => {
                let text = String::from_utf8_lossy(text);
                self.frame(*slot, Message::Text(&text), None);
            }
            Event::Binary { slot, bytes } => {
                let expect = Some((Expect::Err("INVALID_PAYLOAD"), None));
                self.frame(*slot, Message::Binary(bytes), expect);
            }
            Event::Authenticate { slot, user, secret } => {
                let name = USERS[usize::from(*user) % USERS.len()];
                let configured = self.config.users.get(name);
                let secret = match (secret % 3, configured) {
                    (0, _) if name == HASHED => "right".to_owned(),
                    (0, Some(u)) => u.secret.clone(),
                    (0 | 1, _) => "nope".to_owned(),
                    _ => String::new(),
                };
                // The keys in the order `serde_json::json!` wrote them (sorted).
                let text = format!(
                    r#"{{"authenticate":{{"secret":{},"user":{}}}}}"#,
                    json(&secret),
                    json(name)
                );
                let expect = match configured {
                    None => Expect::Err("INVALID_USER"),
                    Some(_) if name == HASHED => Expect::Verify(secret),
                    Some(u) if !u.secret.is_empty() && u.secret != secret => {
                        Expect::Err("INVALID_CREDENTIALS")
                    }
                    Some(_) => Expect::Ok("authenticated", name.to_owned()),
                };
                self.frame(*slot, Message::Text(&text), Some((expect, None)));
            }
            Event::Subscribe { slot, channel } => {
                let channel = CHANNELS[usize::from(*channel) % CHANNELS.len()];
                self.subscribe(*slot, channel);
            }
            Event::SubscribeNamed { slot, name } => {
                let name = String::from_utf8_lossy(name);
                self.subscribe(*slot, &name);
            }
            Event::Unsubscribe { slot, channel } => {
                let channel = CHANNELS[usize::from(*channel) % CHANNELS.len()];
                let text = format!(r#"{{"unsubscribe":{{"channel":{}}}}}"#, json(channel));
                let expect = Expect::Ok("unsubscribed", channel.to_owned());
                self.frame(*slot, Message::Text(&text), Some((expect, None)));
            }
            Event::Broadcast {
                slot,
                channel,
                data,
            } => {
                let channel = CHANNELS[usize::from(*channel) % CHANNELS.len()];
                let too_deep = data % DATA_KINDS == DATA_KINDS - 1;
                let data = data_text(*data);
                let text = broadcast_text(channel, data.as_deref());
                let expect = if too_deep {
                    Expect::Err("INVALID_PAYLOAD")
                } else {
                    self.expect_broadcast(*slot, channel)
                };
                self.frame(*slot, Message::Text(&text), Some((expect, data)));
            }
            Event::BroadcastRaw {
                slot,
                channel,
                data,
            } => {
                let channel = CHANNELS[usize::from(*channel) % CHANNELS.len()];
                let data = String::from_utf8_lossy(data);
                let text = broadcast_text(channel, Some(&data));
                self.frame(*slot, Message::Text(&text), None);
            }
            Event::Direct {
                slot,
                target,
                how,
                data,
            } => self.direct(*slot, *target, *how, *data),
            Event::DirectNamed { slot, client } => {
                let client = String::from_utf8_lossy(client);
                let text = format!(r#"{{"direct":{{"client":{},"event":"e"}}}}"#, json(&client));
                self.frame(*slot, Message::Text(&text), None);
            }
            Event::Logout { slot, object } => {
                let text = if *object {
                    r#"{"logout":{"why":1}}"#
                } else {
                    r#"{"logout":true}"#
                };
                let expect = Some((Expect::LoggedOut, None));
                self.frame(*slot, Message::Text(text), expect);
            }
            Event::DisconnectRequest { slot, object } => {
                let text = if *object {
                    r#"{"disconnect":{}}"#
                } else {
                    r#"{"disconnect":true}"#
                };
                self.frame(*slot, Message::Text(text), Some((Expect::Closed, None)));
            }
            Event::RemoteBroadcast { channel } => {
                let channel = CHANNELS[usize::from(*channel) % CHANNELS.len()];
                let payload = Payload::text(format!(
                    r#"{{"event":"remote","channel":{},"data":[1]}}"#,
                    json(&channel)
                ));
                self.engine
                    .handle_remote(&Topic::Channel(channel.into()), payload.clone());
                let outputs = self.drain();
                let mut expected = self.subscribers(channel);
                for output in &outputs {
                    match output {
                        Output::Send { client, payload: p } => {
                            assert_eq!(p, &payload, "remote broadcast altered");
                            assert!(expected.remove(client), "{client} got a remote broadcast");
                        }
                        other => panic!("remote broadcast produced {other:?}"),
                    }
                }
                assert!(
                    expected.is_empty(),
                    "{expected:?} missed a remote broadcast"
                );
            }
            Event::Verified { slot, ok } => {
                let slot = usize::from(slot & 3);
                let outstanding = self.slots[slot].as_ref().and_then(|c| c.verifying);
                let op = outstanding
                    .or(self.last_op[slot])
                    .unwrap_or(OpId(u64::MAX - slot as u64));
                self.engine
                    .handle_completion(op, Completion::SecretVerified(*ok));
                let outputs = self.drain();
                match self.slots[slot].as_mut() {
                    Some(conn) if conn.verifying.is_some() => {
                        conn.verifying = None;
                        let expect = if *ok {
                            Expect::Ok("authenticated", HASHED.to_owned())
                        } else {
                            Expect::Err("INVALID_CREDENTIALS")
                        };
                        self.check(slot, &outputs, Some((expect, None)));
                    }
                    _ => assert!(outputs.is_empty(), "unasked verdict produced {outputs:?}"),
                }
            }
        }
        self.check_counts();
    }

    fn connect(&mut self, slot: usize) {
        if let Some(conn) = &self.slots[slot] {
            let (id, token) = (conn.id, conn.token);
            let (new_id, new_token) = self.fresh();
            assert_eq!(
                self.engine.handle_connect(id, new_token),
                Err(ConnectError::DuplicateClient(id))
            );
            assert_eq!(
                self.engine.handle_connect(new_id, token),
                Err(ConnectError::DuplicateToken)
            );
            let outputs = self.drain();
            assert!(outputs.is_empty(), "refused connect produced {outputs:?}");
            return;
        }
        let (id, token) = self.fresh();
        self.engine
            .handle_connect(id, token)
            .expect("fresh ids and tokens are accepted");
        let outputs = self.drain();
        let [Output::Send { client, payload }] = outputs.as_slice() else {
            panic!("connect produced {outputs:?}");
        };
        assert_eq!(*client, id);
        let fields = object(payload);
        assert_eq!(fields.len(), 1, "{payload:?}");
        let hex = token.to_string();
        assert_eq!(string_field(&fields, "connected").as_ref(), Some(&hex));
        self.slots[slot] = Some(Conn {
            id,
            token,
            hex,
            session: None,
            subscriptions: BTreeSet::new(),
            failed_auth: 0,
            verifying: None,
        });
        self.last[slot] = Some((id, token));
    }

    fn subscribe(&mut self, slot: u8, channel: &str) {
        let text = format!(r#"{{"subscribe":{{"channel":{}}}}}"#, json(channel));
        let expect = if channel.is_empty() || channel.len() > rocket_proto::MAX_NAME_BYTES {
            Expect::Err("INVALID_PAYLOAD")
        } else {
            match &self.slots[usize::from(slot & 3)] {
                Some(c) if !c.session.is_some_and(|p| p.contains(Permissions::READ)) => {
                    Expect::Err("ACCESS_DENIED")
                }
                Some(c)
                    if !c.subscriptions.contains(channel)
                        && c.subscriptions.len() >= MAX_SUBSCRIPTIONS =>
                {
                    Expect::Err("LIMIT_EXCEEDED")
                }
                _ => Expect::Ok("subscribed", channel.to_owned()),
            }
        };
        self.frame(slot, Message::Text(&text), Some((expect, None)));
    }

    fn expect_broadcast(&self, slot: u8, channel: &str) -> Expect {
        match &self.slots[usize::from(slot & 3)] {
            Some(c) if !c.session.is_some_and(|p| p.contains(Permissions::WRITE)) => {
                Expect::Err("ACCESS_DENIED")
            }
            _ if self.subscribers(channel).is_empty() => Expect::Err("INVALID_CHANNEL"),
            _ => Expect::Ok("broadcasted", channel.to_owned()),
        }
    }

    fn direct(&mut self, slot: u8, target: u8, how: u8, data: u8) {
        let target = usize::from(target & 3);
        let hex = match (&self.slots[target], self.last[target]) {
            (Some(c), _) => c.hex.clone(),
            (None, Some((_, token))) => token.to_string(),
            (None, None) => String::new(),
        };
        let client = match how % 4 {
            0 => hex,
            1 => hex.to_uppercase(),
            2 => String::new(),
            _ => {
                let mut hex = hex;
                if let Some(last) = hex.pop() {
                    hex.push(if last == '0' { '1' } else { '0' });
                }
                hex
            }
        };
        let too_deep = data % DATA_KINDS == DATA_KINDS - 1;
        let data = data_text(data);
        let mut text = format!(r#"{{"direct":{{"event":"dm","client":{}"#, json(&client));
        if let Some(data) = &data {
            text.push_str(",\"data\":");
            text.push_str(data);
        }
        text.push_str("}}");
        let expect = match &self.slots[usize::from(slot & 3)] {
            _ if too_deep => Expect::Err("INVALID_PAYLOAD"),
            Some(c) if !c.session.is_some_and(|p| p.contains(Permissions::WRITE)) => {
                Expect::Err("ACCESS_DENIED")
            }
            _ if !self.slots.iter().flatten().any(|c| c.hex == client) => {
                Expect::Err("INVALID_CLIENT")
            }
            _ => Expect::Ok("directSent", client),
        };
        self.frame(slot, Message::Text(&text), Some((expect, data)));
    }

    /// Live clients subscribed to `channel`, according to the model.
    fn subscribers(&self, channel: &str) -> IdSet {
        let mut ids = IdSet::default();
        for c in self.slots.iter().flatten() {
            if c.subscriptions.contains(channel) {
                ids.insert(c.id);
            }
        }
        ids
    }

    /// Feeds one frame from `slot` and checks what comes out. `expect` is the reply a
    /// template request must get and the `data` its deliveries must carry.
    fn frame(&mut self, slot: u8, frame: Message<'_>, expect: Option<(Expect, Data)>) {
        let slot = usize::from(slot & 3);
        if self.slots[slot]
            .as_ref()
            .is_some_and(|c| c.verifying.is_some())
        {
            return; // A frontend holds frames back while a verification is outstanding.
        }
        let id = self.id_of(slot);
        self.engine.handle_message(id, frame);
        let outputs = self.drain();
        if self.slots[slot].is_none() {
            assert!(
                outputs.is_empty(),
                "a frame from gone {id} produced {outputs:?}"
            );
            return;
        }
        self.check(slot, &outputs, expect);
    }

    /// Checks what a request of the live client in `slot` (or the verdict on its secret)
    /// produced, and updates the model.
    fn check(&mut self, slot: usize, outputs: &[Output], expect: Option<(Expect, Data)>) {
        let id = self.slots[slot].as_ref().expect("live").id;
        // Every output goes to a live client, nothing follows a Close, texts are objects.
        let mut live = IdSet::default();
        for c in self.slots.iter().flatten() {
            live.insert(c.id);
        }
        let mut replies = Vec::new();
        let mut deliveries = Vec::new();
        let mut close = None;
        let mut verify = None;
        let mut auth_failed = None;
        for output in outputs {
            match output {
                Output::Send { client, payload } => {
                    assert!(live.contains(client), "send to gone {client}: {outputs:?}");
                    let fields = object(payload);
                    if fields.contains_key("event") {
                        deliveries.push((*client, payload, fields));
                    } else {
                        assert_eq!(*client, id, "a reply went to another client: {outputs:?}");
                        replies.push(fields);
                    }
                }
                Output::Close {
                    client,
                    code,
                    reason,
                } => {
                    assert_eq!(*client, id, "a frame closed another client: {outputs:?}");
                    assert!(live.remove(client), "close of gone {client}: {outputs:?}");
                    assert!(reason.len() <= 123, "close reason too long: {reason:?}");
                    close = Some(*code);
                }
                Output::Start {
                    client,
                    op,
                    operation,
                } => {
                    let Operation::VerifySecret(verification) = &**operation else {
                        panic!("unknown operation {operation:?}");
                    };
                    assert_eq!(*client, id, "verify for another client: {outputs:?}");
                    assert!(verify.is_none(), "two verifications: {outputs:?}");
                    assert!(
                        self.last_op.iter().flatten().all(|last| last < op),
                        "operation ids are fresh: {outputs:?}"
                    );
                    let configured = &self.config.users[HASHED].secret;
                    assert_eq!(&*verification.phc, configured.as_str());
                    verify = Some((*op, verification.secret.clone()));
                }
                Output::AuthFailed {
                    client,
                    user,
                    error,
                } => {
                    assert_eq!(*client, id, "auth failure of another client: {outputs:?}");
                    assert!(live.contains(client), "auth failure of gone {client}");
                    assert!(auth_failed.is_none(), "two auth failures: {outputs:?}");
                    assert!(!user.is_empty() && user.len() <= rocket_proto::MAX_NAME_BYTES);
                    auth_failed = Some(error.name());
                }
                other => panic!("unknown output {other:?}"),
            }
        }

        if let Some((op, secret)) = verify {
            assert!(
                replies.is_empty() && deliveries.is_empty() && close.is_none(),
                "a verification comes alone: {outputs:?}"
            );
            if let Some((expect, _)) = &expect {
                assert!(
                    matches!(expect, Expect::Verify(s) if *s == secret),
                    "expected {expect:?}"
                );
            }
            // The session and subscriptions ended when the authentication began.
            let conn = self.conn_mut(id).expect("live");
            conn.session = None;
            conn.subscriptions.clear();
            conn.verifying = Some(op);
            self.last_op[slot] = Some(op);
            return;
        }
        if close == Some(CloseCode::NORMAL) {
            assert!(
                replies.is_empty() && deliveries.is_empty(),
                "disconnect got {outputs:?}"
            );
            if let Some((expect, _)) = &expect {
                assert!(matches!(expect, Expect::Closed), "expected {expect:?}");
            }
            self.slots[slot] = None;
            return;
        }
        let [reply] = replies.as_slice() else {
            panic!("a request got {} replies: {outputs:?}", replies.len());
        };
        assert_eq!(reply.len(), 1, "a reply has exactly one key: {outputs:?}");
        let (key, value) = reply.iter().next().expect("one key");
        let value = value.get();
        // The reply's value when it is a string (every reply but `loggedOut`'s).
        let string: Option<String> = serde_json::from_str(value).ok();
        if let Some((expect, _)) = &expect {
            let matches = match expect {
                Expect::Err(name) => key == "err" && string.as_deref() == Some(*name),
                Expect::Ok(k, v) => key == k && string.as_ref() == Some(v),
                Expect::LoggedOut => key == "loggedOut" && value == "true",
                Expect::Closed | Expect::Verify(_) => false,
            };
            if !matches {
                let expected = match expect {
                    Expect::Err(name) => format!(r#"err={}"#, json(name)),
                    Expect::Ok(key, value) => format!("{key}={}", json(value)),
                    Expect::LoggedOut => "loggedOut=true".to_owned(),
                    Expect::Closed => "a close with 1000".to_owned(),
                    Expect::Verify(_) => "a verification".to_owned(),
                };
                panic!("got {key}={value}, expected {expected}; outputs: {outputs:?}");
            }
        }

        let conn = self.conn(id).expect("live");
        let session = conn.session;
        let may = |p| session.is_some_and(|s: Permissions| s.contains(p));
        let text = || string.clone().expect("a string reply");
        let mut expected_deliveries = IdSet::default();
        let mut route = ("", String::new());
        match key.as_ref() {
            "err" => {
                let name = text();
                match name.as_str() {
                    "INVALID_USER" | "INVALID_CREDENTIALS" => {
                        assert_eq!(auth_failed, Some(name.as_str()), "{outputs:?}");
                        let conn = self.conn_mut(id).expect("live");
                        conn.session = None;
                        conn.subscriptions.clear();
                        conn.failed_auth += 1;
                        let exhausted = conn.failed_auth >= MAX_FAILED_AUTH;
                        if exhausted {
                            assert_eq!(close, Some(CloseCode::POLICY), "{outputs:?}");
                            self.slots[slot] = None;
                        }
                    }
                    "ACCESS_DENIED" => assert_ne!(session, Some(Permissions::ALL)),
                    "LIMIT_EXCEEDED" => {
                        assert!(may(Permissions::READ));
                        assert_eq!(conn.subscriptions.len(), MAX_SUBSCRIPTIONS);
                    }
                    "INVALID_CHANNEL" | "INVALID_CLIENT" => assert!(may(Permissions::WRITE)),
                    "INVALID_PAYLOAD" => {}
                    other => panic!("unknown error {other:?}"),
                }
            }
            "authenticated" => {
                let name = text();
                let permission = self.config.users[&name].permission;
                let conn = self.conn_mut(id).expect("live");
                conn.session = Some(permission);
                conn.subscriptions.clear();
            }
            "subscribed" => {
                assert!(may(Permissions::READ), "{outputs:?}");
                let conn = self.conn_mut(id).expect("live");
                conn.subscriptions.insert(text());
                assert!(conn.subscriptions.len() <= MAX_SUBSCRIPTIONS);
            }
            "unsubscribed" => {
                let conn = self.conn_mut(id).expect("live");
                conn.subscriptions.remove(&text());
            }
            "loggedOut" => {
                assert_eq!(value, "true");
                let conn = self.conn_mut(id).expect("live");
                conn.session = None;
                conn.subscriptions.clear();
            }
            "broadcasted" => {
                assert!(may(Permissions::WRITE), "{outputs:?}");
                let channel = text();
                expected_deliveries = self.subscribers(&channel);
                assert!(!expected_deliveries.is_empty(), "broadcast to no one");
                route = ("channel", channel);
            }
            "directSent" => {
                assert!(may(Permissions::WRITE), "{outputs:?}");
                let target = text();
                let to = self
                    .slots
                    .iter()
                    .flatten()
                    .find(|c| c.hex == target)
                    .expect("directSent to a live token");
                expected_deliveries.insert(to.id);
                route = ("from", conn.hex.clone());
            }
            other => panic!("unknown reply {other:?}: {outputs:?}"),
        }
        // An AuthFailed notice comes with, and only with, a failed authentication.
        let auth_error =
            key == "err" && matches!(value, r#""INVALID_USER""# | r#""INVALID_CREDENTIALS""#);
        assert_eq!(auth_failed.is_some(), auth_error, "{outputs:?}");
        if close.is_some() && self.slots[slot].is_some() {
            panic!("unexpected close: {outputs:?}");
        }

        // Deliveries: exactly one per recipient, one shared payload, the right route.
        let first = deliveries.first().map(|(_, payload, _)| *payload);
        for (client, payload, fields) in &deliveries {
            assert!(
                expected_deliveries.remove(client),
                "unexpected delivery to {client}: {outputs:?}"
            );
            assert_eq!(Some(*payload), first, "deliveries differ");
            assert_eq!(string_field(fields, route.0).as_ref(), Some(&route.1));
            let allowed = ["event", "channel", "from", "data"];
            assert!(fields.keys().all(|k| allowed.contains(&k.as_ref())));
            assert_eq!(fields.len(), 2 + usize::from(fields.contains_key("data")));
            if let Some((_, data)) = &expect {
                let got = fields.get("data").map(|d| d.get());
                assert_eq!(got, data.as_deref(), "data altered: {outputs:?}");
            }
        }
        assert!(
            expected_deliveries.is_empty(),
            "{expected_deliveries:?} missed a delivery: {outputs:?}"
        );
    }

    /// The engine's counts agree with the model: clients, channels, and the subscribers of
    /// every channel a live client is subscribed to.
    fn check_counts(&self) {
        let live = self.slots.iter().flatten().count();
        assert_eq!(self.engine.client_count(), live);
        let mut channels = 0;
        for (i, conn) in self.slots.iter().flatten().enumerate() {
            for channel in &conn.subscriptions {
                let mut earlier = self.slots.iter().flatten().take(i);
                if earlier.any(|c| c.subscriptions.contains(channel)) {
                    continue; // counted at its first subscriber
                }
                channels += 1;
                let count = self.subscribers(channel).len();
                assert_eq!(self.engine.subscriber_count(channel), count, "{channel:?}");
            }
        }
        assert_eq!(self.engine.channel_count(), channels);
    }

    /// Everyone leaves; the engine must keep nothing.
    fn finish(mut self) {
        for slot in 0..SLOTS {
            self.apply(&Event::Disconnect { slot: slot as u8 });
        }
        assert!(self.engine.is_idle(), "not idle: {:?}", self.engine);
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("serializes")
}

fn broadcast_text(channel: &str, data: Option<&str>) -> String {
    let mut text = format!(
        r#"{{"broadcast":{{"event":"ev","channel":{}"#,
        json(channel)
    );
    if let Some(data) = data {
        text.push_str(",\"data\":");
        text.push_str(data);
    }
    text.push_str("}}");
    text
}

/// A payload's top-level fields: each key (unescaped) and its value as raw JSON, borrowed
/// from the payload.
type Fields<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

/// A payload's top-level fields; panics unless it is a text payload holding one JSON object
/// with distinct keys. Values are checked for syntax only (numbers of any size and nesting
/// of any depth are allowed, as `data` may carry them).
fn object(payload: &Payload) -> Fields<'_> {
    /// An object key, borrowed unless it has escapes.
    struct Key<'a>(Cow<'a, str>);
    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E: serde::de::Error>(
                    self,
                    v: &'de str,
                ) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }
    struct FieldsVisitor;
    impl<'de> Visitor<'de> for FieldsVisitor {
        type Value = Fields<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields = BTreeMap::new();
            while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                if fields.insert(key, value).is_some() {
                    return Err(serde::de::Error::custom("duplicate key"));
                }
            }
            Ok(fields)
        }
    }
    let text = payload
        .as_text()
        .unwrap_or_else(|| panic!("binary payload {payload:?}"));
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de)
        .deserialize_map(FieldsVisitor)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"));
    de.end()
        .unwrap_or_else(|e| panic!("trailing text ({e}): {text}"));
    fields
}

fn string_field(fields: &Fields<'_>, key: &str) -> Option<String> {
    fields
        .get(key)
        .map(|v| serde_json::from_str(v.get()).expect("a string field"))
}
