//! Model-based test of the engine (proptest-state-machine).
//!
//! A small reference model (sets and maps) of the clients of one hub — who is connected,
//! each session's permissions, subscriptions and failed authentications — runs next to the
//! engine. Random transitions connect and disconnect up to four clients and send frames on
//! three channels as three users with random permissions and random limits: valid requests
//! of every action, mutated requests (wrong types, extra keys, missing fields, truncation,
//! overlong names, deep nesting…), garbage text and binary frames, and reloads that
//! remove, add and change users (secret, permission) and limits. The model looks a
//! session's permissions up at each request, as the protocol states it; the engine
//! refreshes them at the reload. After every transition
//! each client must have received exactly what the model predicts, in order, and nothing
//! else; the engine's counts must match the model's; at the end, after everyone left, the
//! engine must be idle.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use rocket_proto::{ClientId, ConnectError, EngineConfig, HashSeed, Payload, Token};
use serde_json::{Map, Value, json};
use support::{Received, Sim, token_for};

/// Client slots: each holds at most one connection at a time.
const SLOTS: usize = 4;
/// Channel names: plain, with escapes and non-ASCII, and 255 bytes long.
const CHANNELS: usize = 3;
/// Configured users and their secrets; `bob` accepts any secret.
const USERS: [(&str, &str); 3] = [("alice", "pw"), ("bob", ""), ("carol", "s3cret")];
/// User names tried: the three users, an unknown one and a wrong-case one.
const USER_NAMES: [&str; 5] = ["alice", "bob", "carol", "mallory", "Alice"];
const SECRETS: [&str; 6] = ["pw", "s3cret", "", "PW", "pw ", "zz"];
const EVENTS: [&str; 3] = ["e", "ping", "ünï\"code\n"];
const DATA: usize = 11;

fn channel(i: usize) -> String {
    match i {
        0 => "news".into(),
        1 => "a\"b\\c\né".into(),
        // 1 + 127 × 2 = 255 bytes.
        _ => format!("x{}", "ü".repeat(127)),
    }
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// The `data` values tried; `None` means the field is absent.
fn data(i: usize) -> Option<Value> {
    Some(match i {
        0 => return None,
        1 => Value::Null,
        2 => json!(true),
        3 => json!(0),
        4 => json!(-17),
        5 => json!(1.5),
        6 => json!("s\"\n"),
        7 => json!([1, "two", null]),
        8 => json!({ "k": { "n": [] } }),
        9 => json!(u64::MAX),
        // With the request and the action objects: 128 levels, the most allowed.
        _ => serde_json::from_str(&nested(126)).expect("126 levels parse"),
    })
}

// ---------------------------------------------------------------------------------------
// Transitions

#[derive(Clone, Debug)]
enum Transition {
    /// Connects a new client in `slot`; if one is there, the engine must refuse the id.
    Connect(usize),
    /// Connects a new client in `slot` with the token of `victim`'s current (refused) or
    /// last (accepted: tokens are unique among live clients only) connection.
    ConnectWithTokenOf { slot: usize, victim: usize },
    /// The frontend reports that the client in `slot` (or its last one) is gone.
    Disconnect(usize),
    /// A frame from the client in `slot` (or, when empty, from its last client).
    Send { slot: usize, message: Message },
    /// A broadcast accepted by another node of a cluster.
    Remote { channel: usize, data: usize },
    /// The hub's config reloaded with these users (by index in `USERS`; `None`: absent)
    /// and limits.
    Reload {
        users: [Option<UserState>; 3],
        max_subscriptions: usize,
        max_failed_auth: u32,
    },
}

/// A configured user: its secret (an index in `SECRETS`) and permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UserState {
    secret: usize,
    permission: u8,
}

#[derive(Clone, Debug)]
enum Message {
    Valid {
        request: Req,
        extra_field: bool,
    },
    Mutated {
        request: Req,
        mutation: Mutation,
    },
    /// Text without a `"` can hold no object key, so it is never a valid request.
    Garbage(String),
    Binary(Vec<u8>),
    /// A valid request's text, sent as a binary frame.
    BinaryRequest(Req),
}

#[derive(Clone, Debug)]
enum Req {
    Authenticate {
        user: usize,
        secret: usize,
    },
    Subscribe(usize),
    Unsubscribe(usize),
    Broadcast {
        event: usize,
        channel: usize,
        data: usize,
    },
    Direct {
        event: usize,
        target: Target,
        data: usize,
    },
    Logout {
        object: bool,
    },
    Disconnect {
        object: bool,
    },
}

#[derive(Clone, Debug)]
enum Target {
    /// The token of the slot's current client, or of its last one, or one never used.
    Slot(usize),
    /// The same, in uppercase.
    Upper(usize),
    Empty,
    Junk(String),
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(Index),
    /// A second top-level key: the same action again, or another action.
    ExtraKey {
        same: bool,
    },
    DropField(Index),
    WrongType(Index, usize),
    EmptyName(Index),
    LongName(Index, bool),
    DeepNesting,
    UnknownAction(usize),
    NotObject(usize),
    DuplicateField(Index),
}

/// Authentication with the right secret (bob takes any).
fn login_strategy() -> impl Strategy<Value = Req> {
    (0..USERS.len(), 0..SECRETS.len()).prop_map(|(user, secret)| {
        let secret = match USERS[user].1 {
            "" => secret,
            right => SECRETS.iter().position(|s| *s == right).expect("listed"),
        };
        Req::Authenticate { user, secret }
    })
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let target = prop_oneof![
        4 => (0..SLOTS).prop_map(Target::Slot),
        1 => (0..SLOTS).prop_map(Target::Upper),
        1 => Just(Target::Empty),
        1 => "[0-9a-fA-F]{0,34}".prop_map(Target::Junk),
    ];
    prop_oneof![
        6 => login_strategy(),
        3 => (0..USER_NAMES.len(), 0..SECRETS.len())
            .prop_map(|(user, secret)| Req::Authenticate { user, secret }),
        12 => (0..CHANNELS).prop_map(Req::Subscribe),
        3 => (0..CHANNELS).prop_map(Req::Unsubscribe),
        15 => (0..EVENTS.len(), 0..CHANNELS, 0..DATA)
            .prop_map(|(event, channel, data)| Req::Broadcast { event, channel, data }),
        9 => (0..EVENTS.len(), target, 0..DATA)
            .prop_map(|(event, target, data)| Req::Direct { event, target, data }),
        2 => any::<bool>().prop_map(|object| Req::Logout { object }),
        1 => any::<bool>().prop_map(|object| Req::Disconnect { object }),
    ]
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        any::<bool>().prop_map(|same| Mutation::ExtraKey { same }),
        any::<Index>().prop_map(Mutation::DropField),
        (any::<Index>(), 0..6usize).prop_map(|(i, v)| Mutation::WrongType(i, v)),
        any::<Index>().prop_map(Mutation::EmptyName),
        (any::<Index>(), any::<bool>()).prop_map(|(i, ascii)| Mutation::LongName(i, ascii)),
        Just(Mutation::DeepNesting),
        (0..5usize).prop_map(Mutation::UnknownAction),
        (0..7usize).prop_map(Mutation::NotObject),
        any::<Index>().prop_map(Mutation::DuplicateField),
    ]
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        14 => (req_strategy(), prop::bool::weighted(0.2))
            .prop_map(|(request, extra_field)| Message::Valid { request, extra_field }),
        3 => (req_strategy(), mutation_strategy())
            .prop_map(|(request, mutation)| Message::Mutated { request, mutation }),
        1 => "[^\"]{0,40}".prop_map(Message::Garbage),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Message::Binary),
        1 => req_strategy().prop_map(Message::BinaryRequest),
    ]
}

// ---------------------------------------------------------------------------------------
// Rendering requests

/// The action name, the required string fields, and which of them are names.
fn shape(
    req: &Req,
) -> (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
) {
    match req {
        Req::Authenticate { .. } => ("authenticate", &["user", "secret"], &["user"]),
        Req::Subscribe(_) => ("subscribe", &["channel"], &["channel"]),
        Req::Unsubscribe(_) => ("unsubscribe", &["channel"], &["channel"]),
        Req::Broadcast { .. } => ("broadcast", &["event", "channel"], &["event", "channel"]),
        Req::Direct { .. } => ("direct", &["event", "client"], &["event"]),
        Req::Logout { .. } => ("logout", &[], &[]),
        Req::Disconnect { .. } => ("disconnect", &[], &[]),
    }
}

/// The value of the action key of a valid request.
fn body(req: &Req, model: &Model) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: Value| map.insert(k.into(), v);
    match req {
        Req::Authenticate { user, secret } => {
            put("user", json!(USER_NAMES[*user]));
            put("secret", json!(SECRETS[*secret]));
        }
        Req::Subscribe(c) | Req::Unsubscribe(c) => {
            put("channel", json!(channel(*c)));
        }
        Req::Broadcast {
            event,
            channel: c,
            data: d,
        } => {
            put("event", json!(EVENTS[*event]));
            put("channel", json!(channel(*c)));
            if let Some(d) = data(*d) {
                put("data", d);
            }
        }
        Req::Direct {
            event,
            target,
            data: d,
        } => {
            put("event", json!(EVENTS[*event]));
            put("client", json!(model.target(target)));
            if let Some(d) = data(*d) {
                put("data", d);
            }
        }
        Req::Logout { object } | Req::Disconnect { object } => {
            if !object {
                return json!(true);
            }
            put("why", json!([1, { "because": null }]));
        }
    }
    Value::Object(map)
}

fn with_key(action: &str, body: Value) -> String {
    let mut map = Map::new();
    map.insert(action.into(), body);
    Value::Object(map).to_string()
}

/// Appends `"key":value_text` to the JSON object `object`.
fn append_field(object: &str, key: &str, value_text: &str) -> String {
    let inner = object.strip_suffix('}').expect("an object");
    let comma = if inner == "{" { "" } else { "," };
    format!("{inner}{comma}\"{key}\":{value_text}}}")
}

fn valid_text(req: &Req, extra_field: bool, model: &Model) -> String {
    let (action, _, _) = shape(req);
    let mut body = body(req, model);
    if let (true, Some(map)) = (extra_field, body.as_object_mut()) {
        // Unknown fields are ignored, whatever they hold.
        map.insert(
            "zz".into(),
            json!({ "channel": 5, "list": [1, { "x": null }] }),
        );
    }
    with_key(action, body)
}

/// A request that the engine must answer with `INVALID_PAYLOAD`.
fn mutated_text(req: &Req, mutation: &Mutation, model: &Model) -> String {
    let (action, required, names) = shape(req);
    let mut body = body(req, model);
    let bad_flag = |i: usize| {
        [
            json!(false),
            Value::Null,
            json!(1),
            json!("true"),
            json!([]),
        ][i % 5]
            .clone()
    };
    match mutation {
        Mutation::Truncate(at) => {
            let text = valid_text(req, false, model);
            let mut cut = at.index(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        }
        Mutation::ExtraKey { same } => {
            let body = body.to_string();
            if *same {
                format!("{{\"{action}\":{body},\"{action}\":{body}}}")
            } else if action == "logout" {
                format!("{{\"{action}\":{body},\"disconnect\":true}}")
            } else {
                format!("{{\"{action}\":{body},\"logout\":true}}")
            }
        }
        Mutation::DropField(i) | Mutation::EmptyName(i) | Mutation::LongName(i, _)
            if required.is_empty() =>
        {
            with_key(action, bad_flag(i.index(5)))
        }
        Mutation::DropField(i) => {
            body.as_object_mut()
                .expect("an object")
                .remove(*i.get(required));
            with_key(action, body)
        }
        Mutation::WrongType(i, v) => {
            if required.is_empty() {
                return with_key(action, bad_flag(*v));
            }
            let bad = [
                json!(5),
                Value::Null,
                json!(true),
                json!(["x"]),
                json!({ "x": "y" }),
                json!(1.5),
            ];
            body[*i.get(required)] = bad[*v % bad.len()].clone();
            with_key(action, body)
        }
        Mutation::EmptyName(i) => {
            body[*i.get(names)] = json!("");
            with_key(action, body)
        }
        Mutation::LongName(i, ascii) => {
            let long = if *ascii {
                "n".repeat(256)
            } else {
                "é".repeat(128)
            };
            body[*i.get(names)] = json!(long);
            with_key(action, body)
        }
        Mutation::DeepNesting => {
            // Levels 1 and 2 are the request and the action; 127 more make 129.
            let object = if body.is_object() {
                body.to_string()
            } else {
                "{}".into()
            };
            format!(
                "{{\"{action}\":{}}}",
                append_field(&object, "zz", &nested(127))
            )
        }
        Mutation::UnknownAction(k) => {
            let mut capital = action.to_owned();
            capital[..1].make_ascii_uppercase();
            let key = match k {
                0 => capital,
                1 => format!("{action} "),
                2 => "publish".into(),
                3 => String::new(),
                _ => "connected".into(),
            };
            with_key(&key, body)
        }
        Mutation::NotObject(k) => match k {
            0 => "null".into(),
            1 => format!("[{}]", valid_text(req, false, model)),
            2 => format!("\"{action}\""),
            3 => "42".into(),
            4 => "{}".into(),
            5 => "true".into(),
            _ => "\"\"".into(),
        },
        Mutation::DuplicateField(i) => {
            if required.is_empty() {
                let body = body.to_string();
                return format!("{{\"{action}\":{body},\"{action}\":{body}}}");
            }
            let field = *i.get(required);
            let value = body[field].to_string();
            let object = append_field(&body.to_string(), field, &value);
            format!("{{\"{action}\":{object}}}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference model

#[derive(Clone, Debug)]
struct Conn {
    id: u64,
    token: Token,
    /// The session's user (an index in `USERS`); `None` while anonymous.
    session: Option<usize>,
    subscriptions: BTreeSet<usize>,
    failed_auth: u32,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    conn: Option<Conn>,
    /// The id and token of the slot's last connection.
    last: Option<(u64, Token)>,
}

/// What the SUT must feed the engine for the last transition.
#[derive(Clone, Debug)]
enum Input {
    Nothing,
    Connect {
        id: u64,
        token: Token,
        result: Result<(), ConnectError>,
    },
    Disconnect(u64),
    Text(u64, String),
    Binary(u64, Vec<u8>),
    Remote {
        channel: String,
        payload: String,
    },
    /// Reload the engine with this engine config; it must report `changes`.
    Reload {
        config: String,
        changes: Changes,
    },
}

/// What a reload must report, as `Reloaded`'s fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    secret_changed: Vec<String>,
    permission_changed: Vec<String>,
    limits_changed: bool,
    sessions_ended: usize,
    sessions_unsubscribed: usize,
}

impl Changes {
    fn of(r: &rocket_proto::Reloaded) -> Self {
        Self {
            added: r.added.clone(),
            removed: r.removed.clone(),
            secret_changed: r.secret_changed.clone(),
            permission_changed: r.permission_changed.clone(),
            limits_changed: r.limits_changed,
            sessions_ended: r.sessions_ended,
            sessions_unsubscribed: r.sessions_unsubscribed,
        }
    }
}

/// The engine config text for `users` and the limits.
fn engine_config(
    users: &[Option<UserState>; 3],
    max_subscriptions: usize,
    max_failed_auth: u32,
) -> String {
    let users: Map<String, Value> = USERS
        .iter()
        .zip(users)
        .filter_map(|((name, _), user)| {
            let user = user.as_ref()?;
            let json = json!({ "Secret": SECRETS[user.secret], "Permission": user.permission });
            Some(((*name).to_owned(), json))
        })
        .collect();
    support::config(
        Value::Object(users),
        json!({
            "MaxSubscriptionsPerClient": max_subscriptions,
            "MaxFailedAuth": max_failed_auth,
        }),
    )
}

/// What a client receives.
#[derive(Clone, Debug, PartialEq)]
enum Expected {
    Message(Value),
    Close(u16),
}

#[derive(Clone, Debug)]
struct Model {
    /// The users as configured now, by index in `USERS`; `None`: removed by a reload.
    users: [Option<UserState>; 3],
    max_subscriptions: usize,
    max_failed_auth: u32,
    seed: [u64; 4],
    next_id: u64,
    slots: [Slot; SLOTS],
    /// The last transition's input and, by client id, the outputs it must produce.
    input: Input,
    expected: BTreeMap<u64, Vec<Expected>>,
}

impl Model {
    fn new(
        permissions: [u8; 3],
        max_subscriptions: usize,
        max_failed_auth: u32,
        seed: [u64; 4],
    ) -> Self {
        let users = std::array::from_fn(|u| {
            let secret = SECRETS.iter().position(|s| *s == USERS[u].1);
            Some(UserState {
                secret: secret.expect("the initial secrets are listed"),
                permission: permissions[u],
            })
        });
        Self {
            users,
            max_subscriptions,
            max_failed_auth,
            seed,
            next_id: 1,
            slots: Default::default(),
            input: Input::Nothing,
            expected: BTreeMap::new(),
        }
    }

    fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.slots.iter().filter_map(|s| s.conn.as_ref())
    }

    /// The id frames from `slot` come from: its client, its last client, or an id that
    /// never connected.
    fn id_of(&self, slot: usize) -> u64 {
        let s = &self.slots[slot];
        s.conn
            .as_ref()
            .map(|c| c.id)
            .or(s.last.map(|(id, _)| id))
            .unwrap_or(1_000_000 + slot as u64)
    }

    fn token_text(&self, slot: usize) -> String {
        let s = &self.slots[slot];
        let token = s
            .conn
            .as_ref()
            .map(|c| c.token)
            .or(s.last.map(|(_, t)| t))
            .unwrap_or(Token::from_bytes([0xee; 16]));
        token.to_string()
    }

    fn target(&self, target: &Target) -> String {
        match target {
            Target::Slot(s) => self.token_text(*s),
            Target::Upper(s) => self.token_text(*s).to_uppercase(),
            Target::Empty => String::new(),
            Target::Junk(text) => text.clone(),
        }
    }

    fn expect(&mut self, id: u64, e: Expected) {
        self.expected.entry(id).or_default().push(e);
    }

    fn reply(&mut self, id: u64, v: Value) {
        self.expect(id, Expected::Message(v));
    }

    fn error(&mut self, id: u64, code: &str) {
        self.reply(id, json!({ "err": code }));
    }

    fn subscribers(&self, channel: usize) -> Vec<u64> {
        self.conns()
            .filter(|c| c.subscriptions.contains(&channel))
            .map(|c| c.id)
            .collect()
    }

    fn remove(&mut self, slot: usize) {
        if let Some(c) = self.slots[slot].conn.take() {
            self.slots[slot].last = Some((c.id, c.token));
        }
    }

    fn connect(&mut self, slot: usize, token: Option<Token>) {
        if let Some(c) = &self.slots[slot].conn {
            let id = c.id;
            self.input = Input::Connect {
                id,
                token: token_for(self.next_id),
                result: Err(ConnectError::DuplicateClient(ClientId(id))),
            };
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let token = token.unwrap_or_else(|| token_for(id));
        if self.conns().any(|c| c.token == token) {
            self.input = Input::Connect {
                id,
                token,
                result: Err(ConnectError::DuplicateToken),
            };
            return;
        }
        self.input = Input::Connect {
            id,
            token,
            result: Ok(()),
        };
        self.reply(id, json!({ "connected": token.to_string() }));
        self.slots[slot].conn = Some(Conn {
            id,
            token,
            session: None,
            subscriptions: BTreeSet::new(),
            failed_auth: 0,
        });
    }

    fn send(&mut self, slot: usize, message: &Message) {
        let id = self.id_of(slot);
        let request = match message {
            Message::Valid {
                request,
                extra_field,
            } => {
                self.input = Input::Text(id, valid_text(request, *extra_field, self));
                Some(request)
            }
            Message::Mutated { request, mutation } => {
                self.input = Input::Text(id, mutated_text(request, mutation, self));
                None
            }
            Message::Garbage(text) => {
                assert!(!text.contains('"'));
                self.input = Input::Text(id, text.clone());
                None
            }
            Message::Binary(bytes) => {
                self.input = Input::Binary(id, bytes.clone());
                None
            }
            Message::BinaryRequest(request) => {
                self.input = Input::Binary(id, valid_text(request, false, self).into_bytes());
                None
            }
        };
        if self.slots[slot].conn.is_none() {
            return; // The engine ignores frames from clients it does not know.
        }
        match request {
            None => self.error(id, "INVALID_PAYLOAD"),
            Some(request) => self.handle(slot, id, request),
        }
    }

    /// The engine's behaviour for a valid request from the client in `slot`.
    fn handle(&mut self, slot: usize, id: u64, request: &Req) {
        const READ: u8 = 1;
        const WRITE: u8 = 2;
        let conn = self.slots[slot].conn.as_ref().expect("connected");
        let users = &self.users;
        // Looked up at each request: the protocol's rule, which the engine implements by
        // refreshing sessions at a reload.
        let may = |bit: u8| {
            conn.session.is_some_and(|u| {
                let user = users[u].expect("sessions of removed users ended");
                user.permission & bit != 0
            })
        };
        let (may_read, may_write) = (may(READ), may(WRITE));
        let token = conn.token;
        match request {
            Req::Authenticate { user, secret } => {
                let conn = self.slots[slot].conn.as_mut().expect("connected");
                conn.session = None;
                conn.subscriptions.clear();
                let (name, secret) = (USER_NAMES[*user], SECRETS[*secret]);
                let user = USERS.iter().position(|(u, _)| *u == name);
                let verdict = match user.and_then(|u| Some((u, self.users[u]?))) {
                    None => Err("INVALID_USER"),
                    Some((u, user))
                        if SECRETS[user.secret].is_empty() || SECRETS[user.secret] == secret =>
                    {
                        Ok(u)
                    }
                    Some(_) => Err("INVALID_CREDENTIALS"),
                };
                match verdict {
                    Ok(u) => {
                        conn.session = Some(u);
                        self.reply(id, json!({ "authenticated": name }));
                    }
                    Err(code) => {
                        conn.failed_auth += 1;
                        let exhausted =
                            self.max_failed_auth != 0 && conn.failed_auth >= self.max_failed_auth;
                        self.error(id, code);
                        if exhausted {
                            self.expect(id, Expected::Close(1008));
                            self.remove(slot);
                        }
                    }
                }
            }
            Req::Subscribe(c) => {
                let limit = self.max_subscriptions;
                let conn = self.slots[slot].conn.as_mut().expect("connected");
                if !may_read {
                    self.error(id, "ACCESS_DENIED");
                } else if !conn.subscriptions.contains(c)
                    && limit != 0
                    && conn.subscriptions.len() >= limit
                {
                    self.error(id, "LIMIT_EXCEEDED");
                } else {
                    conn.subscriptions.insert(*c);
                    self.reply(id, json!({ "subscribed": channel(*c) }));
                }
            }
            Req::Unsubscribe(c) => {
                let conn = self.slots[slot].conn.as_mut().expect("connected");
                conn.subscriptions.remove(c);
                self.reply(id, json!({ "unsubscribed": channel(*c) }));
            }
            Req::Broadcast {
                event,
                channel: c,
                data: d,
            } => {
                let subscribers = self.subscribers(*c);
                if !may_write {
                    self.error(id, "ACCESS_DENIED");
                } else if subscribers.is_empty() {
                    self.error(id, "INVALID_CHANNEL");
                } else {
                    let mut delivery = json!({ "event": EVENTS[*event], "channel": channel(*c) });
                    if let Some(d) = data(*d) {
                        delivery["data"] = d;
                    }
                    for s in subscribers {
                        self.reply(s, delivery.clone());
                    }
                    self.reply(id, json!({ "broadcasted": channel(*c) }));
                }
            }
            Req::Direct {
                event,
                target,
                data: d,
            } => {
                let target = self.target(target);
                let to = self
                    .conns()
                    .find(|c| c.token.to_string() == target)
                    .map(|c| c.id);
                if !may_write {
                    self.error(id, "ACCESS_DENIED");
                } else if let Some(to) = to {
                    let mut delivery =
                        json!({ "event": EVENTS[*event], "from": token.to_string() });
                    if let Some(d) = data(*d) {
                        delivery["data"] = d;
                    }
                    self.reply(to, delivery);
                    self.reply(id, json!({ "directSent": target }));
                } else {
                    self.error(id, "INVALID_CLIENT");
                }
            }
            Req::Logout { .. } => {
                let conn = self.slots[slot].conn.as_mut().expect("connected");
                conn.session = None;
                conn.subscriptions.clear();
                self.reply(id, json!({ "loggedOut": true }));
            }
            Req::Disconnect { .. } => {
                self.expect(id, Expected::Close(1000));
                self.remove(slot);
            }
        }
    }
}

impl Model {
    /// The engine's behaviour on a reload: nothing is sent; sessions of removed users end,
    /// sessions whose user lost READ leave their channels.
    fn reload(
        &mut self,
        users: [Option<UserState>; 3],
        max_subscriptions: usize,
        max_failed_auth: u32,
    ) {
        let mut changes = Changes::default();
        for (u, (name, _)) in USERS.iter().enumerate() {
            let name = (*name).to_owned();
            match (self.users[u], users[u]) {
                (None, Some(_)) => changes.added.push(name),
                (Some(_), None) => changes.removed.push(name),
                (Some(old), Some(new)) => {
                    if SECRETS[old.secret] != SECRETS[new.secret] {
                        changes.secret_changed.push(name.clone());
                    }
                    if old.permission != new.permission {
                        changes.permission_changed.push(name);
                    }
                }
                (None, None) => {}
            }
        }
        changes.limits_changed =
            (max_subscriptions, max_failed_auth) != (self.max_subscriptions, self.max_failed_auth);
        for conn in self.slots.iter_mut().filter_map(|s| s.conn.as_mut()) {
            let Some(u) = conn.session else { continue };
            match users[u] {
                None => {
                    changes.sessions_ended += 1;
                    conn.session = None;
                    conn.subscriptions.clear();
                }
                Some(user) if user.permission & 1 == 0 && !conn.subscriptions.is_empty() => {
                    changes.sessions_unsubscribed += 1;
                    conn.subscriptions.clear();
                }
                Some(_) => {}
            }
        }
        self.users = users;
        self.max_subscriptions = max_subscriptions;
        self.max_failed_auth = max_failed_auth;
        self.input = Input::Reload {
            config: engine_config(&users, max_subscriptions, max_failed_auth),
            changes,
        };
    }

    /// Logins with the right secret for the users configured now.
    fn login(&self) -> Option<BoxedStrategy<Req>> {
        let logins: Vec<Req> = self
            .users
            .iter()
            .enumerate()
            .filter_map(|(user, state)| {
                let state = state.as_ref()?;
                Some(Req::Authenticate {
                    user,
                    secret: state.secret,
                })
            })
            .collect();
        (!logins.is_empty()).then(|| prop::sample::select(logins).boxed())
    }
}

/// Every permission value is possible; READ|WRITE (with or without MANAGE) is common so
/// that deliveries happen.
fn permission_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![2 => prop::sample::select(vec![3u8, 7]), 1 => 0..=7u8]
}

fn max_subscriptions_strategy() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0usize, 1, 1, 2, 3])
}

fn max_failed_auth_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1..=4u32]
}

fn reload_strategy() -> impl Strategy<Value = Transition> {
    let user = || {
        prop_oneof![
            1 => Just(None),
            4 => (0..SECRETS.len(), permission_strategy())
                .prop_map(|(secret, permission)| Some(UserState { secret, permission })),
        ]
    };
    (
        [user(), user(), user()],
        max_subscriptions_strategy(),
        max_failed_auth_strategy(),
    )
        .prop_map(
            |(users, max_subscriptions, max_failed_auth)| Transition::Reload {
                users,
                max_subscriptions,
                max_failed_auth,
            },
        )
}

struct EngineModel;

impl ReferenceStateMachine for EngineModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (
            [
                permission_strategy(),
                permission_strategy(),
                permission_strategy(),
            ],
            max_subscriptions_strategy(),
            max_failed_auth_strategy(),
            any::<[u64; 4]>(),
        )
            .prop_map(|(permissions, max_subscriptions, max_failed_auth, seed)| {
                Model::new(permissions, max_subscriptions, max_failed_auth, seed)
            })
            .boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Transition> {
        // Mostly frames from connected clients and connections into free slots; every
        // slot stays possible (frames from departed clients must be ignored).
        let (live, free): (Vec<usize>, Vec<usize>) =
            (0..SLOTS).partition(|&s| model.slots[s].conn.is_some());
        let prefer = |slots: Vec<usize>| -> BoxedStrategy<usize> {
            if slots.is_empty() {
                (0..SLOTS).boxed()
            } else {
                prop_oneof![9 => prop::sample::select(slots), 1 => 0..SLOTS].boxed()
            }
        };
        // Anonymous clients log in more often than the others.
        let anonymous: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&s| {
                model.slots[s]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.session.is_none())
            })
            .collect();
        let connect_weight = if free.is_empty() { 1 } else { 6 };
        let mut choices = vec![
            (
                connect_weight,
                prefer(free).prop_map(Transition::Connect).boxed(),
            ),
            (
                1,
                (0..SLOTS, 0..SLOTS)
                    .prop_map(|(slot, victim)| Transition::ConnectWithTokenOf { slot, victim })
                    .boxed(),
            ),
            (1, (0..SLOTS).prop_map(Transition::Disconnect).boxed()),
            (
                20,
                (prefer(live), message_strategy())
                    .prop_map(|(slot, message)| Transition::Send { slot, message })
                    .boxed(),
            ),
            (
                1,
                (0..CHANNELS, 0..DATA)
                    .prop_map(|(channel, data)| Transition::Remote { channel, data })
                    .boxed(),
            ),
        ];
        choices.push((1, reload_strategy().boxed()));
        if let (false, Some(login)) = (anonymous.is_empty(), model.login()) {
            let login = (prop::sample::select(anonymous), login).prop_map(|(slot, request)| {
                Transition::Send {
                    slot,
                    message: Message::Valid {
                        request,
                        extra_field: false,
                    },
                }
            });
            choices.push((6, login.boxed()));
        }
        proptest::strategy::Union::new_weighted(choices).boxed()
    }

    fn apply(mut model: Model, transition: &Transition) -> Model {
        model.expected.clear();
        model.input = Input::Nothing;
        match transition {
            Transition::Connect(slot) => model.connect(*slot, None),
            Transition::ConnectWithTokenOf { slot, victim } => {
                let v = &model.slots[*victim];
                let token = v.conn.as_ref().map(|c| c.token).or(v.last.map(|(_, t)| t));
                model.connect(*slot, token);
            }
            Transition::Disconnect(slot) => {
                model.input = Input::Disconnect(model.id_of(*slot));
                model.remove(*slot);
            }
            Transition::Send { slot, message } => model.send(*slot, message),
            Transition::Reload {
                users,
                max_subscriptions,
                max_failed_auth,
            } => model.reload(*users, *max_subscriptions, *max_failed_auth),
            Transition::Remote {
                channel: c,
                data: d,
            } => {
                let mut payload = json!({ "event": "remote", "channel": channel(*c) });
                if let Some(d) = data(*d) {
                    payload["data"] = d;
                }
                for s in model.subscribers(*c) {
                    model.reply(s, payload.clone());
                }
                model.input = Input::Remote {
                    channel: channel(*c),
                    payload: payload.to_string(),
                };
            }
        }
        model
    }
}

// ---------------------------------------------------------------------------------------
// The system under test: the engine in the simulator

struct EngineTest;

impl StateMachineTest for EngineTest {
    type SystemUnderTest = Sim;
    type Reference = EngineModel;

    fn init_test(model: &Model) -> Sim {
        let text = engine_config(&model.users, model.max_subscriptions, model.max_failed_auth);
        let config = EngineConfig::from_json(&text).expect("valid config");
        let mut sim = Sim::with_config(&config, HashSeed(model.seed));
        // Half the cases with broadcasts as one output each: the inboxes must not differ.
        if model.seed[0] % 2 == 1 {
            sim.whole_broadcasts();
        }
        sim
    }

    fn apply(mut sim: Sim, model: &Model, _: Transition) -> Sim {
        match &model.input {
            Input::Nothing => {}
            Input::Connect { id, token, result } => {
                assert_eq!(sim.connect_with(ClientId(*id), *token), *result);
            }
            Input::Disconnect(id) => sim.disconnect(ClientId(*id)),
            Input::Text(id, text) => sim.send_text(ClientId(*id), text),
            Input::Binary(id, bytes) => sim.send_binary(ClientId(*id), bytes),
            Input::Remote { channel, payload } => {
                sim.remote_broadcast(channel, Payload::text(payload.clone()));
            }
            Input::Reload { config, changes } => {
                let reloaded = sim.reload(config);
                assert_eq!(Changes::of(&reloaded), *changes);
            }
        }
        let got: BTreeMap<u64, Vec<Expected>> = sim
            .take_all()
            .into_iter()
            .map(|(id, received)| {
                let received = received
                    .into_iter()
                    .map(|r| match r {
                        Received::Close { code, reason } => {
                            assert!(reason.len() <= 123, "{reason}");
                            Expected::Close(code)
                        }
                        other => Expected::Message(other.json()),
                    })
                    .collect();
                (id.0, received)
            })
            .collect();
        assert_eq!(got, model.expected, "input: {:?}", model.input);
        sim
    }

    fn check_invariants(sim: &Sim, model: &Model) {
        let engine = sim.engine();
        assert_eq!(engine.client_count(), model.conns().count());
        let mut channels = 0;
        for c in 0..CHANNELS {
            let n = model.subscribers(c).len();
            assert_eq!(engine.subscriber_count(&channel(c)), n, "{}", channel(c));
            channels += usize::from(n > 0);
        }
        assert_eq!(engine.channel_count(), channels);
    }

    fn teardown(mut sim: Sim, model: Model) {
        for conn in model.conns() {
            sim.disconnect(ClientId(conn.id));
        }
        assert!(sim.take_all().is_empty(), "disconnecting sends nothing");
        assert!(sim.engine().is_idle(), "{:?}", sim.engine());
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_model(sequential 1..120 => EngineTest);
}

// ---------------------------------------------------------------------------------------
// Checks of the generators themselves

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The model's premise: every mutation is an invalid request, while the request it
    /// was made from is valid (answered with something other than INVALID_PAYLOAD).
    #[test]
    fn mutated_requests_are_never_valid(
        request in req_strategy(),
        mutation in mutation_strategy(),
        extra_field in any::<bool>(),
    ) {
        let mut sim = Sim::new(&support::config(
            json!({ "alice": { "Secret": "pw", "Permission": 7 } }),
            json!({ "MaxFailedAuth": 0 }),
        ));
        let c = sim.connect();
        sim.auth(c, "alice", "pw");
        let model = Model::new([7; 3], 0, 0, [0; 4]);
        let text = mutated_text(&request, &mutation, &model);
        prop_assert_eq!(sim.request_text(c, &text), json!({ "err": "INVALID_PAYLOAD" }), "{}", text);
        let text = valid_text(&request, extra_field, &model);
        sim.send_text(c, &text);
        let got = sim.take_raw(c);
        prop_assert!(!got.is_empty(), "{}", text);
        if let Received::Text(_) = &got[0] {
            prop_assert_ne!(got[0].json(), json!({ "err": "INVALID_PAYLOAD" }), "{}", text);
        } else {
            prop_assert!(matches!(request, Req::Disconnect { .. }), "{:?}", got);
        }
    }
}
