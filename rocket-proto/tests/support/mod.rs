//! A deterministic simulator for the engine, in the spirit of quinn's `Pair`: virtual
//! clients with deterministic ids and tokens, frames in, outputs drained into per-client
//! inboxes after every input.
//!
//! The simulator also checks the engine's output contract as it drains: nothing is sent
//! to a client that never connected, and nothing at all follows a client's close or its
//! disconnection.

// Each test crate uses a different subset of the helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use rocket_proto::{
    ClientId, Completion, ConnectError, Engine, EngineConfig, HashSeed, Message, OpId, Operation,
    Output, Payload, Token,
};
use serde_json::Value;

/// One thing a client got from the engine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message (the engine never sends one; kept to report it if it does).
    Binary(Vec<u8>),
    /// The engine closed the client.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

impl Received {
    /// The message parsed as JSON; panics for anything else.
    pub fn json(&self) -> Value {
        match self {
            Received::Text(text) => serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("engine sent invalid JSON {text:?}: {e}")),
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }
}

/// The token the simulator gives to client number `n`: 16 well-mixed bytes (splitmix64,
/// which is a bijection, so distinct `n` give distinct tokens).
pub fn token_for(n: u64) -> Token {
    let a = splitmix64(n.wrapping_mul(2));
    let b = splitmix64(n.wrapping_mul(2).wrapping_add(1));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    Token::from_bytes(bytes)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An engine config for tests: the given `Users` object and `Limits` object.
pub fn config(users: Value, limits: Value) -> String {
    serde_json::json!({ "Users": users, "Limits": limits }).to_string()
}

/// The original Rocket example's users: `backend`/`secret` with every permission and
/// `frontend` with any secret and READ|WRITE.
pub fn demo() -> EngineConfig {
    EngineConfig::from_json(
        r#"{"Users": {
            "backend": { "Name": "backend", "Secret": "secret", "Permission": 7 },
            "frontend": { "Name": "frontend", "Secret": "", "Permission": 3 }
        }}"#,
    )
    .expect("the demo users are valid")
}

/// One engine and its virtual clients.
#[derive(Debug)]
pub struct Sim {
    engine: Engine,
    next_id: u64,
    tokens: BTreeMap<ClientId, Token>,
    /// Clients that were closed by the engine or disconnected by the simulator.
    gone: BTreeSet<ClientId>,
    inboxes: BTreeMap<ClientId, Vec<Received>>,
    buf: Vec<Output>,
    /// `AuthFailed` notices, in order: (client, user, error name).
    pub auth_failures: Vec<(ClientId, String, &'static str)>,
    /// PHC verifications the engine asked for, in order: (client, hash, secret).
    pub verifications: Vec<(ClientId, String, String)>,
    /// Every operation the engine started, in order: (client, op).
    pub started: Vec<(ClientId, OpId)>,
    /// Cluster outputs (`Watch`, `Unwatch`, `Publish`), in order.
    pub cluster: Vec<Output>,
    /// Publications started as operations, in order: (client, op, publication).
    pub publications: Vec<(ClientId, OpId, rocket_proto::Publication)>,
    /// Operations on a cluster's shared store (joins, history and presence reads), in
    /// order: (client, op, operation).
    pub shared: Vec<(ClientId, OpId, Operation)>,
}

impl Sim {
    /// An engine for the engine config `json`, with a fixed hash seed.
    pub fn new(json: &str) -> Self {
        let config = EngineConfig::from_json(json).expect("test config is valid");
        Self::with_config(&config, HashSeed::default())
    }

    /// An engine for `config` with hash seed `seed`.
    pub fn with_config(config: &EngineConfig, seed: HashSeed) -> Self {
        Self::from_engine(Engine::new(config, seed))
    }

    /// Wraps an engine built elsewhere.
    pub fn from_engine(engine: Engine) -> Self {
        Self {
            engine,
            next_id: 1,
            tokens: BTreeMap::new(),
            gone: BTreeSet::new(),
            inboxes: BTreeMap::new(),
            buf: Vec::new(),
            auth_failures: Vec::new(),
            verifications: Vec::new(),
            started: Vec::new(),
            cluster: Vec::new(),
            publications: Vec::new(),
            shared: Vec::new(),
        }
    }

    /// Has the engine make each broadcast to several clients one `Output::Broadcast`
    /// (`Engine::set_whole_broadcasts`); the inboxes get the same either way.
    pub fn whole_broadcasts(&mut self) {
        self.engine.set_whole_broadcasts(true);
    }

    /// Answers the last operation started for `id` (a PHC verification) as a frontend
    /// does; when none was ever started for `id`, answers an id the engine never gave.
    pub fn verified(&mut self, id: ClientId, ok: bool) {
        let op = self.last_op(id).unwrap_or(OpId(u64::MAX));
        self.complete(op, Completion::SecretVerified(ok));
    }

    /// Feeds the completion of `op` and drives the engine.
    pub fn complete(&mut self, op: OpId, completion: Completion) {
        self.engine.handle_completion(op, completion);
        self.drive();
    }

    /// The last operation the engine started on behalf of `id`.
    pub fn last_op(&self, id: ClientId) -> Option<OpId> {
        self.started
            .iter()
            .rev()
            .find(|(client, _)| *client == id)
            .map(|&(_, op)| op)
    }

    /// The engine, for its getters.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, to feed it directly (call [`Sim::drive`] afterwards).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Connects a new client with the next id and its deterministic token, checks its
    /// greeting, and returns its id.
    pub fn connect(&mut self) -> ClientId {
        let id = ClientId(self.next_id);
        let token = token_for(self.next_id);
        self.connect_with(id, token)
            .expect("a fresh id and token are accepted");
        let greeting = self.take(id);
        assert_eq!(
            greeting,
            vec![serde_json::json!({ "connected": token.to_string() })],
            "greeting of {id}"
        );
        id
    }

    /// Connects `id` with `token` as given and drives the engine; the greeting, if any,
    /// stays in the inbox.
    pub fn connect_with(&mut self, id: ClientId, token: Token) -> Result<(), ConnectError> {
        self.next_id = self.next_id.max(id.0.saturating_add(1));
        let result = self.engine.handle_connect(id, token);
        if result.is_ok() {
            self.tokens.insert(id, token);
            self.gone.remove(&id);
        }
        self.drive();
        result
    }

    /// The token of a client this simulator connected.
    pub fn token(&self, id: ClientId) -> String {
        self.tokens[&id].to_string()
    }

    /// Sends `request` (serialized compactly) as a text frame from `id`.
    pub fn send(&mut self, id: ClientId, request: Value) {
        self.send_text(id, &request.to_string());
    }

    /// Sends a text frame from `id`.
    pub fn send_text(&mut self, id: ClientId, text: &str) {
        self.engine.handle_message(id, Message::Text(text));
        self.drive();
    }

    /// Sends a binary frame from `id`.
    pub fn send_binary(&mut self, id: ClientId, bytes: &[u8]) {
        self.engine.handle_message(id, Message::Binary(bytes));
        self.drive();
    }

    /// Sends `request` and returns the one message `id` got in return (panics unless it
    /// got exactly one message and nothing else).
    pub fn request(&mut self, id: ClientId, request: Value) -> Value {
        self.send(id, request);
        self.one(id)
    }

    /// Sends a text frame and returns the one message `id` got in return.
    pub fn request_text(&mut self, id: ClientId, text: &str) -> Value {
        self.send_text(id, text);
        self.one(id)
    }

    /// Authenticates `id` and checks that it succeeded.
    pub fn auth(&mut self, id: ClientId, user: &str, secret: &str) {
        let reply = self.request(
            id,
            serde_json::json!({ "authenticate": { "user": user, "secret": secret } }),
        );
        assert_eq!(reply, serde_json::json!({ "authenticated": user }), "{id}");
    }

    /// Subscribes `id` to `channel` and checks that it succeeded.
    pub fn subscribe(&mut self, id: ClientId, channel: &str) {
        let reply = self.request(
            id,
            serde_json::json!({ "subscribe": { "channel": channel } }),
        );
        assert_eq!(reply, serde_json::json!({ "subscribed": channel }), "{id}");
    }

    /// The client's connection ended (the frontend saw the socket close).
    pub fn disconnect(&mut self, id: ClientId) {
        self.engine.handle_disconnect(id);
        self.gone.insert(id);
        self.drive();
    }

    /// The driver's clock reads `now`: feeds it to the engine and drives it.
    pub fn time(&mut self, now: std::time::Instant) {
        self.engine.handle_timeout(now);
        self.drive();
    }

    /// A broadcast accepted by another node.
    pub fn remote_broadcast(&mut self, channel: &str, payload: Payload) {
        self.remote(&rocket_proto::Topic::Channel(channel.into()), payload);
    }

    /// A message another node published to `topic`.
    pub fn remote(&mut self, topic: &rocket_proto::Topic, payload: Payload) {
        self.engine.handle_remote(topic, payload);
        self.drive();
    }

    /// Reloads the engine with the engine config `json` and drives it.
    pub fn reload(&mut self, json: &str) -> rocket_proto::Reloaded {
        let config = EngineConfig::from_json(json).expect("test config is valid");
        let reloaded = self.engine.handle_reload(&config);
        self.drive();
        reloaded
    }

    /// Drains every pending output into the inboxes, checking that nothing goes to a
    /// client that never connected or that is gone.
    pub fn drive(&mut self) {
        self.engine.drain_outputs(&mut self.buf);
        assert!(
            self.engine.poll_output().is_none(),
            "drain_outputs left an output behind"
        );
        // A whole broadcast (`whole_broadcasts`) is a send to each of its clients.
        for output in self.buf.drain(..).flat_map(Output::split) {
            let (client, received) = match output {
                Output::Send { client, payload } => {
                    let received = match payload.as_text() {
                        Some(text) => Received::Text(text.to_owned()),
                        None => Received::Binary(payload.as_bytes().to_vec()),
                    };
                    (client, received)
                }
                Output::Close {
                    client,
                    code,
                    reason,
                } => (
                    client,
                    Received::Close {
                        code: code.0,
                        reason: reason.into_owned(),
                    },
                ),
                Output::AuthFailed {
                    client,
                    user,
                    error,
                } => {
                    self.auth_failures.push((client, user, error.name()));
                    continue;
                }
                Output::Start {
                    client,
                    op,
                    operation,
                } => {
                    assert!(
                        self.started.iter().all(|&(_, o)| o != op),
                        "{op} started twice"
                    );
                    self.started.push((client, op));
                    match *operation {
                        Operation::VerifySecret(v) => {
                            self.verifications
                                .push((client, v.phc.to_string(), v.secret));
                        }
                        Operation::Publish(p) => self.publications.push((client, op, p)),
                        shared @ (Operation::Join(_)
                        | Operation::History { .. }
                        | Operation::Presence(_)) => self.shared.push((client, op, shared)),
                        other => panic!("unexpected operation {other:?}"),
                    }
                    continue;
                }
                cluster @ (Output::Watch(_)
                | Output::Unwatch(_)
                | Output::Publish(_)
                | Output::Left(_)) => {
                    self.cluster.push(cluster);
                    continue;
                }
                other => panic!("unexpected output {other:?}"),
            };
            assert!(
                self.tokens.contains_key(&client),
                "output for {client}, which never connected: {received:?}"
            );
            assert!(
                !self.gone.contains(&client),
                "output for {client} after it was closed or disconnected: {received:?}"
            );
            if matches!(received, Received::Close { .. }) {
                self.gone.insert(client);
            }
            self.inboxes.entry(client).or_default().push(received);
        }
    }

    /// Everything `id` received since the last take, closes included.
    pub fn take_raw(&mut self, id: ClientId) -> Vec<Received> {
        self.inboxes.remove(&id).unwrap_or_default()
    }

    /// Every message `id` received since the last take, parsed. Panics on a close (use
    /// [`Sim::take_raw`] where one is expected).
    pub fn take(&mut self, id: ClientId) -> Vec<Value> {
        self.take_raw(id).iter().map(Received::json).collect()
    }

    /// The text of every message `id` received since the last take.
    pub fn take_text(&mut self, id: ClientId) -> Vec<String> {
        self.take_raw(id)
            .into_iter()
            .map(|r| match r {
                Received::Text(text) => text,
                other => panic!("expected a text message, got {other:?}"),
            })
            .collect()
    }

    /// The one message `id` received since the last take.
    pub fn one(&mut self, id: ClientId) -> Value {
        let mut got = self.take(id);
        assert_eq!(
            got.len(),
            1,
            "{id} should have exactly one message: {got:?}"
        );
        got.pop().expect("length checked")
    }

    /// Everything every client received since the last take, by client (clients that
    /// received nothing are absent).
    pub fn take_all(&mut self) -> BTreeMap<ClientId, Vec<Received>> {
        std::mem::take(&mut self.inboxes)
    }

    /// Panics if any client has an untaken message.
    pub fn assert_silent(&self) {
        assert!(
            self.inboxes.values().all(Vec::is_empty),
            "unexpected messages: {:?}",
            self.inboxes
        );
    }

    /// Whether `id` was closed by the engine or disconnected.
    pub fn is_gone(&self, id: ClientId) -> bool {
        self.gone.contains(&id)
    }
}
