//! The Rocket protocol engine for one hub.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{EngineConfig, HistoryConfig};
use crate::history::Histories;
use crate::publish::{Publish, Target};
use crate::reply::{self, ErrorCode};
use crate::request::{Request, Since};
use crate::{
    ClientId, CloseCode, Completion, Departure, Join, Message, OpId, Operation, Output, Payload,
    Permissions, PresenceEntry, Protocol, Publication, Token, Topic, Verification,
};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Why [`Engine::handle_connect`] refused a client. Both mean a bug in the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The `ClientId` is already connected.
    #[error("client id {0} is already connected")]
    DuplicateClient(ClientId),
    /// Another live client has the same token.
    #[error("token is already in use by a live client")]
    DuplicateToken,
}

/// What [`Engine::handle_reload`] changed. User names are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// Users that the new configuration adds.
    pub added: Vec<String>,
    /// Users that it removes; their sessions ended.
    pub removed: Vec<String>,
    /// Users kept whose `Secret` changed (new authentications need the new one).
    pub secret_changed: Vec<String>,
    /// Users kept whose `Permission` changed (their sessions have it from their next
    /// request).
    pub permission_changed: Vec<String>,
    /// Whether `MaxSubscriptionsPerClient` or `MaxFailedAuth` changed.
    pub limits_changed: bool,
    /// Sessions that ended because their user was removed.
    pub sessions_ended: usize,
    /// Sessions kept whose user lost READ: their subscriptions were dropped.
    pub sessions_unsubscribed: usize,
}

impl Reloaded {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Keys for the engine's hash maps. Channel names come from clients, so the maps are
/// keyed with secret seeds that the frontend draws from the OS (the engine has no
/// randomness of its own); equal seeds make runs reproducible in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashSeed(pub [u64; 4]);

#[derive(PartialEq, Eq)]
enum Secret {
    /// Empty in the config: any secret is accepted.
    Any,
    /// The SHA-256 digest of the configured secret. A given secret is digested too and the
    /// two digests compared in constant time: both are 32 bytes whatever the secrets'
    /// lengths, so the comparison's time says nothing about the configured secret's length.
    Plain([u8; 32]),
    /// Checked by the frontend ([`Operation::VerifySecret`]).
    Phc(Arc<str>),
}

struct User {
    secret: Secret,
    permission: Permissions,
}

impl User {
    fn from_config(config: &crate::UserConfig) -> Self {
        let secret = if config.secret.is_empty() {
            Secret::Any
        } else if crate::config::is_phc(&config.secret) {
            Secret::Phc(config.secret.as_str().into())
        } else {
            Secret::Plain(digest(&config.secret))
        };
        Self {
            secret,
            permission: config.permission,
        }
    }
}

/// An authenticated session: its user and that user's permissions, refreshed by
/// [`Engine::handle_reload`] so that a request checks them without a lookup.
struct Session {
    user: Arc<str>,
    permission: Permissions,
}

struct Client {
    token: Token,
    /// The authenticated session; `None` while anonymous.
    session: Option<Session>,
    /// Subscribed channels, each with this client's index in the channel's member list.
    subscriptions: Map<Arc<str>, usize>,
    failed_auth: u32,
    /// The operation outstanding for this client, if any (its driver holds its frames
    /// meanwhile, so there is at most one).
    operation: Option<OpId>,
}

/// An operation the engine started and whose completion it awaits.
enum Pending {
    /// `client` authenticates as `user`; the secret is being checked against `phc`, the
    /// user's hash when the check started (a reload may replace it meanwhile).
    VerifySecret {
        client: ClientId,
        user: Arc<str>,
        phc: Arc<str>,
    },
    /// Cluster: `client`'s broadcast or direct message went to the other nodes, whose
    /// answer decides the reply.
    Publish {
        client: ClientId,
        publication: Publication,
    },
    /// Cluster, shared hub: `client` (token, user) enters `channel` through the store;
    /// `new` unless it was subscribed already.
    Join {
        client: ClientId,
        channel: Arc<str>,
        token: Token,
        user: Arc<str>,
        new: bool,
    },
    /// Cluster, shared hub: `client`'s `history` or `presence` request reads the store.
    Read { client: ClientId, channel: Arc<str> },
}

impl Pending {
    /// Whether `completion` is the kind of result this operation produces.
    fn accepts(&self, completion: &Completion) -> bool {
        matches!(
            (self, completion),
            (Pending::VerifySecret { .. }, Completion::SecretVerified(_))
                | (
                    Pending::Publish { .. },
                    Completion::Published(_) | Completion::Unavailable
                )
                | (
                    Pending::Join { .. },
                    Completion::Joined(_) | Completion::Unavailable
                )
                | (
                    Pending::Read { .. },
                    Completion::History(_) | Completion::Presence(_) | Completion::Unavailable
                )
        )
    }

    /// The client on whose behalf the operation runs.
    fn client(&self) -> ClientId {
        match self {
            Pending::VerifySecret { client, .. }
            | Pending::Publish { client, .. }
            | Pending::Join { client, .. }
            | Pending::Read { client, .. } => *client,
        }
    }
}

/// Where a broadcast or direct message went.
enum Routed {
    /// Delivered here (and, in a cluster, published to the other nodes).
    Done,
    /// Cluster: this node does not hold the target; the other nodes' answer decides.
    Remote(Publication),
}

/// The Rocket protocol for one hub: users, channels and clients, with no IO.
///
/// Methods come in three kinds, as in quinn-proto:
/// - getters (`&self`): [`client_count`](Self::client_count),
///   [`channel_count`](Self::channel_count), [`subscriber_count`](Self::subscriber_count),
///   [`history_count`](Self::history_count), [`stats`](Self::stats);
/// - inputs (`handle_*`): [`handle_connect`](Self::handle_connect),
///   [`handle_message`](Self::handle_message), [`handle_disconnect`](Self::handle_disconnect),
///   [`handle_remote`](Self::handle_remote),
///   [`handle_completion`](Self::handle_completion), [`handle_timeout`](Self::handle_timeout),
///   [`handle_reload`](Self::handle_reload);
/// - when the engine next needs the time: [`poll_timeout`](Self::poll_timeout);
/// - outputs: [`poll_output`](Self::poll_output) or [`drain_outputs`](Self::drain_outputs).
///
/// After every input, drain the outputs before the next input of another thread could
/// interleave (see the crate docs for the driver loop).
pub struct Engine {
    users: Map<Arc<str>, User>,
    clients: Map<ClientId, Client>,
    tokens: Map<Token, ClientId>,
    /// Channel name to its subscribers. A channel exists while it has a subscriber.
    channels: Map<Arc<str>, Vec<ClientId>>,
    /// A broadcast to several clients is one [`Output::Broadcast`], not one
    /// [`Output::Send`] each ([`Engine::set_whole_broadcasts`]).
    whole_broadcasts: bool,
    /// Operations started and not yet completed (or forgotten with their client).
    pending: Map<OpId, Pending>,
    /// The next operation's id.
    next_op: u64,
    max_subscriptions: usize,
    max_failed_auth: u32,
    /// Channel histories, on a History hub of a single node (a cluster's are in its store).
    history: Option<Histories>,
    /// `History`, single node or cluster.
    history_config: Option<HistoryConfig>,
    /// Cluster, with `History`, `Presence` or `JoinLeave`: channels are entered through the
    /// shared store ([`Operation::Join`]), which also keeps history and presence.
    shared: bool,
    /// Shared hubs: per channel, the clients whose [`Operation::Join`] is under way (the
    /// node holds the channel's topic meanwhile).
    joining: Map<Arc<str>, usize>,
    /// `Presence`: answer `presence` requests.
    presence: bool,
    /// `JoinLeave`: tell subscribers who joins and leaves.
    join_leave: bool,
    /// The hub runs on every node of a cluster.
    cluster: bool,
    hasher: ahash::RandomState,
    outputs: VecDeque<Output>,
    stats: Counters,
}

/// The engine's running totals, for [`Engine::stats`].
#[derive(Debug, Default)]
struct Counters {
    messages_received: u64,
    broadcasts: u64,
    directs: u64,
    deliveries: u64,
    auth_failures: u64,
}

/// What the engine has done so far and holds now, for metrics. Counting costs a few
/// additions under the lock the input already holds: nothing per delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Connected clients.
    pub clients: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Subscriptions over all channels.
    pub subscriptions: usize,
    /// Messages received from clients (every [`Engine::handle_message`] of a live client).
    pub messages_received: u64,
    /// Broadcasts accepted (from clients and the publish API; not those of other nodes).
    pub broadcasts: u64,
    /// Direct messages accepted (from clients and the publish API).
    pub directs: u64,
    /// Event messages queued to clients: broadcast deliveries and direct messages, from
    /// this node or other nodes of a cluster (not replies).
    pub deliveries: u64,
    /// Failed authentications (WebSocket and publish API).
    pub auth_failures: u64,
}

/// What the configured secret says of a presented one.
enum Verdict {
    /// A session as the user, with its permissions.
    Granted(Session),
    Denied(ErrorCode),
    /// Verify against the PHC hash (second) of the user (first).
    Verify(Arc<str>, Arc<str>),
}

/// What [`Engine::handle_publish`] needs next.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishStep {
    /// Done: the reply (`{"broadcasted":…}` or `{"directSent":…}`) or the error.
    Done(Result<Payload, ErrorCode>),
    /// The user's secret is a PHC hash: verify it off the engine, then call
    /// [`Engine::handle_publish_verified`] with the result.
    Verify(Verification),
    /// Cluster: no local holder of the target. Send the publication to the other nodes
    /// (in order, as [`Operation::Publish`]), then call
    /// [`Engine::handle_publish_published`] with whether one held it.
    Publish(Publication),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("users", &self.users.len())
            .field("clients", &self.clients.len())
            .field("channels", &self.channels.len())
            .field("pending_operations", &self.pending.len())
            .field("pending_outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with `config`'s users and limits. `seed` keys the hash maps (draw it from
    /// the OS in production).
    pub fn new(config: &EngineConfig, seed: HashSeed) -> Self {
        let [a, b, c, d] = seed.0;
        let hasher = ahash::RandomState::with_seeds(a, b, c, d);
        Self {
            users: Self::users(config, &hasher),
            clients: Map::with_hasher(hasher.clone()),
            tokens: Map::with_hasher(hasher.clone()),
            channels: Map::with_hasher(hasher.clone()),
            whole_broadcasts: false,
            pending: Map::with_hasher(hasher.clone()),
            next_op: 1,
            max_subscriptions: config.limits.max_subscriptions_per_client,
            max_failed_auth: config.limits.max_failed_auth,
            history: config
                .history
                .as_ref()
                .filter(|_| !config.cluster)
                .map(|h| Histories::new(h, hasher.clone())),
            history_config: config.history,
            shared: config.cluster
                && (config.history.is_some() || config.presence || config.join_leave),
            joining: Map::with_hasher(hasher.clone()),
            presence: config.presence,
            join_leave: config.join_leave,
            cluster: config.cluster,
            hasher,
            outputs: VecDeque::new(),
            stats: Counters::default(),
        }
    }

    /// Whether a broadcast to several clients comes out as one [`Output::Broadcast`]
    /// naming them all (`true`), or as one [`Output::Send`] per client (`false`, the
    /// default). A driver that handles `Output::Broadcast` turns it on: a fan-out to
    /// 1,000 subscribers is then one output instead of 1,000.
    pub fn set_whole_broadcasts(&mut self, whole: bool) {
        self.whole_broadcasts = whole;
    }

    /// Totals and current counts, for metrics.
    pub fn stats(&self) -> EngineStats {
        let c = &self.stats;
        EngineStats {
            clients: self.clients.len(),
            channels: self.channels.len(),
            subscriptions: self.channels.values().map(Vec::len).sum(),
            messages_received: c.messages_received,
            broadcasts: c.broadcasts,
            directs: c.directs,
            deliveries: c.deliveries,
            auth_failures: c.auth_failures,
        }
    }

    fn users(config: &EngineConfig, hasher: &ahash::RandomState) -> Map<Arc<str>, User> {
        let mut users = Map::with_hasher(hasher.clone());
        for (name, user) in &config.users {
            users.insert(Arc::from(name.as_str()), User::from_config(user));
        }
        users
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Channels that exist (have at least one subscriber).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Subscribers of `channel` (0 when it does not exist).
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, Vec::len)
    }

    /// Channels whose history is kept: on a History hub, every channel with subscribers
    /// and every channel whose history outlives its last subscriber (until it expires).
    /// Always 0 on a hub without history.
    pub fn history_count(&self) -> usize {
        self.history.as_ref().map_or(0, Histories::len)
    }

    /// Cluster, on a hub with `Presence` or `JoinLeave`: every local subscription, as the
    /// store's presence records it. A driver writes them to the store again when the store
    /// lost them (it restarted, or took this node for dead); empty on other hubs.
    pub fn presence_entries(&self) -> Vec<PresenceEntry> {
        if !(self.shared && (self.presence || self.join_leave)) {
            return Vec::new();
        }
        let mut entries = Vec::new();
        for (channel, members) in &self.channels {
            for id in members {
                // Members are live clients with a session.
                let client = &self.clients[id];
                let user = &client
                    .session
                    .as_ref()
                    .expect("members have a session")
                    .user;
                entries.push(PresenceEntry {
                    channel: Arc::clone(channel),
                    token: client.token,
                    user: Arc::clone(user),
                    leave: self
                        .join_leave
                        .then(|| reply::join_leave("leave", channel, &client.token, user)),
                    join: self
                        .join_leave
                        .then(|| reply::join_leave("join", channel, &client.token, user)),
                });
            }
        }
        entries
    }

    /// Whether the engine holds no client, channel, kept history, pending operation or
    /// pending output: what is left after every client has disconnected, the outputs were
    /// drained and (on a History hub) the histories expired.
    pub fn is_idle(&self) -> bool {
        self.history_count() == 0
            && self.clients.is_empty()
            && self.joining.is_empty()
            && self.tokens.is_empty()
            && self.channels.is_empty()
            && self.pending.is_empty()
            && self.outputs.is_empty()
    }

    /// A client connected. Queues its greeting, `{"connected":"<token>"}`.
    pub fn handle_connect(&mut self, client: ClientId, token: Token) -> Result<(), ConnectError> {
        if self.clients.contains_key(&client) {
            return Err(ConnectError::DuplicateClient(client));
        }
        if self.tokens.contains_key(&token) {
            return Err(ConnectError::DuplicateToken);
        }
        self.tokens.insert(token, client);
        self.clients.insert(
            client,
            Client {
                token,
                session: None,
                subscriptions: Map::with_hasher(self.hasher.clone()),
                failed_auth: 0,
                operation: None,
            },
        );
        if self.cluster {
            self.outputs.push_back(Output::Watch(Topic::Client(token)));
        }
        self.send(client, reply::connected(&token));
        Ok(())
    }

    /// A client's connection ended. Forgets it and its subscriptions. Unknown clients
    /// (already closed by the engine) are ignored.
    pub fn handle_disconnect(&mut self, client: ClientId) {
        self.forget(client);
    }

    /// A message read from `client`. Frames from unknown clients are ignored.
    pub fn handle_message(&mut self, client: ClientId, frame: Message<'_>) {
        if !self.clients.contains_key(&client) {
            return;
        }
        self.stats.messages_received += 1;
        let request = match frame {
            Message::Text(text) => Request::parse(text),
            Message::Binary(_) => None,
        };
        let Some(request) = request else {
            return self.error(client, ErrorCode::InvalidPayload);
        };
        match request {
            Request::Authenticate { user, secret } => self.authenticate(client, &user, &secret),
            Request::Subscribe { channel, since } => {
                // `since` is read on a History hub only (elsewhere an ignored field).
                let since = match (self.history_config, since) {
                    (Some(_), Some(raw)) => match Since::parse(raw) {
                        Some(since) => Some(since),
                        None => return self.error(client, ErrorCode::InvalidPayload),
                    },
                    _ => None,
                };
                self.subscribe(client, &channel, since)
            }
            Request::History { channel, limit } => {
                if self.history_config.is_none() {
                    return self.error(client, ErrorCode::InvalidPayload);
                }
                if !self.may(client, Permissions::READ) {
                    return self.error(client, ErrorCode::AccessDenied);
                }
                if self.shared {
                    let channel: Arc<str> = Arc::from(&*channel);
                    let limit = limit.unwrap_or(0);
                    let pending = Pending::Read {
                        client,
                        channel: Arc::clone(&channel),
                    };
                    return self.start(pending, Operation::History { channel, limit });
                }
                // A History hub of a single node.
                let history = self.history.as_ref().expect("a History hub");
                let (offset, epoch) = history.peek(&channel);
                let events = history.last(&channel, limit.unwrap_or(0));
                let payload = reply::history(&channel, offset, epoch, events);
                self.send(client, payload);
            }
            Request::Presence { channel } => {
                if !self.presence {
                    return self.error(client, ErrorCode::InvalidPayload);
                }
                if !self.may(client, Permissions::READ) {
                    return self.error(client, ErrorCode::AccessDenied);
                }
                if self.shared {
                    let channel: Arc<str> = Arc::from(&*channel);
                    let pending = Pending::Read {
                        client,
                        channel: Arc::clone(&channel),
                    };
                    return self.start(pending, Operation::Presence(channel));
                }
                let members = self.channels.get(&*channel).map_or(&[][..], Vec::as_slice);
                let clients = members.iter().map(|id| {
                    // Members are live clients with a session (subscribing needs one, and
                    // ending it leaves every channel).
                    let c = &self.clients[id];
                    let user = c.session.as_ref().expect("members have a session");
                    (&c.token, &*user.user)
                });
                let payload = reply::presence(&channel, clients);
                self.send(client, payload);
            }
            Request::Unsubscribe { channel } => {
                self.unsubscribe(client, &channel);
                self.send(client, reply::keyed("unsubscribed", &channel));
            }
            Request::Broadcast {
                event,
                channel,
                data,
            } => {
                if !self.may(client, Permissions::WRITE) {
                    return self.error(client, ErrorCode::AccessDenied);
                }
                match self.broadcast(&event, &channel, data) {
                    Ok(Routed::Done) => self.send(client, reply::keyed("broadcasted", &channel)),
                    Ok(Routed::Remote(publication)) => self.start_publish(client, publication),
                    Err(error) => self.error(client, error),
                }
            }
            Request::Direct {
                event,
                client: target,
                data,
            } => {
                if !self.may(client, Permissions::WRITE) {
                    return self.error(client, ErrorCode::AccessDenied);
                }
                let Some(to) = Token::parse(&target) else {
                    return self.error(client, ErrorCode::InvalidClient);
                };
                let from = self.clients[&client].token.to_hex();
                // Hex digits are ASCII.
                let from = std::str::from_utf8(&from).expect("hex is ASCII");
                let payload = reply::event(&event, "from", from, data);
                match self.direct(to, payload) {
                    Ok(Routed::Done) => self.send(client, reply::keyed("directSent", &target)),
                    Ok(Routed::Remote(publication)) => self.start_publish(client, publication),
                    Err(error) => self.error(client, error),
                }
            }
            Request::Logout => {
                self.end_session(client);
                self.send(client, reply::LOGGED_OUT);
            }
            Request::Disconnect => self.close(client, CloseCode::NORMAL, ""),
        }
    }

    /// A message another node of a cluster published to `topic` (a complete event, as
    /// the accepting node built it for its recipients): delivered to this node's
    /// subscribers of the channel, or to the client with the token. Does nothing when this
    /// node no longer holds the topic. Feed a topic's messages in the order the backplane
    /// delivered them.
    pub fn handle_remote(&mut self, topic: &Topic, payload: Payload) {
        match topic {
            Topic::Channel(channel) => {
                if let Some(members) = self.channels.get(&**channel) {
                    self.stats.deliveries += members.len() as u64;
                    Self::fan_out(&mut self.outputs, self.whole_broadcasts, members, &payload);
                }
            }
            Topic::Client(token) => {
                if let Some(&to) = self.tokens.get(token) {
                    self.stats.deliveries += 1;
                    self.send(to, payload);
                }
            }
        }
    }

    /// Cluster, on a hub with `JoinLeave`: a join or leave of client `about` in `channel`,
    /// as the shared store sends it to every node: delivered to this node's subscribers of
    /// the channel except `about` itself (nobody hears of itself).
    pub fn handle_remote_about(&mut self, channel: &str, about: Token, payload: Payload) {
        let Some(members) = self.channels.get(channel) else {
            return;
        };
        let skip = self.tokens.get(&about).copied();
        let others: Vec<ClientId> = members
            .iter()
            .copied()
            .filter(|&id| Some(id) != skip)
            .collect();
        self.stats.deliveries += others.len() as u64;
        Self::fan_out(&mut self.outputs, self.whole_broadcasts, &others, &payload);
    }

    /// The hub's configuration was reloaded: `config`'s users and limits replace the
    /// engine's. Sends nothing to any client; what changes for them:
    /// - new authentications use the new users, secrets and permissions at once;
    /// - an authenticated session keeps its user, with the user's new permissions from its
    ///   next request on (a request already handled is not revisited), even when the
    ///   user's secret changed;
    /// - a session whose user was removed ends as if it had logged out, but silently: the
    ///   client becomes anonymous and its subscriptions are dropped (its next request
    ///   needing a permission is answered `ACCESS_DENIED`);
    /// - a session whose user lost READ is unsubscribed from every channel, silently, so
    ///   that it receives no more deliveries (it stays authenticated);
    /// - a secret verification still running concludes against the new users (see
    ///   [`handle_completion`](Self::handle_completion)): it cannot grant a secret that
    ///   was replaced;
    /// - the new limits apply from the next request: subscriptions past a lowered
    ///   `MaxSubscriptionsPerClient` are kept (new ones are refused), and failed
    ///   authentications counted so far count against the new `MaxFailedAuth` at the
    ///   next failure.
    ///
    /// Returns what changed, for the operator's log.
    pub fn handle_reload(&mut self, config: &EngineConfig) -> Reloaded {
        let users = Self::users(config, &self.hasher);
        let mut reloaded = Reloaded::default();
        for (name, old) in &self.users {
            match users.get(name) {
                None => reloaded.removed.push(name.to_string()),
                Some(new) => {
                    if new.secret != old.secret {
                        reloaded.secret_changed.push(name.to_string());
                    }
                    if new.permission != old.permission {
                        reloaded.permission_changed.push(name.to_string());
                    }
                }
            }
        }
        reloaded.added = users
            .keys()
            .filter(|name| !self.users.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
        for list in [
            &mut reloaded.added,
            &mut reloaded.removed,
            &mut reloaded.secret_changed,
            &mut reloaded.permission_changed,
        ] {
            list.sort_unstable();
        }
        let limits = &config.limits;
        reloaded.limits_changed = limits.max_subscriptions_per_client != self.max_subscriptions
            || limits.max_failed_auth != self.max_failed_auth;
        self.max_subscriptions = limits.max_subscriptions_per_client;
        self.max_failed_auth = limits.max_failed_auth;
        self.users = users;

        let (mut orphans, mut readers_no_more) = (Vec::new(), Vec::new());
        for (&id, client) in &mut self.clients {
            let Some(session) = &mut client.session else {
                continue;
            };
            match self.users.get(&session.user) {
                Some(user) => {
                    session.permission = user.permission;
                    if !user.permission.contains(Permissions::READ)
                        && !client.subscriptions.is_empty()
                    {
                        readers_no_more.push(id);
                    }
                }
                None => orphans.push(id),
            }
        }
        // In id order, so that the channels' member lists end up the same on every run.
        orphans.sort_unstable();
        readers_no_more.sort_unstable();
        reloaded.sessions_ended = orphans.len();
        reloaded.sessions_unsubscribed = readers_no_more.len();
        for id in orphans {
            self.end_session(id);
        }
        for id in readers_no_more {
            self.drop_subscriptions(id);
        }
        reloaded
    }

    /// The next action for the frontend, in the order the engine produced them.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Moves every pending action into `out`, in order.
    pub fn drain_outputs(&mut self, out: &mut Vec<Output>) {
        out.extend(self.outputs.drain(..));
    }

    /// What the configured secret of `user` says of `secret`: a session as the user, an
    /// error, or the PHC hash the secret must be verified against (off the engine).
    fn check_secret(&self, user: &str, secret: &str) -> Verdict {
        let Some((name, configured)) = self.users.get_key_value(user) else {
            return Verdict::Denied(ErrorCode::InvalidUser);
        };
        let session = || Session {
            user: Arc::clone(name),
            permission: configured.permission,
        };
        match &configured.secret {
            Secret::Any => Verdict::Granted(session()),
            Secret::Plain(expected) => {
                if plain_secret_matches(expected, secret) {
                    Verdict::Granted(session())
                } else {
                    Verdict::Denied(ErrorCode::InvalidCredentials)
                }
            }
            Secret::Phc(phc) => Verdict::Verify(Arc::clone(name), Arc::clone(phc)),
        }
    }

    fn authenticate(&mut self, id: ClientId, user: &str, secret: &str) {
        self.end_session(id);
        let verdict = match self.check_secret(user, secret) {
            Verdict::Granted(session) => Ok(session),
            Verdict::Denied(error) => Err(error),
            Verdict::Verify(name, phc) => {
                let pending = Pending::VerifySecret {
                    client: id,
                    user: name,
                    phc: Arc::clone(&phc),
                };
                let operation = Operation::VerifySecret(Verification {
                    phc,
                    secret: secret.to_owned(),
                });
                let op = OpId(self.next_op);
                self.next_op += 1;
                // The client exists: handle_message checked it.
                self.clients.get_mut(&id).expect("live client").operation = Some(op);
                self.pending.insert(op, pending);
                self.outputs.push_back(Output::Start {
                    client: id,
                    op,
                    operation: Box::new(operation),
                });
                return;
            }
        };
        self.conclude_authentication(id, user, verdict);
    }

    /// A publish from a backend without a connection (the HTTP publish API): `user` and
    /// `secret` are checked as `authenticate` checks them, then the publish runs as the
    /// WebSocket request would, in the order credentials, permission (WRITE), target.
    /// Deliveries queue as outputs, exactly as for a WebSocket `broadcast` (a direct
    /// message has no `from`). For a user with a PHC secret the answer is
    /// [`PublishStep::Verify`]: verify off the engine, then call
    /// [`handle_publish_verified`](Self::handle_publish_verified).
    pub fn handle_publish(&mut self, publish: &Publish, user: &str, secret: &str) -> PublishStep {
        match self.check_secret(user, secret) {
            Verdict::Granted(session) => self.publish(publish, session.permission),
            Verdict::Denied(error) => {
                self.stats.auth_failures += 1;
                PublishStep::Done(Err(error))
            }
            Verdict::Verify(_, phc) => PublishStep::Verify(Verification {
                phc,
                secret: secret.to_owned(),
            }),
        }
    }

    /// Concludes [`handle_publish`](Self::handle_publish) after the PHC verification it
    /// asked for: `verified` is its result for the hash `phc`. The user must still have
    /// that hash (a reload may have changed it meanwhile), or the credentials are invalid.
    /// [`PublishStep::Verify`] never comes from it, and [`PublishStep::Publish`] may.
    pub fn handle_publish_verified(
        &mut self,
        publish: &Publish,
        user: &str,
        phc: &str,
        verified: bool,
    ) -> PublishStep {
        let permission = match self.users.get(user) {
            Some(User {
                secret: Secret::Phc(current),
                permission,
            }) if verified && **current == *phc => *permission,
            _ => {
                self.stats.auth_failures += 1;
                return PublishStep::Done(Err(ErrorCode::InvalidCredentials));
            }
        };
        self.publish(publish, permission)
    }

    /// Concludes a publish of the publish API after the [`PublishStep::Publish`] it asked
    /// for: `reached` tells whether another node held the target (as
    /// [`Completion::Published`]). Returns the reply or `INVALID_CHANNEL` /
    /// `INVALID_CLIENT`; a broadcast is delivered to this node's subscribers of the
    /// channel now, if it has some by now.
    pub fn handle_publish_published(
        &mut self,
        publication: &Publication,
        reached: bool,
    ) -> Result<Payload, ErrorCode> {
        self.conclude_publish(publication, reached)
    }

    /// Concludes a publish of the publish API whose [`PublishStep::Publish`] could not
    /// reach the cluster's store (as [`Completion::Unavailable`]): `UNAVAILABLE` for a
    /// History hub's broadcast (nothing was delivered), else as
    /// [`handle_publish_published`](Self::handle_publish_published) with `false`.
    pub fn handle_publish_unavailable(
        &mut self,
        publication: &Publication,
    ) -> Result<Payload, ErrorCode> {
        match publication.history {
            Some(_) => Err(ErrorCode::Unavailable),
            None => self.conclude_publish(publication, false),
        }
    }

    fn publish(&mut self, publish: &Publish, permission: Permissions) -> PublishStep {
        if !permission.contains(Permissions::WRITE) {
            return PublishStep::Done(Err(ErrorCode::AccessDenied));
        }
        let data = publish.data.as_deref();
        let (routed, reply) = match &publish.target {
            Target::Channel(channel) => (
                self.broadcast(&publish.event, channel, data),
                reply::keyed("broadcasted", channel),
            ),
            Target::Client(token) => {
                let Some(to) = Token::parse(token) else {
                    return PublishStep::Done(Err(ErrorCode::InvalidClient));
                };
                let payload = reply::event_unrouted(&publish.event, data);
                (self.direct(to, payload), reply::keyed("directSent", token))
            }
        };
        match routed {
            Ok(Routed::Done) => PublishStep::Done(Ok(reply)),
            Ok(Routed::Remote(publication)) => PublishStep::Publish(publication),
            Err(error) => PublishStep::Done(Err(error)),
        }
    }

    /// Cluster: `client`'s message goes to the other nodes; its reply waits for their
    /// answer ([`Completion::Published`]).
    fn start_publish(&mut self, client: ClientId, publication: Publication) {
        let pending = Pending::Publish {
            client,
            publication: publication.clone(),
        };
        self.start(pending, Operation::Publish(publication));
    }

    /// Starts `operation` on behalf of the client of `pending`, which awaits its completion.
    fn start(&mut self, pending: Pending, operation: Operation) {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let client = pending.client();
        // Called for a client whose request is being handled.
        self.clients
            .get_mut(&client)
            .expect("live client")
            .operation = Some(op);
        self.pending.insert(op, pending);
        self.outputs.push_back(Output::Start {
            client,
            op,
            operation: Box::new(operation),
        });
    }

    /// The reply to a publication that went to the other nodes, `reached` telling whether
    /// one held its topic; delivers a broadcast to local subscribers that appeared since.
    fn conclude_publish(
        &mut self,
        publication: &Publication,
        reached: bool,
    ) -> Result<Payload, ErrorCode> {
        match &publication.topic {
            Topic::Channel(channel) if publication.history.is_some() => {
                // The store delivers it to every node holding the channel, this one too.
                if !reached {
                    return Err(ErrorCode::InvalidChannel);
                }
                self.stats.broadcasts += 1;
                Ok(reply::keyed("broadcasted", channel))
            }
            Topic::Channel(channel) => {
                let members = self.channels.get(&**channel);
                if !reached && members.is_none() {
                    return Err(ErrorCode::InvalidChannel);
                }
                self.stats.broadcasts += 1;
                if let Some(members) = members {
                    self.stats.deliveries += members.len() as u64;
                    Self::fan_out(
                        &mut self.outputs,
                        self.whole_broadcasts,
                        members,
                        &publication.payload,
                    );
                }
                Ok(reply::keyed("broadcasted", channel))
            }
            Topic::Client(token) => {
                if !reached {
                    return Err(ErrorCode::InvalidClient);
                }
                self.stats.directs += 1;
                let hex = token.to_hex();
                // Hex digits are ASCII.
                Ok(reply::keyed(
                    "directSent",
                    std::str::from_utf8(&hex).expect("hex is ASCII"),
                ))
            }
        }
    }

    /// The result of the operation started as `op` ([`Output::Start`]). Ignored when the
    /// engine does not await `op`: an id it never gave, one already completed, or one
    /// whose client left or ended its session meanwhile (disconnect, logout, a new
    /// `authenticate`). A completion of the wrong kind for `op` is ignored too, and `op`
    /// still awaits its own.
    ///
    /// A secret verification concludes against the users in force *now*: if a
    /// [reload](Self::handle_reload) removed the user or replaced its hash while the
    /// verification ran, the authentication fails with `INVALID_CREDENTIALS` (and counts
    /// as a failed one) whatever the result, so a secret that was replaced never opens a
    /// session; a changed permission applies to the new session.
    pub fn handle_completion(&mut self, op: OpId, completion: Completion) {
        if !self
            .pending
            .get(&op)
            .is_some_and(|p| p.accepts(&completion))
        {
            return;
        }
        // Present: checked just above.
        let pending = self.pending.remove(&op).expect("a pending operation");
        match (pending, completion) {
            (Pending::VerifySecret { client, user, phc }, Completion::SecretVerified(ok)) => {
                // Pending operations are forgotten with their client's session.
                let c = self.clients.get_mut(&client).expect("live client");
                debug_assert_eq!(c.operation, Some(op));
                c.operation = None;
                let verdict = match self.users.get_key_value(&*user) {
                    Some((name, u)) if ok && u.secret == Secret::Phc(phc) => Ok(Session {
                        user: Arc::clone(name),
                        permission: u.permission,
                    }),
                    _ => Err(ErrorCode::InvalidCredentials),
                };
                self.conclude_authentication(client, &user, verdict);
            }
            (
                Pending::Publish {
                    client,
                    publication,
                },
                Completion::Published(reached),
            ) => {
                // Pending operations are forgotten with their client.
                let c = self.clients.get_mut(&client).expect("live client");
                debug_assert_eq!(c.operation, Some(op));
                c.operation = None;
                match self.conclude_publish(&publication, reached) {
                    Ok(reply) => self.send(client, reply),
                    Err(error) => self.error(client, error),
                }
            }
            (
                Pending::Publish {
                    client,
                    publication,
                },
                Completion::Unavailable,
            ) => {
                // Pending operations are forgotten with their client.
                self.clients
                    .get_mut(&client)
                    .expect("live client")
                    .operation = None;
                // Without history the store's absence means no other node was reached.
                match publication.history {
                    Some(_) => self.error(client, ErrorCode::Unavailable),
                    None => match self.conclude_publish(&publication, false) {
                        Ok(reply) => self.send(client, reply),
                        Err(error) => self.error(client, error),
                    },
                }
            }
            (
                Pending::Join {
                    client,
                    channel,
                    token,
                    user,
                    new,
                },
                completion,
            ) if matches!(completion, Completion::Joined(_) | Completion::Unavailable) => {
                self.conclude_join(client, channel, token, user, new, completion);
            }
            (Pending::Read { client, channel }, completion) => {
                // Pending operations are forgotten with their client.
                self.clients
                    .get_mut(&client)
                    .expect("live client")
                    .operation = None;
                let payload = match completion {
                    Completion::History(read) => {
                        reply::history(&channel, read.offset, &read.epoch, read.events.iter())
                    }
                    Completion::Presence(clients) => reply::presence(
                        &channel,
                        clients.iter().map(|(token, user)| (token, user.as_str())),
                    ),
                    _ => ErrorCode::Unavailable.payload(),
                };
                self.send(client, payload);
            }
            _ => unreachable!("accepts() checked the kind"),
        }
    }

    /// Time passed: `now` is the driver's clock. On a History hub this stamps the channels
    /// broadcast to since the last call (their history is kept until `now + TtlMs`) and
    /// expires histories that are due. Calling it when nothing is due is harmless: it only
    /// tells the engine the time (a driver should do so once when it starts; until the
    /// engine has been given the time, no history expires). A `now` earlier than one already
    /// given counts as the later one.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(history) = &mut self.history {
            let channels = &self.channels;
            history.handle_timeout(now, |name| channels.contains_key(name));
        }
    }

    /// When the engine next needs [`handle_timeout`](Self::handle_timeout): the earliest
    /// history expiry, or shortly after the last time given when a broadcast since then
    /// must be stamped (at most every 10 ms while broadcasts keep coming). `None` on a hub
    /// without history, and while nothing is kept.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.history.as_ref().and_then(Histories::poll_timeout)
    }

    fn conclude_authentication(
        &mut self,
        id: ClientId,
        user: &str,
        verdict: Result<Session, ErrorCode>,
    ) {
        // Callers conclude for a client they just found live (a frame, or a completion
        // still awaited, which its client's departure would have cancelled).
        let client = self.clients.get_mut(&id).expect("live client");
        match verdict {
            Ok(session) => {
                client.session = Some(session);
                self.send(id, reply::keyed("authenticated", user));
            }
            Err(error) => {
                self.stats.auth_failures += 1;
                client.failed_auth += 1;
                let exhausted =
                    self.max_failed_auth != 0 && client.failed_auth >= self.max_failed_auth;
                self.outputs.push_back(Output::AuthFailed {
                    client: id,
                    user: user.to_owned(),
                    error,
                });
                self.error(id, error);
                if exhausted {
                    self.close(id, CloseCode::POLICY, "too many failed authentications");
                }
            }
        }
    }

    /// Delivers a broadcast to `channel`'s subscribers (with its offset and epoch on a
    /// History hub, where it is also kept), and in a cluster publishes it to the other
    /// nodes. Without local subscribers: `INVALID_CHANNEL`, or in a cluster the
    /// publication whose answer decides. The caller checked the permission.
    fn broadcast(
        &mut self,
        event: &str,
        channel: &str,
        data: Option<&serde_json::value::RawValue>,
    ) -> Result<Routed, ErrorCode> {
        if self.shared
            && let Some(history) = self.history_config
        {
            // The store gives it its offset and delivers it to every node, this one too.
            let publication = Publication {
                topic: Topic::Channel(Arc::from(channel)),
                payload: reply::event(event, "channel", channel, data),
                history: Some(history),
            };
            return Ok(Routed::Remote(publication));
        }
        let Some((name, members)) = self.channels.get_key_value(channel) else {
            if self.cluster {
                return Ok(Routed::Remote(Publication {
                    topic: Topic::Channel(Arc::from(channel)),
                    payload: reply::event(event, "channel", channel, data),
                    history: None,
                }));
            }
            return Err(ErrorCode::InvalidChannel);
        };
        let payload = match &mut self.history {
            Some(history) => history.append(name, |offset, epoch| {
                reply::event_at(event, channel, data, offset, epoch)
            }),
            None => reply::event(event, "channel", channel, data),
        };
        self.stats.broadcasts += 1;
        self.stats.deliveries += members.len() as u64;
        Self::fan_out(&mut self.outputs, self.whole_broadcasts, members, &payload);
        if self.cluster {
            let topic = Topic::Channel(Arc::clone(name));
            self.outputs
                .push_back(Output::Publish(Box::new(Publication {
                    topic,
                    payload,
                    history: None,
                })));
        }
        Ok(Routed::Done)
    }

    /// Delivers a direct message to the client with token `to`: `INVALID_CLIENT` when no
    /// client here has it, or in a cluster the publication whose answer decides. The
    /// caller checked the permission.
    fn direct(&mut self, to: Token, payload: Payload) -> Result<Routed, ErrorCode> {
        match self.tokens.get(&to) {
            Some(&client) => {
                self.stats.directs += 1;
                self.stats.deliveries += 1;
                self.send(client, payload);
                Ok(Routed::Done)
            }
            None if self.cluster => Ok(Routed::Remote(Publication {
                topic: Topic::Client(to),
                payload,
                history: None,
            })),
            None => Err(ErrorCode::InvalidClient),
        }
    }

    fn subscribe(&mut self, id: ClientId, channel: &str, since: Option<Since<'_>>) {
        if !self.may(id, Permissions::READ) {
            return self.error(id, ErrorCode::AccessDenied);
        }
        if self.shared {
            return self.join(id, channel, since);
        }
        // `may` just looked the client up; handle_message checked it is live.
        let client = self.clients.get_mut(&id).expect("live client");
        let name = match client.subscriptions.get_key_value(channel) {
            Some((name, _)) => Arc::clone(name),
            None => {
                if self.max_subscriptions != 0
                    && client.subscriptions.len() >= self.max_subscriptions
                {
                    return self.error(id, ErrorCode::LimitExceeded);
                }
                let name = match self.channels.get_key_value(channel) {
                    Some((name, _)) => Arc::clone(name),
                    None => Arc::from(channel),
                };
                let members = self.channels.entry(Arc::clone(&name)).or_default();
                if self.cluster && members.is_empty() {
                    let topic = Topic::Channel(Arc::clone(&name));
                    self.outputs.push_back(Output::Watch(topic));
                }
                if self.join_leave && !members.is_empty() {
                    // `may` found a session.
                    let user = &client.session.as_ref().expect("a session").user;
                    let join = reply::join_leave("join", channel, &client.token, user);
                    self.stats.deliveries += members.len() as u64;
                    Self::fan_out(&mut self.outputs, self.whole_broadcasts, members, &join);
                }
                client
                    .subscriptions
                    .insert(Arc::clone(&name), members.len());
                members.push(id);
                name
            }
        };
        let payload = match &mut self.history {
            None => reply::keyed("subscribed", channel),
            Some(history) => {
                let (offset, epoch) = history.position(&name);
                let recovery = since
                    .as_ref()
                    .map(|s| history.recover(channel, s.offset, &s.epoch));
                reply::subscribed_at(channel, offset, &epoch, recovery)
            }
        };
        self.send(id, payload);
    }

    /// Shared hub: `id` (allowed to READ) enters `channel` through the store
    /// ([`Operation::Join`]); its reply waits for the marker ([`Completion::Joined`]).
    fn join(&mut self, id: ClientId, channel: &str, since: Option<Since<'_>>) {
        // `may` just looked the client up; handle_message checked it is live.
        let client = &self.clients[&id];
        let new = !client.subscriptions.contains_key(channel);
        if new
            && self.max_subscriptions != 0
            && client.subscriptions.len() >= self.max_subscriptions
        {
            return self.error(id, ErrorCode::LimitExceeded);
        }
        let token = client.token;
        // `may` found a session.
        let user = Arc::clone(&client.session.as_ref().expect("a session").user);
        let name = match (
            self.channels.get_key_value(channel),
            self.joining.get_key_value(channel),
        ) {
            (Some((name, _)), _) | (None, Some((name, _))) => Arc::clone(name),
            (None, None) => Arc::from(channel),
        };
        if new {
            let count = self.joining.entry(Arc::clone(&name)).or_insert(0);
            if *count == 0 && !self.channels.contains_key(&name) {
                // The node receives the channel's events from before the marker on.
                let topic = Topic::Channel(Arc::clone(&name));
                self.outputs.push_back(Output::Watch(topic));
            }
            *count += 1;
        }
        let announce = |kind| reply::join_leave(kind, channel, &token, &user);
        let join = Join {
            channel: Arc::clone(&name),
            token,
            user: Arc::clone(&user),
            history: self.history_config,
            since: since.map(|s| (s.offset, s.epoch.into_owned())),
            // A subscriber's entry is there already (and a reload may be removing it).
            presence: (self.presence || self.join_leave) && new,
            join: (self.join_leave && new).then(|| announce("join")),
            leave: self.join_leave.then(|| announce("leave")),
        };
        let pending = Pending::Join {
            client: id,
            channel: name,
            token,
            user,
            new,
        };
        self.start(pending, Operation::Join(join));
    }

    /// Shared hub: the end of `client`'s join of `channel` (`new` unless it was subscribed
    /// already): the marker's position, or the store's absence.
    fn conclude_join(
        &mut self,
        id: ClientId,
        channel: Arc<str>,
        token: Token,
        user: Arc<str>,
        new: bool,
        completion: Completion,
    ) {
        // Pending operations are forgotten with their client.
        self.clients.get_mut(&id).expect("live client").operation = None;
        if new {
            self.joined_no_more(&channel);
        }
        let joined = match completion {
            // A reload may have taken READ (or the user) away meanwhile.
            Completion::Joined(joined) if self.may(id, Permissions::READ) => joined,
            other => {
                if new {
                    // The store may have let it in: it leaves again.
                    self.unwatch_if_unheld(&channel);
                    self.depart(&channel, &token, &user);
                }
                let error = match other {
                    Completion::Joined(_) => ErrorCode::AccessDenied,
                    _ => ErrorCode::Unavailable,
                };
                return self.error(id, error);
            }
        };
        if new {
            let members = self.channels.entry(Arc::clone(&channel)).or_default();
            let client = self.clients.get_mut(&id).expect("live client");
            client
                .subscriptions
                .insert(Arc::clone(&channel), members.len());
            members.push(id);
        }
        let payload = match self.history_config {
            Some(_) => {
                let recovery = joined
                    .recovery
                    .as_ref()
                    .map(|r| r.as_ref().map(|e| e.iter()));
                reply::subscribed_at(&channel, joined.offset, &joined.epoch, recovery)
            }
            None => reply::keyed("subscribed", &channel),
        };
        self.send(id, payload);
    }

    /// Shared hub: one join of `channel` is over.
    fn joined_no_more(&mut self, channel: &str) {
        if let Some(count) = self.joining.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                self.joining.remove(channel);
            }
        }
    }

    /// Cluster: the node no longer holds `channel` unless a subscriber or a join remains.
    fn unwatch_if_unheld(&mut self, channel: &Arc<str>) {
        if self.cluster
            && !self.channels.contains_key(channel)
            && !self.joining.contains_key(channel)
        {
            let topic = Topic::Channel(Arc::clone(channel));
            self.outputs.push_back(Output::Unwatch(topic));
        }
    }

    /// Shared hub with `Presence` or `JoinLeave`: the store forgets the client (token,
    /// user) in `channel` and tells the channel's holders.
    fn depart(&mut self, channel: &Arc<str>, token: &Token, user: &str) {
        if self.presence || self.join_leave {
            let leave = self
                .join_leave
                .then(|| reply::join_leave("leave", channel, token, user));
            self.outputs.push_back(Output::Left(Box::new(Departure {
                channel: Arc::clone(channel),
                token: *token,
                leave,
            })));
        }
    }

    /// Removes `id` from `channel` if subscribed; removes the channel when it empties.
    fn unsubscribe(&mut self, id: ClientId, channel: &str) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let Some((name, index)) = client.subscriptions.remove_entry(channel) else {
            return;
        };
        let token = client.token;
        // Subscribed clients have a session (ending it leaves every channel first).
        let user = Arc::clone(&client.session.as_ref().expect("a session").user);
        self.leave(&name, id, index, &token, &user);
    }

    /// Takes `id` (token `token`, user `user`) out of `name`'s member list at `index`; tells
    /// the remaining members on a JoinLeave hub; removes the channel when it empties.
    fn leave(&mut self, name: &Arc<str>, id: ClientId, index: usize, token: &Token, user: &str) {
        // A client's subscriptions and the channels' member lists change together.
        let members = self
            .channels
            .get_mut(name)
            .expect("subscribed channels exist");
        debug_assert_eq!(members[index], id);
        members.swap_remove(index);
        if let Some(&moved) = members.get(index) {
            // The last member took `index`; record its new place. Members are live,
            // subscribed clients: forget() leaves every channel before removing a client.
            let moved = self
                .clients
                .get_mut(&moved)
                .expect("members are live clients");
            *moved
                .subscriptions
                .get_mut(name)
                .expect("member is subscribed") = index;
        }
        let emptied = members.is_empty();
        if emptied {
            self.channels.remove(name);
            if let Some(history) = &mut self.history {
                history.channel_emptied(name);
            }
            self.unwatch_if_unheld(name);
        }
        if self.shared {
            self.depart(name, token, user);
        } else if !emptied && self.join_leave {
            let members = &self.channels[name];
            let leave = reply::join_leave("leave", name, token, user);
            self.stats.deliveries += members.len() as u64;
            Self::fan_out(&mut self.outputs, self.whole_broadcasts, members, &leave);
        }
    }

    /// Drops the session and every subscription; the client stays connected.
    fn end_session(&mut self, id: ClientId) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        // A verification ends with the session; a publication already went out and is
        // answered (it ends only with the client).
        if let Some(op) = client.operation
            && matches!(self.pending.get(&op), Some(Pending::VerifySecret { .. }))
        {
            client.operation = None;
            self.pending.remove(&op);
        }
        // Leaves are announced as the session's user, so the session goes after them.
        self.drop_subscriptions(id);
        if let Some(client) = self.clients.get_mut(&id) {
            client.session = None;
        }
    }

    /// Leaves every channel `id` is subscribed to (announced as its session's user); its
    /// session stays.
    fn drop_subscriptions(&mut self, id: ClientId) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let token = client.token;
        // Subscribing needs a session: a client with subscriptions has one.
        let user = client.session.as_ref().map(|s| Arc::clone(&s.user));
        let empty = Map::with_hasher(self.hasher.clone());
        let subscriptions = std::mem::replace(&mut client.subscriptions, empty);
        let user = user.as_deref().unwrap_or_default();
        for (name, index) in &subscriptions {
            self.leave(name, id, *index, &token, user);
        }
    }

    fn forget(&mut self, id: ClientId) {
        self.end_session(id);
        if let Some(client) = self.clients.remove(&id) {
            self.tokens.remove(&client.token);
            if let Some(op) = client.operation
                && let Some(Pending::Join {
                    channel,
                    token,
                    user,
                    new: true,
                    ..
                }) = self.pending.remove(&op)
            {
                // The store may have let it in already: it leaves like a subscriber.
                self.joined_no_more(&channel);
                self.unwatch_if_unheld(&channel);
                self.depart(&channel, &token, &user);
            }
            if self.cluster {
                let topic = Topic::Client(client.token);
                self.outputs.push_back(Output::Unwatch(topic));
            }
        }
    }

    fn close(&mut self, id: ClientId, code: CloseCode, reason: &'static str) {
        self.forget(id);
        self.outputs.push_back(Output::Close {
            client: id,
            code,
            reason: reason.into(),
        });
    }

    fn may(&self, id: ClientId, needed: Permissions) -> bool {
        self.clients[&id]
            .session
            .as_ref()
            .is_some_and(|s| s.permission.contains(needed))
    }

    /// `payload` to every one of `members`: one [`Output::Broadcast`] if `whole` and they
    /// are several, else one [`Output::Send`] each.
    fn fan_out(
        outputs: &mut VecDeque<Output>,
        whole: bool,
        members: &[ClientId],
        payload: &Payload,
    ) {
        if whole && members.len() > 1 {
            outputs.push_back(Output::Broadcast {
                clients: members.into(),
                payload: payload.clone(),
            });
            return;
        }
        outputs.reserve(members.len());
        outputs.extend(members.iter().map(|&client| Output::Send {
            client,
            payload: payload.clone(),
        }));
    }

    fn send(&mut self, client: ClientId, payload: Payload) {
        self.outputs.push_back(Output::Send { client, payload });
    }

    fn error(&mut self, client: ClientId, code: ErrorCode) {
        self.send(client, code.payload());
    }
}

/// The SHA-256 digest of a plain secret.
fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `given` is the plain secret whose digest is `expected`: digests of equal size,
/// compared in constant time.
fn plain_secret_matches(expected: &[u8; 32], given: &str) -> bool {
    bool::from(expected.ct_eq(&digest(given)))
}

impl Protocol for Engine {
    fn handle_connect(&mut self, client: ClientId, token: Token) -> Result<(), ConnectError> {
        Engine::handle_connect(self, client, token)
    }
    fn handle_message(&mut self, client: ClientId, frame: Message<'_>) {
        Engine::handle_message(self, client, frame)
    }
    fn handle_disconnect(&mut self, client: ClientId) {
        Engine::handle_disconnect(self, client)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Engine::poll_output(self)
    }
    fn drain_outputs(&mut self, out: &mut Vec<Output>) {
        Engine::drain_outputs(self, out)
    }
    fn handle_completion(&mut self, op: OpId, completion: Completion) {
        Engine::handle_completion(self, op, completion)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Engine::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Engine::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn plain_secrets_are_compared_as_fixed_size_digests() {
        let config =
            EngineConfig::from_json(r#"{"Users":{"p":{"Secret":"s3cret","Permission":1}}}"#)
                .unwrap();
        let engine = Engine::new(&config, HashSeed::default());
        let Some(User {
            secret: Secret::Plain(stored),
            ..
        }) = engine.users.get("p")
        else {
            panic!("a plain secret")
        };
        // The engine keeps the digest, never the secret or its length.
        assert_eq!(stored, &<[u8; 32]>::from(Sha256::digest(b"s3cret")));
        assert!(plain_secret_matches(stored, "s3cret"));
        for wrong in [
            "",
            "s",
            "s3cre",
            "s3cret ",
            "S3cret",
            "s3cret-and-much-longer",
        ] {
            assert!(!plain_secret_matches(stored, wrong), "{wrong:?}");
        }
    }

    /// Only this crate's tests can build a completion no operation expects
    /// ([`Completion::Unexpected`]), so the wrong-kind rule is tested here.
    #[test]
    fn a_completion_of_the_wrong_kind_is_ignored_and_the_operation_still_awaits_its_own() {
        let json = format!(r#"{{"Users":{{"h":{{"Secret":"{PHC}","Permission":3}}}}}}"#);
        let config = EngineConfig::from_json(&json).unwrap();
        let mut engine = Engine::new(&config, HashSeed::default());
        let mut out = Vec::new();
        let c = ClientId(1);
        engine
            .handle_connect(c, Token::from_bytes([1; 16]))
            .unwrap();
        engine.handle_message(
            c,
            Message::Text(r#"{"authenticate":{"user":"h","secret":"s"}}"#),
        );
        engine.drain_outputs(&mut out);
        let Some(Output::Start { client, op, .. }) = out.pop() else {
            panic!("a verification starts: {out:?}")
        };
        assert_eq!(client, c);
        engine.handle_completion(op, Completion::Unexpected);
        assert!(engine.poll_output().is_none(), "ignored");
        assert_eq!(engine.pending.len(), 1, "still awaited");
        engine.handle_completion(op, Completion::SecretVerified(true));
        engine.drain_outputs(&mut out);
        let Some(Output::Send { payload, .. }) = out.pop() else {
            panic!("a reply: {out:?}")
        };
        assert_eq!(payload.as_text(), Some(r#"{"authenticated":"h"}"#));
        engine.handle_disconnect(c);
        assert!(engine.is_idle());
    }
}
