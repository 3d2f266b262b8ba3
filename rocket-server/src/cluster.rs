//! The cluster backplane: several nodes sharing one Redis act as one server
//! (`docs/PROTOCOL.md`, "Cluster"). A server without a `Cluster` setting has no backplane
//! and runs none of this.
//!
//! ## Topics
//! `{Prefix}:{hub}:c:{channel}` carries a channel's broadcasts and `{Prefix}:{hub}:t:{token}`
//! the direct messages of one client. A node is subscribed to a channel's topic while it
//! has local subscribers of the channel and to the topic of each of its clients (the
//! engine's [`Output::Watch`](rocket_proto::Output::Watch) and `Unwatch`). `%` and `:` in a
//! hub path are percent-encoded, so two hubs' names cannot collide. Names carry no
//! `{hash tag}`: under Redis Cluster's sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`) every topic
//! would hash to a slot of its own, spreading channels over the shards.
//!
//! ## Messages
//! A message is the 16-hex-digit id of the node that published it, then the event exactly
//! as its recipients receive it, encoded once by the node that accepted it. A node drops
//! its own messages: it delivered them locally already.
//!
//! ## One connection, in order
//! Each node has one RESP3 connection. SUBSCRIBE, UNSUBSCRIBE and PUBLISH go over it in the
//! order the hubs asked for them (the backplane task sends a run of publications as one
//! pipeline and awaits it before the next command), and the subscribed messages come back
//! on it as RESP3 pushes, which are fed to the hubs in the order they arrive. Hence:
//! - one publisher's messages reach Redis in the order they were accepted, and Redis hands
//!   a topic's messages to each subscriber in that order: per-publisher order holds
//!   across nodes. Messages of publishers on *different* nodes are ordered as Redis
//!   received them, which may differ from the order the publishers sent them in;
//! - PUBLISH answers how many connections received the message; whether this node's own
//!   connection was among them is known (it sent its SUBSCRIBEs and UNSUBSCRIBEs on the
//!   same ordered stream), so the rest is the number of *other* nodes holding the target,
//!   and `INVALID_CHANNEL` / `INVALID_CLIENT` come only when no node holds it.
//!
//! ## Shared state
//! Hubs with `History`, `Presence` or `JoinLeave` keep them in Redis, changed by Lua
//! scripts that publish on the channel's topic too (see [`store`]). Their messages start
//! with `*` (an event every node delivers, the publishing node included), `#` (a History
//! channel's event with its offset and epoch), never with a node id's hex digit. A node's
//! own Redis channel `{Prefix}:m:{id}` carries its markers: `!` for a join, `%` for a
//! resync (below).
//!
//! A node keeps its place in each History channel it holds (the last offset and epoch it
//! delivered) and drops an event it delivered already. When its connection was lost, it
//! holds back the channels' events on the new connection until each channel's *resync*
//! marker (a [`store::JOIN`] without a client) brings the events it missed meanwhile:
//! local subscribers get them first, then the held ones, in offset order, none twice.
//!
//! ## Failure
//! The connection is lost on a disconnection push, an error, or when it goes silent: a
//! command or PING (one is sent after [`HEARTBEAT`] without traffic) waits
//! [`RESPONSE_TIMEOUT`] with nothing at all arriving (on a busy node an answer may wait
//! behind pushed messages; those prove the link alive). Whatever a connection given up
//! still holds is ignored, so nothing arrives twice or out of order. The
//! backplane is then down: `/ready` answers 503, `rocket_cluster_up` is 0, publications
//! are dropped (those awaiting an answer learn that no node held their target) and local
//! delivery goes on; no client is disconnected for it. The task reconnects at once, then
//! with backoff (doubling from 100 ms to at most [`MAX_BACKOFF`]), subscribes again to
//! every topic the hubs hold, and is up.
//!
//! A node that cannot hand the other nodes' messages to its hubs as fast as they arrive
//! (more than [`MAX_PUSHES`] or [`MAX_PUSH_BYTES`] waiting) gives its connection up the same
//! way, as Redis gives up a subscriber past its output buffer limit: its memory stays
//! bounded, and its History channels resync.

mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use rocket_proto::{
    Completion, Departure, HistoryRead, Join, OpId, Payload, Publication, Token, Topic,
};

use crate::Runtime;
use crate::config::ClusterConfig;
use crate::hub::{Cork, Hub};
use crate::runtime::Task;

/// A PING goes out after this long without traffic on the connection.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(250);
/// A command or PING unanswered for this long means the connection is lost.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(600);
/// The first reconnection backoff; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Commands taken from the queue at once (a run of publications is one pipeline).
const MAX_BATCH: usize = 512;
/// Topics per SUBSCRIBE when a new connection subscribes again to everything.
const SUBSCRIBE_CHUNK: usize = 1000;
/// Publications waiting for the task beyond which new ones are dropped (and counted): the
/// queue stays bounded when Redis is slower than the hubs. Subscriptions are never dropped.
const MAX_QUEUED: usize = 1 << 16;
/// Commands waiting below which a History broadcast to a channel this node holds is
/// answered before Redis took it; beyond, its publisher waits for Redis.
const EARLY_QUEUED: usize = 4096;
/// Length of a node id in a message: 16 hex digits.
const NODE_ID_LEN: usize = 16;
/// Length of a join's number in its marker: 16 hex digits.
const JOIN_ID_LEN: usize = 16;
/// Pushes waiting for the delivery task beyond which the node has fallen behind the other
/// nodes: the connection is given up, as Redis itself gives up a subscriber past its output
/// buffer limit (History channels then resync; see "Failure" above).
const MAX_PUSHES: usize = 1 << 16;
/// Bytes of the pushes waiting beyond which the node has fallen behind: Redis's own limit
/// for a subscriber's output buffer (`client-output-buffer-limit pubsub 32mb`).
const MAX_PUSH_BYTES: usize = 32 << 20;
/// Pushes the delivery task hands to the hubs under one cork (`hub.rs`, `Cork`).
const PUSH_RUN: usize = 128;

/// The node's link to the other nodes: one per server with a `Cluster` setting.
pub(crate) struct Backplane {
    client: redis::Client,
    /// `{Prefix}:` in bytes.
    prefix: Vec<u8>,
    /// This node's id, 16 hex digits (64 random bits).
    node: [u8; NODE_ID_LEN],
    /// `{Prefix}:m:{id}`: where this node receives its markers.
    markers: Vec<u8>,
    commands: async_channel::Sender<Command>,
    queue: async_channel::Receiver<Command>,
    /// The hubs by their encoded path, for routing what other nodes publish.
    hubs: OnceLock<HashMap<Vec<u8>, Weak<Hub>>>,
    up: AtomicBool,
    started: AtomicBool,
    /// The last connection's number (each attempt takes the next one).
    generation: AtomicU64,
    /// The number of the connection in use; 0 while there is none. Pushes (messages, news of
    /// a disconnection) from any other connection are ignored: a connection declared lost
    /// may still hold messages, which must not arrive beside the new connection's.
    current: AtomicU64,
    /// Pushes received on the current connection: proof that it is alive while an answer
    /// waits behind them.
    pushes: AtomicU64,
    /// Pushes received and not yet handled, in the order they arrived: the delivery task
    /// ([`deliver`](Self::deliver)) takes them from `arrived`.
    incoming: async_channel::Sender<(u64, PushInfo)>,
    arrived: async_channel::Receiver<(u64, PushInfo)>,
    /// Bytes of the pushes waiting in `arrived`.
    waiting_bytes: AtomicUsize,
    /// The connection given up because its pushes piled up past [`MAX_PUSHES`] or
    /// [`MAX_PUSH_BYTES`]; whatever more it pushes is ignored.
    behind: AtomicU64,
    /// Joins whose marker is awaited, by number.
    joins: Mutex<HashMap<u64, Joining>>,
    /// The last join's number.
    last_join: AtomicU64,
    /// The last epoch candidate's number.
    last_epoch: AtomicU64,
    /// This node's place in each History channel it holds, by topic.
    streams: Mutex<HashMap<Vec<u8>, Position>>,
    /// Commands queued by the hubs and not yet carried out by the task.
    in_flight: AtomicUsize,
    /// History publications waiting to be sent again after a reconnection.
    resending: AtomicUsize,
    pub(crate) counters: ClusterCounters,
}

/// Where this node is in a History channel's stream.
#[derive(Debug, Default)]
struct Position {
    offset: u64,
    epoch: Vec<u8>,
    /// While the channel resyncs after a reconnection: its events, held back until the
    /// resync's marker (offset, epoch, event).
    held: Option<Vec<Held>>,
}

/// An event held back while its channel resyncs: offset, epoch, event.
type Held = (u64, Vec<u8>, Vec<u8>);

impl Position {
    /// Moves to `offset` in `epoch` unless the node was there already (a duplicate).
    fn advance(&mut self, offset: u64, epoch: &[u8]) -> bool {
        if self.epoch == epoch && offset <= self.offset {
            return false;
        }
        self.offset = offset;
        if self.epoch != epoch {
            // Once per epoch, not per event.
            self.epoch = epoch.to_vec();
        }
        true
    }
}

/// A join whose marker is awaited: the hub and operation to complete, the channel's topic,
/// and the driver to tell (dropped unsent when the join failed).
struct Joining {
    hub: Weak<Hub>,
    op: OpId,
    topic: Vec<u8>,
    done: async_channel::Sender<()>,
    /// Its script was answered: if the connection is lost now, the marker it owed is lost.
    replied: bool,
}

/// Forgets a join's registry entry when its driver stops waiting (its client went).
struct Forget<'a> {
    joins: &'a Mutex<HashMap<u64, Joining>>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.joins).remove(&self.id);
    }
}

/// What the cluster metrics read.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    /// Messages published to Redis.
    pub(crate) published: AtomicU64,
    /// Messages received from other nodes.
    pub(crate) received: AtomicU64,
    /// Connections to Redis re-established after a loss.
    pub(crate) reconnects: AtomicU64,
    /// Publications dropped because [`MAX_QUEUED`] were already waiting.
    pub(crate) dropped: AtomicU64,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("node", &String::from_utf8_lossy(&self.node))
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// What the hubs ask of the backplane task, in order.
enum Command {
    Watch(Vec<u8>),
    Unwatch(Vec<u8>),
    /// A PUBLISH or a script, pipelined with its neighbours.
    Run(Job),
    /// The connection of this generation reported its loss.
    Lost(u64),
}

/// A command to pipeline, and what becomes of its reply.
struct Job {
    cmd: redis::Cmd,
    then: Then,
    /// It publishes a message (counted in `rocket_cluster_published_total`).
    publication: bool,
}

impl Job {
    fn new(cmd: redis::Cmd, then: Then) -> Self {
        Self {
            cmd,
            then,
            publication: false,
        }
    }
}

/// What becomes of a [`Job`]'s reply.
enum Then {
    Nothing,
    /// A PUBLISH to `topic`: tell whether another node held it (this node's connection
    /// counts among the receivers while subscribed). `false` when Redis is unreachable.
    Reach {
        topic: Vec<u8>,
        answer: async_channel::Sender<bool>,
    },
    /// Hand the reply over; `None` when Redis could not be reached or the command failed.
    Reply(async_channel::Sender<Option<Value>>),
    /// A join's script: as `Reply`, and once answered its marker is owed by this
    /// connection (if the connection is lost now, the join fails).
    JoinReply {
        id: u64,
        answer: async_channel::Sender<Option<Value>>,
    },
    /// The resync of the History channel with this topic: if it failed, the events held
    /// back for it go out now (a gap remains; the subscribers see it in the offsets).
    Resync(Vec<u8>),
    /// An accepted History publication: if the link broke before Redis answered, it is
    /// sent again after the reconnection, before anything newer. It is given a number when
    /// first sent (`numbered`), in sending order: Redis keeps the last number it carried
    /// out for this node and skips a publication sent again whose number is not above it.
    Keep {
        numbered: bool,
    },
}

impl Backplane {
    /// A backplane for `config`, not yet connected (see [`task`](Self::task)).
    pub(crate) fn new(config: &ClusterConfig) -> Result<Arc<Self>, redis::RedisError> {
        let info = redis::Client::open(config.redis.as_str())?
            .get_connection_info()
            .clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let mut id = [0u8; 8];
        // Without OS randomness no token can be safe either; the server cannot run.
        getrandom::fill(&mut id).expect("the OS random generator is available");
        let mut node = [0u8; NODE_ID_LEN];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in id.iter().enumerate() {
            node[2 * i] = HEX[usize::from(b >> 4)];
            node[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        let (commands, queue) = async_channel::unbounded();
        // Bounded by `MAX_PUSHES`, checked before each send: the sender cannot wait.
        let (incoming, arrived) = async_channel::unbounded();
        let mut prefix = config.prefix.as_bytes().to_vec();
        prefix.push(b':');
        let mut markers = prefix.clone();
        markers.extend_from_slice(b"m:");
        markers.extend_from_slice(&node);
        Ok(Arc::new(Self {
            client,
            prefix,
            node,
            markers,
            commands,
            queue,
            hubs: OnceLock::new(),
            up: AtomicBool::new(false),
            started: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            current: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
            incoming,
            arrived,
            waiting_bytes: AtomicUsize::new(0),
            behind: AtomicU64::new(0),
            joins: Mutex::new(HashMap::new()),
            last_join: AtomicU64::new(0),
            last_epoch: AtomicU64::new(0),
            streams: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            resending: AtomicUsize::new(0),
            counters: ClusterCounters::default(),
        }))
    }

    /// Tells the backplane which hubs receive what other nodes publish (once, at startup).
    pub(crate) fn route_to<'a>(&self, hubs: impl IntoIterator<Item = &'a Arc<Hub>>) {
        let routes = hubs
            .into_iter()
            .map(|hub| (encode_hub(hub.path()), Arc::downgrade(hub)))
            .collect();
        let _ = self.hubs.set(routes);
    }

    /// Whether the connection to Redis is up.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.node).expect("hex is ASCII")
    }

    /// The backplane task on `runtime`, the first time it is asked for; it runs until
    /// [`stop`](Self::stop). The delivery task ([`deliver`](Self::deliver)) is spawned
    /// beside it.
    pub(crate) fn task(self: &Arc<Self>, runtime: Arc<dyn Runtime>) -> Option<Task> {
        if self.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let this = Arc::clone(self);
        runtime.spawn(Box::pin(Self::deliver(
            Arc::downgrade(self),
            self.arrived.clone(),
        )));
        Some(Box::pin(async move { this.run(&*runtime).await }))
    }

    /// Whether nothing the hubs asked for waits to be sent to Redis: every queued command
    /// was carried out, and no accepted publication waits to be sent again.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.resending.load(Ordering::Acquire) == 0
    }

    /// Ends the tasks (at shutdown); the delivery task first hands over what arrived.
    pub(crate) fn stop(&self) {
        self.commands.close();
        self.incoming.close();
    }

    /// Hub `hub` now holds `topic`.
    pub(crate) fn watch(&self, hub: &str, topic: &Topic) {
        self.send(Command::Watch(self.key(hub, topic)));
    }

    /// Hub `hub` no longer holds `topic`.
    pub(crate) fn unwatch(&self, hub: &str, topic: &Topic) {
        self.send(Command::Unwatch(self.key(hub, topic)));
    }

    /// Sends `publication` of hub `hub` to the other nodes, after everything asked before.
    /// Dropped, and counted, when Redis has fallen [`MAX_QUEUED`] commands behind.
    pub(crate) fn publish(&self, hub: &str, publication: &Publication) {
        if self.overloaded() {
            return;
        }
        let job = Job {
            cmd: self.publication(hub, publication),
            then: Then::Nothing,
            publication: true,
        };
        self.send(Command::Run(job));
    }

    /// Queues `command` for the task; counted until the task has carried it out.
    fn send(&self, command: Command) -> bool {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = self.commands.try_send(command).is_ok();
        if !sent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Whether the queue (with the publications waiting to be sent again) is full: counts
    /// the publication the caller drops.
    fn overloaded(&self) -> bool {
        if self.commands.len() + self.resending.load(Ordering::Relaxed) < MAX_QUEUED {
            return false;
        }
        if self
            .counters
            .dropped
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(10_000)
        {
            tracing::warn!(
                "cluster: Redis is {MAX_QUEUED} commands behind; publications to other nodes are dropped"
            );
        }
        true
    }

    /// As [`publish`](Self::publish), and resolves to whether another node held the
    /// topic (`false` while Redis is unreachable). A History hub's broadcast resolves to
    /// whether any node (this one included) held the channel, and to `None` when Redis could
    /// not be reached: it was not delivered anywhere.
    ///
    /// A History broadcast to a channel this node holds is answered at once (`true`: Redis
    /// will keep it, since this node receives it) while Redis keeps up (fewer than
    /// [`EARLY_QUEUED`] commands wait); it is then never lost: if the link breaks before
    /// Redis answered, it is sent again after the reconnection, before anything newer, with
    /// a key that keeps Redis from carrying it out twice. When Redis falls behind, the
    /// publisher waits for its broadcast's answer: that paces it.
    pub(crate) fn publish_and_ask(
        &self,
        hub: &str,
        publication: &Publication,
    ) -> impl Future<Output = Option<bool>> + Send + 'static {
        let history = publication.history.is_some();
        let cmd = self.publication(hub, publication);
        let topic = self.key(hub, &publication.topic);
        if history
            && self.commands.len() + self.resending.load(Ordering::Relaxed) < EARLY_QUEUED
            && lock(&self.streams).contains_key(&topic)
        {
            let job = Job {
                cmd,
                // Numbered when first sent (see `Link::run`).
                then: Then::Keep { numbered: false },
                publication: true,
            };
            let sent = self.send(Command::Run(job));
            return futures_util::future::Either::Left(std::future::ready(sent.then_some(true)));
        }
        let (reach, reached) = async_channel::bounded(1);
        let (reply, replied) = async_channel::bounded(1);
        let then = if history {
            Then::Reply(reply)
        } else {
            Then::Reach {
                topic: self.key(hub, &publication.topic),
                answer: reach,
            }
        };
        let job = Job {
            cmd,
            then,
            publication: true,
        };
        let sent = !self.overloaded() && self.send(Command::Run(job));
        futures_util::future::Either::Right(async move {
            if history {
                let reply = if sent {
                    replied.recv().await.ok().flatten()
                } else {
                    None
                };
                match reply? {
                    Value::Int(receivers) => Some(receivers > 0),
                    _ => None,
                }
            } else {
                Some(sent && reached.recv().await.unwrap_or(false))
            }
        })
    }

    /// The command that sends `publication` of hub `hub`: a PUBLISH of the node id and the
    /// event, or on a History hub the [`store::APPEND`] script.
    fn publication(&self, hub: &str, publication: &Publication) -> redis::Cmd {
        let topic = self.key(hub, &publication.topic);
        let payload = publication.payload.as_bytes();
        match (&publication.history, &publication.topic) {
            (Some(history), Topic::Channel(channel)) => {
                let mut cmd = self.stream_script(store::APPEND, 3, hub, channel);
                cmd.arg(topic)
                    .arg(payload)
                    .arg(history.size)
                    .arg(history.ttl_ms)
                    .arg(self.epoch_candidate());
                // An accepted one gets its number last, when first sent (see `Link::run`).
                cmd
            }
            _ => {
                let mut message = Vec::with_capacity(NODE_ID_LEN + payload.len());
                message.extend_from_slice(&self.node);
                message.extend_from_slice(payload);
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(topic).arg(message);
                cmd
            }
        }
    }

    /// A new epoch, should the channel need one: this node's id and a number it never
    /// gave before, so no two epochs of a channel are the same.
    fn epoch_candidate(&self) -> String {
        let n = self.last_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}{n:x}", self.node())
    }

    /// Runs `cmd` in order after everything asked before; resolves to its reply, `None` when
    /// Redis could not be reached or the command failed.
    fn ask(&self, cmd: redis::Cmd) -> impl Future<Output = Option<Value>> + Send + 'static {
        let (reply, replied) = async_channel::bounded(1);
        let sent = self.send(Command::Run(Job::new(cmd, Then::Reply(reply))));
        async move {
            if !sent {
                return None;
            }
            replied.recv().await.ok().flatten()
        }
    }

    /// Client `join.token` of `hub` enters `join.channel` (operation `op`, see
    /// [`store::JOIN`]). The hub is given [`Completion::Joined`] when the marker arrives;
    /// resolves then to `None`, or to [`Completion::Unavailable`] when Redis could not be
    /// reached (nothing was completed).
    pub(crate) fn join(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        op: OpId,
        join: &Join,
    ) -> impl Future<Output = Option<Completion>> + Send + 'static {
        let path = hub.path();
        let id = self.last_join.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, marked) = async_channel::bounded(1);
        let channel = &join.channel;
        let topic = self.key(path, &Topic::Channel(Arc::clone(channel)));
        let waiting = Joining {
            hub: Arc::downgrade(hub),
            op,
            topic: topic.clone(),
            done,
            replied: false,
        };
        lock(&self.joins).insert(id, waiting);
        let presence_key = self.channel_key(path, b'p', channel);
        let mut head = Vec::with_capacity(1 + JOIN_ID_LEN);
        head.push(b'!');
        head.extend_from_slice(format!("{id:016x}").as_bytes());
        let token = join.token.to_hex();
        let presence = if join.presence {
            let mut value = self.node.to_vec();
            value.extend_from_slice(join.user.as_bytes());
            value
        } else {
            Vec::new()
        };
        let (since_offset, since_epoch) = match &join.since {
            Some((offset, epoch)) => (offset.to_string(), epoch.as_str()),
            None => (String::new(), ""),
        };
        let mut cmd = self.stream_script(store::JOIN, 5, path, channel);
        cmd.arg(&presence_key)
            .arg(self.index_key())
            .arg(&topic)
            .arg(&self.markers)
            .arg(head)
            .arg(if join.history.is_some() { "1" } else { "0" })
            .arg(join.history.map_or(1, |h| h.ttl_ms))
            .arg(self.epoch_candidate())
            .arg(since_offset)
            .arg(since_epoch)
            .arg(&token[..])
            .arg(presence)
            .arg(join.join.as_ref().map_or(&b""[..], Payload::as_bytes))
            .arg(index_field(&presence_key, &token))
            .arg(index_value(&topic, join.leave.as_ref()));
        let (answer, replied) = async_channel::bounded(1);
        let sent = self.send(Command::Run(Job::new(cmd, Then::JoinReply { id, answer })));
        let joins = Arc::clone(self);
        async move {
            let _forget = Forget {
                joins: &joins.joins,
                id,
            };
            let failed = !sent || replied.recv().await.ok().flatten().is_none();
            // The marker, if it came, was handled as it arrived (before the reply, or
            // after it on a server that defers pushes to the caller until its reply; the
            // task marked the join answered, so a connection lost now fails it).
            if failed && lock(&joins.joins).remove(&id).is_some() {
                return Some(Completion::Unavailable);
            }
            match marked.recv().await {
                Ok(()) => None,
                // Given up with the connection that should have carried the marker.
                Err(_) => Some(Completion::Unavailable),
            }
        }
    }

    /// Channel `channel`'s last `limit` kept events on History hub `hub` (0: all).
    pub(crate) fn read_history(
        &self,
        hub: &str,
        channel: &str,
        limit: u64,
    ) -> impl Future<Output = Completion> + Send + 'static {
        let mut cmd = self.stream_script(store::HISTORY, 3, hub, channel);
        cmd.arg(if limit == 0 {
            "0".to_owned()
        } else {
            format!("-{limit}")
        });
        let reply = self.ask(cmd);
        async move {
            let parsed = reply.await.and_then(|value| {
                let mut parts = redis::from_redis_value::<Vec<Vec<u8>>>(value)
                    .ok()?
                    .into_iter();
                let offset = std::str::from_utf8(&parts.next()?).ok()?.parse().ok()?;
                let epoch = String::from_utf8(parts.next()?).ok()?;
                let events = parts
                    .map(|e| String::from_utf8(e).ok().map(Payload::text))
                    .collect::<Option<Vec<_>>>()?;
                Some(HistoryRead::new(offset, epoch, events))
            });
            parsed.map_or(Completion::Unavailable, Completion::History)
        }
    }

    /// Who is subscribed to `channel` of hub `hub`, on every node.
    pub(crate) fn read_presence(
        &self,
        hub: &str,
        channel: &str,
    ) -> impl Future<Output = Completion> + Send + 'static {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.channel_key(hub, b'p', channel));
        let reply = self.ask(cmd);
        async move {
            reply
                .await
                .and_then(|value| redis::from_redis_value::<Vec<(Vec<u8>, Vec<u8>)>>(value).ok())
                .map_or(Completion::Unavailable, |entries| {
                    Completion::Presence(store::parse_presence(entries))
                })
        }
    }

    /// A client of hub `hub` left a channel ([`store::LEAVE`]), in order after what was
    /// asked before.
    pub(crate) fn leave(&self, hub: &str, departure: &Departure) {
        let channel = &departure.channel;
        let presence_key = self.channel_key(hub, b'p', channel);
        let token = departure.token.to_hex();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(store::LEAVE)
            .arg(2)
            .arg(&presence_key)
            .arg(self.index_key())
            .arg(&token[..])
            .arg(index_field(&presence_key, &token))
            .arg(self.key(hub, &Topic::Channel(Arc::clone(channel))))
            .arg(departure.leave.as_ref().map_or(&b""[..], Payload::as_bytes));
        self.send(Command::Run(Job::new(cmd, Then::Nothing)));
    }

    /// Puts this node's presence in the store right ([`store::SYNC`]): removes what no
    /// longer stands, with its leaves, and writes every local subscriber's entry again. As
    /// commands to pipeline.
    fn presence_sync(&self, announce: bool) -> Vec<redis::Cmd> {
        let mut sync = redis::cmd("EVAL");
        sync.arg(store::SYNC).arg(1).arg(self.index_key());
        let mut cmds = Vec::new();
        if let Some(hubs) = self.hubs.get() {
            for hub in hubs.values().filter_map(Weak::upgrade) {
                let path = hub.path();
                for entry in hub.presence_entries() {
                    let presence_key = self.channel_key(path, b'p', &entry.channel);
                    let topic = self.key(path, &Topic::Channel(Arc::clone(&entry.channel)));
                    let token = entry.token.to_hex();
                    let field = index_field(&presence_key, &token);
                    sync.arg(&field);
                    let mut value = self.node.to_vec();
                    value.extend_from_slice(entry.user.as_bytes());
                    let join = entry.join.as_ref().filter(|_| announce);
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(store::REJOIN)
                        .arg(2)
                        .arg(&presence_key)
                        .arg(self.index_key())
                        .arg(&token[..])
                        .arg(value)
                        .arg(field)
                        .arg(index_value(&topic, entry.leave.as_ref()))
                        .arg(&topic)
                        .arg(join.map_or(&b""[..], Payload::as_bytes));
                    cmds.push(cmd);
                }
            }
        }
        cmds.insert(0, sync);
        cmds
    }

    /// The heartbeat ([`store::BEAT`]).
    fn beat(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        let mut index_prefix = self.prefix.clone();
        index_prefix.extend_from_slice(b"node:");
        let mut tombstone_prefix = self.prefix.clone();
        tombstone_prefix.extend_from_slice(b"reaped:");
        let mut streaks = self.nodes_key();
        streaks.extend_from_slice(b":streak");
        cmd.arg(store::BEAT)
            .arg(2)
            .arg(self.nodes_key())
            .arg(streaks)
            .arg(&self.node[..])
            .arg(store::DEAD_AFTER.as_millis() as u64)
            .arg(index_prefix)
            .arg(tombstone_prefix)
            .arg(store::TOMBSTONE_MS)
            .arg(store::BEAT_EVERY.as_millis() as u64);
        cmd
    }

    /// `EVAL script` with `keys` keys, the first three being History channel `channel`'s
    /// offset, epoch and events on hub `hub` (the caller adds the rest).
    fn stream_script(&self, script: &str, keys: usize, hub: &str, channel: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(keys)
            .arg(self.channel_key(hub, b'o', channel))
            .arg(self.channel_key(hub, b'e', channel))
            .arg(self.channel_key(hub, b'h', channel));
        cmd
    }

    /// `{Prefix}:nodes`: every node's last heartbeat.
    fn nodes_key(&self) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(b"nodes");
        key
    }

    /// `{Prefix}:node:{id}`: this node's presence entries.
    fn index_key(&self) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(b"node:");
        key.extend_from_slice(&self.node);
        key
    }

    /// The key of `channel`'s state of kind `kind` on hub `hub` (`o` offset, `e` epoch,
    /// `h` events, `p` presence).
    fn channel_key(&self, hub: &str, kind: u8, channel: &str) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(&encode_hub(hub));
        key.extend_from_slice(&[b':', kind, b':']);
        key.extend_from_slice(channel.as_bytes());
        key
    }

    /// The Redis channel of `topic` on hub `hub`.
    fn key(&self, hub: &str, topic: &Topic) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(&encode_hub(hub));
        match topic {
            Topic::Channel(channel) => {
                key.extend_from_slice(b":c:");
                key.extend_from_slice(channel.as_bytes());
            }
            Topic::Client(token) => {
                key.extend_from_slice(b":t:");
                key.extend_from_slice(&token.to_hex());
            }
        }
        key
    }

    /// Parses a Redis channel this node subscribed to: its hub and topic.
    fn route(&self, key: &[u8]) -> Option<(Arc<Hub>, Topic)> {
        let rest = key.strip_prefix(self.prefix.as_slice())?;
        let colon = rest.iter().position(|&b| b == b':')?;
        let (hub, rest) = rest.split_at(colon);
        let hub = self.hubs.get()?.get(hub)?.upgrade()?;
        let topic = match rest {
            [b':', b'c', b':', channel @ ..] => {
                Topic::Channel(Arc::from(std::str::from_utf8(channel).ok()?))
            }
            [b':', b't', b':', token @ ..] => {
                Topic::Client(Token::parse(std::str::from_utf8(token).ok()?)?)
            }
            _ => return None,
        };
        Some((hub, topic))
    }

    /// A push from the connection of generation `generation`, as it arrives (on the Redis
    /// client's task): queued for the delivery task, in the order of arrival, unless that
    /// connection was given up. A node that falls [`MAX_PUSHES`] pushes or
    /// [`MAX_PUSH_BYTES`] behind gives the connection up.
    fn arrive(&self, generation: u64, push: PushInfo) {
        if generation != self.current.load(Ordering::Acquire)
            || generation == self.behind.load(Ordering::Acquire)
        {
            return; // from a connection already given up
        }
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let bytes = push_bytes(&push);
        let waiting = self.waiting_bytes.load(Ordering::Acquire);
        if self.incoming.len() >= MAX_PUSHES || (waiting > 0 && waiting + bytes > MAX_PUSH_BYTES) {
            if self.behind.swap(generation, Ordering::AcqRel) != generation {
                tracing::warn!(
                    waiting = self.incoming.len(),
                    waiting_bytes = waiting,
                    "cluster: this node fell behind the other nodes' messages; \
                     giving its Redis connection up"
                );
                self.send(Command::Lost(generation));
            }
            return;
        }
        self.waiting_bytes.fetch_add(bytes, Ordering::AcqRel);
        if self.incoming.try_send((generation, push)).is_err() {
            // Closed at shutdown: nothing more is delivered.
            self.waiting_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The delivery task: hands the pushes that arrived to the hubs, in order, until the
    /// backplane stops. The pushes waiting at once (up to [`PUSH_RUN`]) share one cork:
    /// their deliveries are written when the run is over, in one system call per
    /// connection, or by the connections' tasks when the run piles up several messages per
    /// connection (`hub.rs`, `Cork`). A quiet node's runs are one message long.
    ///
    /// A panic while handing a push over (a bug) is logged and the task goes on: ended, it
    /// would leave every later message from the other nodes undelivered on this node.
    async fn deliver(backplane: Weak<Self>, arrived: async_channel::Receiver<(u64, PushInfo)>) {
        while let Ok(first) = arrived.recv().await {
            let Some(b) = backplane.upgrade() else {
                return;
            };
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut cork = Cork::default();
                b.handle_push(first, &mut cork);
                for _ in 1..PUSH_RUN {
                    let Ok(next) = arrived.try_recv() else {
                        break;
                    };
                    b.handle_push(next, &mut cork);
                }
                // The cork is flushed as it drops, outside every lock.
            }));
            if run.is_err() {
                tracing::error!(
                    "the cluster's delivery task panicked handing over a message from another \
                     node; it goes on"
                );
            }
        }
    }

    /// A push that arrived from the connection of generation `generation`: a message of
    /// another node goes to its hub; a disconnection wakes the task, after everything the
    /// connection pushed before it (the markers of joins among them) was handled.
    fn handle_push(&self, (generation, push): (u64, PushInfo), cork: &mut Cork) {
        self.waiting_bytes
            .fetch_sub(push_bytes(&push), Ordering::AcqRel);
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let [Value::BulkString(key), Value::BulkString(message)] = &push.data[..] else {
                    return;
                };
                self.handle_message(key, message, cork);
            }
            PushKind::Disconnection => {
                self.send(Command::Lost(generation));
            }
            _ => {}
        }
    }

    fn handle_message(&self, key: &[u8], message: &[u8], cork: &mut Cork) {
        if key == self.markers {
            return match message.split_first() {
                Some((b'!', marker)) => self.handle_marker(marker),
                Some((b'%', marker)) => self.handle_resynced(marker, cork),
                _ => tracing::warn!("cluster: a malformed marker ignored"),
            };
        }
        match message.first() {
            Some(b'*') => return self.deliver_event(key, &message[1..], cork),
            Some(b'#') => return self.handle_event(key, &message[1..], cork),
            Some(b'+') => return self.handle_about(key, &message[1..], cork),
            _ => {}
        }
        let Some((node, event)) = message.split_at_checked(NODE_ID_LEN) else {
            tracing::warn!("cluster: a message without a node id ignored");
            return;
        };
        if node == self.node {
            return; // our own: delivered locally already
        }
        self.deliver_event(key, event, cork);
    }

    /// An event for this node's holders of `key`'s topic.
    fn deliver_event(&self, key: &[u8], event: &[u8], cork: &mut Cork) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let Some((hub, topic)) = self.route(key) else {
            tracing::debug!(key = %String::from_utf8_lossy(key), "cluster: message for no hub");
            return;
        };
        // Events are JSON text; anything else did not come from a Rocket node.
        let Ok(text) = std::str::from_utf8(event) else {
            tracing::warn!(
                hub = hub.path(),
                "cluster: a message that is not UTF-8 ignored"
            );
            return;
        };
        hub.handle_remote_into(&topic, Payload::text(text), cork);
    }

    /// A join or leave (after its `+`): the client's token, then the event.
    fn handle_about(&self, key: &[u8], message: &[u8], cork: &mut Cork) {
        let about = message.split_at_checked(2 * 16).and_then(|(token, event)| {
            let token = Token::parse(std::str::from_utf8(token).ok()?)?;
            Some((token, std::str::from_utf8(event).ok()?))
        });
        let Some((token, event)) = about else {
            tracing::warn!("cluster: a malformed join or leave ignored");
            return;
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if let Some((hub, Topic::Channel(channel))) = self.route(key) {
            hub.handle_remote_about(&channel, token, Payload::text(event), cork);
        }
    }

    /// A History channel's event (after its `#`): delivered unless the node delivered it
    /// already, or held back while the channel resyncs.
    fn handle_event(&self, key: &[u8], message: &[u8], cork: &mut Cork) {
        let Some((offset, epoch, event)) = store::parse_event(message) else {
            tracing::warn!("cluster: a malformed history event ignored");
            return;
        };
        // Delivered under the lock: a resync's release cannot interleave with it.
        let mut streams = lock(&self.streams);
        // A channel the node no longer holds (an event still on its way) is not tracked.
        if let Some(position) = streams.get_mut(key) {
            if let Some(held) = &mut position.held {
                held.push((offset, epoch.to_vec(), event.to_vec()));
                return;
            }
            if !position.advance(offset, epoch) {
                return;
            }
        }
        self.deliver_event(key, event, cork);
        drop(streams);
    }

    /// A resync's marker (after its `%`: the topic's length, `:`, the topic, then the data):
    /// the events the node missed go out, then those held back, in offset order and none
    /// twice.
    fn handle_resynced(&self, marker: &[u8], cork: &mut Cork) {
        let Some((key, data)) = split_topic(marker) else {
            tracing::warn!("cluster: a malformed resync marker");
            return;
        };
        let Some(joined) = store::parse_marker(data) else {
            tracing::warn!("cluster: a malformed resync marker");
            return self.release(key, cork);
        };
        let mut out = Vec::new();
        {
            let mut streams = lock(&self.streams);
            let Some(position) = streams.get_mut(key) else {
                return;
            };
            let held = position.held.take().unwrap_or_default();
            match joined.recovery {
                Some(Some(missed)) => {
                    let first = joined.offset + 1 - missed.len() as u64;
                    for (offset, event) in (first..).zip(missed) {
                        if position.advance(offset, joined.epoch.as_bytes()) {
                            out.push(event.as_bytes().to_vec());
                        }
                    }
                }
                _ => tracing::warn!(
                    key = %String::from_utf8_lossy(key),
                    "cluster: events missed while Redis was away are no longer kept (or its history was lost)"
                ),
            }
            for (offset, epoch, event) in held {
                if position.advance(offset, &epoch) {
                    out.push(event);
                }
            }
            // Under the lock, so that live events wait behind these.
            for event in out {
                self.deliver_event(key, &event, cork);
            }
        }
    }

    /// Ends a resync that cannot complete: the events held back go out.
    fn release(&self, key: &[u8], cork: &mut Cork) {
        let mut streams = lock(&self.streams);
        if let Some(position) = streams.get_mut(key) {
            for (offset, epoch, event) in position.held.take().unwrap_or_default() {
                // Under the lock, so that live events wait behind these.
                if position.advance(offset, &epoch) {
                    self.deliver_event(key, &event, cork);
                }
            }
        }
    }

    /// The resync of every History channel this node holds, after a reconnection: a
    /// [`store::JOIN`] without a client, from the node's place in the channel.
    fn resyncs(&self) -> Vec<Job> {
        let streams = lock(&self.streams);
        let mut jobs = Vec::with_capacity(streams.len());
        for (topic, position) in streams.iter() {
            let Some((hub, Topic::Channel(channel))) = self.route(topic) else {
                continue;
            };
            let path = hub.path();
            let mut head = format!("%{}:", topic.len()).into_bytes();
            head.extend_from_slice(topic);
            let mut cmd = self.stream_script(store::JOIN, 5, path, &channel);
            cmd.arg(self.channel_key(path, b'p', &channel))
                .arg(self.index_key())
                .arg(topic)
                .arg(&self.markers)
                .arg(head)
                .arg("1")
                .arg(1)
                .arg("") // no new epoch: a channel whose history is gone has none
                .arg(position.offset.to_string())
                .arg(&position.epoch)
                .arg("")
                .arg("")
                .arg("")
                .arg("")
                .arg("");
            jobs.push(Job::new(cmd, Then::Resync(topic.clone())));
        }
        jobs
    }

    /// A join's marker (after its `!`): its client becomes a subscriber here, between the
    /// channel's messages before and after it; and the node is at least at the channel's
    /// position in the stream.
    fn handle_marker(&self, marker: &[u8]) {
        let Some((id, data)) = marker.split_at_checked(JOIN_ID_LEN) else {
            return;
        };
        let Some(id) = std::str::from_utf8(id)
            .ok()
            .and_then(|id| u64::from_str_radix(id, 16).ok())
        else {
            return;
        };
        // Taken first: a join given up meanwhile stays given up.
        let Some(joining) = lock(&self.joins).remove(&id) else {
            return;
        };
        let completion = match store::parse_marker(data) {
            Some(joined) => {
                if !joined.epoch.is_empty() {
                    let mut streams = lock(&self.streams);
                    let position = streams.entry(joining.topic.clone()).or_default();
                    if position.epoch != joined.epoch.as_bytes() || position.offset < joined.offset
                    {
                        position.offset = joined.offset;
                        position.epoch = joined.epoch.as_bytes().to_vec();
                    }
                }
                Completion::Joined(joined)
            }
            None => {
                tracing::warn!("cluster: a malformed join marker");
                Completion::Unavailable
            }
        };
        if let Some(hub) = joining.hub.upgrade() {
            hub.handle_joined(joining.op, completion);
        }
        let _ = joining.done.try_send(());
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(node = self.node(), "cluster: connected to Redis");
            } else {
                tracing::warn!(
                    node = self.node(),
                    "cluster: lost Redis; local delivery goes on, reconnecting"
                );
            }
        }
    }

    /// The backplane task: keeps the connection, carries out the hubs' commands in order.
    async fn run(self: Arc<Self>, runtime: &dyn Runtime) {
        let mut link = Link {
            backplane: &self,
            runtime,
            wanted: HashSet::new(),
            conn: None,
            was_lost: false,
            backoff: MIN_BACKOFF,
            retry_at: runtime.now(),
            last_io: runtime.now(),
            next_beat: runtime.now(),
            resend: Vec::new(),
            last_sent: 0,
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            if link.conn.is_none() && runtime.now() >= link.retry_at {
                link.connect().await;
            }
            let now = runtime.now();
            let until = match link.conn {
                Some(_) => (link.last_io + HEARTBEAT).min(link.next_beat),
                None => link.retry_at,
            };
            let news = self.queue.recv();
            let sleep = runtime.sleep(until.saturating_duration_since(now));
            match select(std::pin::pin!(news), sleep).await {
                Either::Left((Ok(command), _)) => batch.push(command),
                Either::Left((Err(_), _)) => return, // stopped
                Either::Right(_) => {}
            }
            while batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                link.heartbeat().await;
            } else {
                let carried = batch.len();
                link.carry_out(&mut batch).await;
                self.in_flight.fetch_sub(carried, Ordering::AcqRel);
            }
            if link.conn.is_some() && runtime.now() >= link.next_beat {
                link.beat(false).await;
            }
        }
    }
}

/// The backplane task's state: the connection and the topics the hubs hold.
struct Link<'a> {
    backplane: &'a Arc<Backplane>,
    runtime: &'a dyn Runtime,
    /// Every topic some hub holds: subscribed on the connection while it is up.
    wanted: HashSet<Vec<u8>>,
    conn: Option<MultiplexedConnection>,
    /// The connection was lost: the next connection counts as a reconnection.
    was_lost: bool,
    backoff: Duration,
    retry_at: Instant,
    last_io: Instant,
    /// When this node next records its heartbeat in the store ([`store::BEAT`]).
    next_beat: Instant,
    /// Accepted History publications to send again, in order, once connected.
    resend: Vec<Job>,
    /// The last number given to an accepted History publication.
    last_sent: u64,
}

impl Link<'_> {
    /// `future`, unless the connection goes silent: nothing at all (neither this answer
    /// nor a pushed message) arrives for [`RESPONSE_TIMEOUT`]. On a busy node an answer
    /// waits behind the messages the node is still handling, which prove the link alive.
    async fn timed<T>(
        &self,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let mut future = std::pin::pin!(future);
        loop {
            let seen = self.backplane.pushes.load(Ordering::Relaxed);
            let sleep = self.runtime.sleep(RESPONSE_TIMEOUT);
            match select(future.as_mut(), sleep).await {
                Either::Left((Ok(value), _)) => return Ok(value),
                Either::Left((Err(e), _)) => return Err(e.to_string()),
                Either::Right(_) if self.backplane.pushes.load(Ordering::Relaxed) != seen => {}
                Either::Right(_) => {
                    return Err(format!("Redis silent for {RESPONSE_TIMEOUT:?}"));
                }
            }
        }
    }

    async fn connect(&mut self) {
        let b = self.backplane;
        let generation = b.generation.fetch_add(1, Ordering::Relaxed) + 1;
        b.current.store(generation, Ordering::Release);
        let pushes = Arc::downgrade(b);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(None)
            .set_push_sender(move |push: PushInfo| {
                match pushes.upgrade() {
                    Some(b) => b.arrive(generation, push),
                    None => return Err(()),
                }
                Ok(())
            });
        let connected = self
            .timed(
                b.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await;
        let result = match connected {
            Ok(conn) => {
                self.conn = Some(conn);
                self.resubscribe().await
            }
            Err(e) => Err(e),
        };
        if result.is_ok() {
            // First the heartbeat, so that no other node takes this one for dead meanwhile,
            // and presence put right: leaves asked for while Redis was away were lost.
            self.beat(true).await;
            // Before any other command: each resync marker comes before the channel's
            // next joins.
            let resyncs = b.resyncs();
            if !resyncs.is_empty() {
                self.run(resyncs).await;
            }
            // Then what was accepted and not yet carried out, before anything newer.
            let resend = std::mem::take(&mut self.resend);
            self.backplane.resending.store(0, Ordering::Release);
            if !resend.is_empty() {
                tracing::info!(
                    publications = resend.len(),
                    "cluster: sending again what the lost connection left unanswered"
                );
                self.run(resend).await;
            }
        }
        let result = if result.is_ok() && self.conn.is_none() {
            Err("lost while resyncing".to_owned())
        } else {
            result
        };
        match result {
            Ok(()) => {
                self.backoff = MIN_BACKOFF;
                self.last_io = self.runtime.now();
                if std::mem::replace(&mut self.was_lost, false) {
                    b.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                b.set_up(true);
            }
            Err(e) => {
                self.conn = None;
                b.current.store(0, Ordering::Release);
                self.retry_at = self.runtime.now() + self.backoff;
                if self.backoff == MIN_BACKOFF {
                    tracing::warn!(
                        "cluster: cannot reach Redis ({e}); retrying every {MAX_BACKOFF:?} at most"
                    );
                } else {
                    tracing::debug!("cluster: connecting to Redis failed ({e})");
                }
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Names a new connection after the node (`rocket-{id}` in `CLIENT LIST`) and subscribes
    /// it to every topic the hubs hold.
    async fn resubscribe(&mut self) -> Result<(), String> {
        let topics: Vec<&Vec<u8>> = self.wanted.iter().collect();
        let Some(mut conn) = self.conn.clone() else {
            return Err("not connected".into());
        };
        let name = format!("rocket-{}", self.backplane.node());
        let mut setname = redis::cmd("CLIENT");
        setname.arg("SETNAME").arg(name);
        self.timed(setname.query_async::<()>(&mut conn)).await?;
        self.timed(conn.subscribe(&self.backplane.markers)).await?;
        for chunk in topics.chunks(SUBSCRIBE_CHUNK) {
            self.timed(conn.subscribe(chunk)).await?;
        }
        Ok(())
    }

    /// The connection failed: down until the next connection.
    fn lose(&mut self, why: &str) {
        // From now on nothing the old connection still holds is delivered.
        self.backplane.current.store(0, Ordering::Release);
        // Markers that connection still owed will not come: those joins fail. (Joins not
        // answered yet learn it from their reply; those not sent yet run on the next one.)
        lock(&self.backplane.joins).retain(|_, waiting| !waiting.replied);
        // History channels hold their events back until they resync on the next one.
        for position in lock(&self.backplane.streams).values_mut() {
            position.held = Some(Vec::new());
        }
        if self.conn.take().is_some() {
            tracing::debug!("cluster: Redis connection lost: {why}");
            self.was_lost = true;
            self.retry_at = self.runtime.now();
            self.backplane.set_up(false);
        }
    }

    /// Records this node's heartbeat and reaps dead nodes; writes this node's presence
    /// entries again when the store had lost this node.
    /// Puts presence right too when this node was missing from the store, or when `sync`
    /// (after a reconnection).
    async fn beat(&mut self, sync: bool) {
        self.next_beat = self.runtime.now() + store::BEAT_EVERY;
        let b = self.backplane;
        let (reply, replied) = async_channel::bounded(1);
        self.run(vec![Job::new(b.beat(), Then::Reply(reply))]).await;
        let Ok(Some(value)) = replied.try_recv() else {
            return;
        };
        let Ok((missing, reaped, was_reaped)) = redis::from_redis_value::<(u64, u64, u64)>(value)
        else {
            tracing::warn!("cluster: unexpected heartbeat reply");
            return;
        };
        if reaped > 0 {
            tracing::info!(reaped, "cluster: removed the presence of nodes gone silent");
        }
        if was_reaped == 1 {
            tracing::warn!(
                "cluster: the other nodes took this node for dead; its subscribers join again"
            );
        }
        if missing == 1 || sync {
            self.sync_presence(was_reaped == 1).await;
        }
    }

    /// Puts this node's presence in the store right ([`Backplane::presence_sync`]),
    /// announcing its subscribers with joins if `announce`.
    async fn sync_presence(&mut self, announce: bool) {
        let jobs: Vec<_> = self
            .backplane
            .presence_sync(announce)
            .into_iter()
            .map(|cmd| Job::new(cmd, Then::Nothing))
            .collect();
        self.run(jobs).await;
    }

    async fn heartbeat(&mut self) {
        let Some(conn) = &self.conn else { return };
        if self.runtime.now() < self.last_io + HEARTBEAT {
            return;
        }
        let mut conn = conn.clone();
        match self
            .timed(redis::cmd("PING").query_async::<()>(&mut conn))
            .await
        {
            Ok(()) => self.last_io = self.runtime.now(),
            Err(e) => self.lose(&e),
        }
    }

    /// Carries out `batch` in order: runs of watches, unwatches and publications each go
    /// out as one command or pipeline, awaited before the next.
    async fn carry_out(&mut self, batch: &mut Vec<Command>) {
        let mut commands = batch.drain(..).peekable();
        while let Some(first) = commands.next() {
            match first {
                Command::Lost(generation) => {
                    if generation == self.backplane.current.load(Ordering::Acquire) {
                        self.lose("disconnected");
                    }
                }
                Command::Watch(first) => {
                    let mut topics = vec![first];
                    while let Some(Command::Watch(t)) =
                        commands.next_if(|c| matches!(c, Command::Watch(_)))
                    {
                        topics.push(t);
                    }
                    // Only what no hub held before needs a SUBSCRIBE.
                    topics.retain(|t| self.wanted.insert(t.clone()));
                    self.subscription(true, &topics).await;
                }
                Command::Unwatch(first) => {
                    let mut topics = vec![first];
                    while let Some(Command::Unwatch(t)) =
                        commands.next_if(|c| matches!(c, Command::Unwatch(_)))
                    {
                        topics.push(t);
                    }
                    topics.retain(|t| self.wanted.remove(t));
                    {
                        let mut streams = lock(&self.backplane.streams);
                        for topic in &topics {
                            streams.remove(topic);
                        }
                    }
                    self.subscription(false, &topics).await;
                }
                Command::Run(job) => {
                    let mut run = vec![job];
                    while let Some(Command::Run(job)) =
                        commands.next_if(|c| matches!(c, Command::Run(_)))
                    {
                        run.push(job);
                    }
                    self.run(run).await;
                }
            }
        }
    }

    /// SUBSCRIBE (`subscribe`) or UNSUBSCRIBE `topics` on the connection, if there is one.
    async fn subscription(&mut self, subscribe: bool, topics: &[Vec<u8>]) {
        let Some(conn) = &self.conn else { return };
        if topics.is_empty() {
            return;
        }
        let mut conn = conn.clone();
        let result = if subscribe {
            self.timed(conn.subscribe(topics)).await
        } else {
            self.timed(conn.unsubscribe(topics)).await
        };
        match result {
            Ok(()) => self.last_io = self.runtime.now(),
            Err(e) => self.lose(&e),
        }
    }

    /// Sends `run` as one pipeline and hands each reply to its [`Then`]. A command that
    /// fails alone (a script error) fails alone; when the pipeline cannot be sent or
    /// answered, the connection is lost and every command counts as failed.
    async fn run(&mut self, run: Vec<Job>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut thens = Vec::with_capacity(run.len());
        for Job {
            mut cmd,
            mut then,
            publication,
        } in run
        {
            if let Then::Keep { numbered } = &mut then
                && !*numbered
            {
                self.last_sent += 1;
                let mut key = self.backplane.prefix.clone();
                key.extend_from_slice(b"sent:");
                key.extend_from_slice(&self.backplane.node);
                cmd.arg(key).arg(self.last_sent);
                *numbered = true;
            }
            // Kept to be sent again, should the link break.
            let kept = matches!(then, Then::Keep { .. }).then(|| cmd.clone());
            pipe.add_command(cmd);
            thens.push((then, publication, kept));
        }
        let replies = match &self.conn {
            Some(conn) => {
                let mut conn = conn.clone();
                match self.timed(pipe.query_async::<Vec<Value>>(&mut conn)).await {
                    Ok(replies) => {
                        self.last_io = self.runtime.now();
                        // A Redis that is loading, busy, read-only (after a failover) or out
                        // of memory refuses everything for a while: as good as lost (what was
                        // accepted is sent again, resyncs start over, after a backoff).
                        let refusal = replies.iter().find_map(|reply| match reply {
                            Value::ServerError(e)
                                if matches!(
                                    e.code(),
                                    "LOADING" | "BUSY" | "READONLY" | "MASTERDOWN" | "OOM"
                                ) =>
                            {
                                Some(e.code().to_owned())
                            }
                            _ => None,
                        });
                        match refusal {
                            Some(code) => {
                                self.lose(&format!("Redis answered {code}"));
                                None
                            }
                            None => Some(replies),
                        }
                    }
                    Err(e) => {
                        self.lose(&e);
                        None
                    }
                }
            }
            None => None,
        };
        let mut replies = replies.map(Vec::into_iter);
        let mut published = 0;
        for (then, publication, kept) in thens {
            let reply = replies.as_mut().and_then(Iterator::next);
            if let Some(Value::ServerError(e)) = &reply {
                tracing::warn!("cluster: Redis refused a command: {e:?}");
            }
            let reply = reply.filter(|r| !matches!(r, Value::ServerError(_)));
            if publication && reply.is_some() {
                published += 1;
            }
            match then {
                Then::Nothing => {}
                Then::Reach { topic, answer } => {
                    // This node's connection counts among the receivers while subscribed.
                    let own = u64::from(self.wanted.contains(&topic));
                    let others = match reply {
                        Some(Value::Int(count)) => {
                            u64::try_from(count).unwrap_or(0).saturating_sub(own)
                        }
                        _ => 0,
                    };
                    let _ = answer.try_send(others > 0);
                }
                Then::Reply(answer) => {
                    let _ = answer.try_send(reply);
                }
                Then::JoinReply { id, answer } => {
                    if reply.is_some()
                        && let Some(waiting) = lock(&self.backplane.joins).get_mut(&id)
                    {
                        waiting.replied = true;
                    }
                    let _ = answer.try_send(reply);
                }
                // The connection is lost (and the resync starts over) or the script failed.
                Then::Resync(topic) if reply.is_none() && self.conn.is_some() => {
                    self.backplane.release(&topic, &mut Cork::default());
                }
                Then::Resync(_) => {}
                // Not answered: sent again after the reconnection (a refusal is not).
                Then::Keep { .. } if replies.is_none() => {
                    if let Some(cmd) = kept {
                        self.resend.push(Job {
                            cmd,
                            then: Then::Keep { numbered: true },
                            publication: true,
                        });
                        self.backplane.resending.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Then::Keep { .. } => {}
            }
        }
        self.backplane
            .counters
            .published
            .fetch_add(published, Ordering::Relaxed);
    }
}

/// The index field of a presence entry: the token (32 hex digits), then the presence
/// hash's key (which may hold any byte: it comes last).
fn index_field(presence_key: &[u8], token: &[u8]) -> Vec<u8> {
    let mut field = token.to_vec();
    field.extend_from_slice(presence_key);
    field
}

/// The index value of a presence entry: its leave (if any; JSON text holds no raw NUL),
/// NUL, then the channel's topic.
fn index_value(topic: &[u8], leave: Option<&Payload>) -> Vec<u8> {
    let mut value = leave.map_or(&b""[..], Payload::as_bytes).to_vec();
    value.push(0);
    value.extend_from_slice(topic);
    value
}

/// A resync marker's topic and data: `{length}:{topic}{data}`.
fn split_topic(marker: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = marker.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&marker[..colon]).ok()?.parse().ok()?;
    marker[colon + 1..].split_at_checked(len)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bytes a push holds: its key's and message's.
fn push_bytes(push: &PushInfo) -> usize {
    push.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}

/// A hub path as it appears in topic names: `%` and `:` percent-encoded.
fn encode_hub(path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path.as_bytes() {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b':' => out.extend_from_slice(b"%3A"),
            _ => out.push(b),
        }
    }
    out
}

/// The bytes of a message, for tests: node id, then the event.
#[cfg(test)]
fn envelope(node: &[u8], event: &str) -> Vec<u8> {
    let mut m = node.to_vec();
    m.extend_from_slice(event.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backplane(prefix: &str) -> Arc<Backplane> {
        let config = ClusterConfig {
            redis: "redis://127.0.0.1:1/0".into(),
            prefix: prefix.into(),
        };
        Backplane::new(&config).unwrap()
    }

    #[test]
    fn hub_paths_are_encoded_so_topics_cannot_collide() {
        let b = backplane("rocket");
        let a = b.key("/a:c:x", &Topic::Channel("y".into()));
        let c = b.key("/a", &Topic::Channel("x:c:y".into()));
        assert_ne!(a, c);
        assert_eq!(a, b"rocket:/a%3Ac%3Ax:c:y");
        assert_eq!(c, b"rocket:/a:c:x:c:y");
        assert_eq!(
            b.key("/50%", &Topic::Channel("z".into())),
            b"rocket:/50%25:c:z"
        );
        let token = Token::from_bytes([0xab; 16]);
        assert_eq!(
            b.key("/echo", &Topic::Client(token)),
            format!("rocket:/echo:t:{token}").as_bytes()
        );
    }

    #[test]
    fn topics_route_back_to_their_hub() {
        let b = backplane("p");
        let config = crate::Config::demo();
        let engine = || {
            rocket_proto::Engine::new(&config.engine_config(&config.hubs[0]), Default::default())
        };
        let hubs = [
            Arc::new(Hub::rocket("/a:b", engine())),
            Arc::new(Hub::rocket("/x", engine())),
        ];
        b.route_to(&hubs);
        let channel = Topic::Channel("room:1".into());
        let (hub, topic) = b.route(&b.key("/a:b", &channel)).unwrap();
        assert_eq!((hub.path(), topic), ("/a:b", channel));
        let client = Topic::Client(Token::from_bytes([1; 16]));
        let (hub, topic) = b.route(&b.key("/x", &client)).unwrap();
        assert_eq!((hub.path(), topic), ("/x", client));
        assert!(b.route(b"other:/x:c:room").is_none(), "another prefix");
        assert!(b.route(b"p:/nohub:c:room").is_none(), "no such hub");
        assert!(b.route(b"p:/x:t:not-a-token").is_none());
        assert!(b.route(b"p:/x:q:what").is_none());
        assert!(b.route(b"p:/x").is_none());
    }

    #[test]
    fn publications_are_dropped_and_counted_when_redis_falls_behind_but_watches_are_not() {
        let b = backplane("p");
        let publication = Publication {
            topic: Topic::Channel("c".into()),
            payload: Payload::text("{}"),
            history: None,
        };
        for _ in 0..MAX_QUEUED + 3 {
            b.publish("/h", &publication);
        }
        assert_eq!(b.queue.len(), MAX_QUEUED);
        assert_eq!(b.counters.dropped.load(Ordering::Relaxed), 3);
        let answer = b.publish_and_ask("/h", &publication);
        assert!(
            futures_util::FutureExt::now_or_never(answer).expect("answered at once") == Some(false),
            "an overloaded backplane reaches no node"
        );
        b.watch("/h", &Topic::Channel("d".into()));
        assert_eq!(b.queue.len(), MAX_QUEUED + 1, "a watch is never dropped");
    }

    /// Hands every push waiting to the hubs, in runs, as the delivery task does.
    fn handle_waiting(b: &Backplane) {
        while !b.arrived.is_empty() {
            let mut cork = Cork::default();
            for _ in 0..PUSH_RUN {
                let Ok(push) = b.arrived.try_recv() else {
                    break;
                };
                b.handle_push(push, &mut cork);
            }
        }
    }

    #[test]
    fn a_node_that_falls_behind_gives_the_connection_up() {
        let b = backplane("p");
        let other = envelope(b"0123456789abcdef", "{}");
        b.current.store(5, Ordering::Release);
        for _ in 0..MAX_PUSHES {
            b.arrive(5, message(b"p:/x:c:c", &other));
        }
        assert!(b.queue.is_empty(), "kept up so far");
        b.arrive(5, message(b"p:/x:c:c", &other));
        assert!(matches!(b.queue.try_recv(), Ok(Command::Lost(5))));
        b.arrive(5, message(b"p:/x:c:c", &other));
        assert!(b.queue.is_empty(), "given up once");
        assert_eq!(b.arrived.len(), MAX_PUSHES, "nothing more queued");
        assert_eq!(b.pushes.load(Ordering::Relaxed), MAX_PUSHES as u64 + 1);
        // What arrived before is still handed over, in order; the next connection's too.
        handle_waiting(&b);
        assert_eq!(
            b.counters.received.load(Ordering::Relaxed),
            MAX_PUSHES as u64
        );
        b.current.store(6, Ordering::Release);
        b.arrive(6, message(b"p:/x:c:c", &other));
        handle_waiting(&b);
        assert_eq!(
            b.counters.received.load(Ordering::Relaxed),
            MAX_PUSHES as u64 + 1
        );
    }

    #[test]
    fn a_node_that_falls_behind_in_bytes_gives_the_connection_up() {
        let b = backplane("p");
        let big = vec![b'x'; MAX_PUSH_BYTES / 4];
        b.current.store(5, Ordering::Release);
        for _ in 0..3 {
            b.arrive(5, message(b"p:/x:c:c", &big));
        }
        assert!(
            b.queue.is_empty(),
            "three quarters and a few bytes: kept up"
        );
        b.arrive(5, message(b"p:/x:c:c", &big));
        assert!(matches!(b.queue.try_recv(), Ok(Command::Lost(5))));
        assert_eq!(b.arrived.len(), 3);
        handle_waiting(&b);
        assert_eq!(b.waiting_bytes.load(Ordering::Relaxed), 0);
        // One push larger than the limit passes when nothing waits.
        b.current.store(6, Ordering::Release);
        b.arrive(6, message(b"p:/x:c:c", &vec![b'x'; MAX_PUSH_BYTES + 1]));
        assert!(b.queue.is_empty());
        assert_eq!(b.arrived.len(), 1);
    }

    /// The pushes waiting at once share a cork: a message alone is written through to an
    /// idle subscriber without waking its task; a run that piles messages up on it goes to
    /// its task, which writes them together.
    #[cfg(unix)]
    #[test]
    fn a_run_of_pushes_shares_one_cork() {
        use crate::hub::tests::{received, rocket_hub_at, subscribe};
        use crate::outbox::tests::{direct_with, read_all, read_eventually};
        use std::task::{Context, Wake, Waker};
        struct Count(AtomicU64);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let hub = Arc::new(rocket_hub_at("/x"));
        let b = backplane("p");
        b.route_to([&hub]);
        let (outbox, mut peer) = direct_with(16, 1 << 20);
        let outbox = Arc::new(outbox);
        subscribe(&hub, 1, "news", &outbox);
        read_eventually(&mut peer, 1, "the greeting and replies");
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(
            outbox
                .poll_next(&mut Context::from_waker(&waker))
                .is_pending(),
            "the task waits"
        );
        let event = r#"{"event":"e","channel":"news","data":1}"#;
        let other = envelope(b"0123456789abcdef", event);
        b.current.store(5, Ordering::Release);
        b.arrive(5, message(b"p:/x:c:news", &other));
        handle_waiting(&b);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "one message: not woken");
        let frame = read_eventually(&mut peer, 2 + event.len(), "one message");
        assert_eq!(&frame[2..], event.as_bytes(), "written through");
        for _ in 0..3 {
            b.arrive(5, message(b"p:/x:c:news", &other));
        }
        handle_waiting(&b);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a run: woken once");
        assert!(read_all(&mut peer).is_empty(), "a run: left to the task");
        assert_eq!(received(&outbox), [event; 3]);
    }

    fn message(key: &[u8], message: &[u8]) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(key.to_vec()),
                Value::BulkString(message.to_vec()),
            ],
        }
    }

    #[test]
    fn pushes_of_a_connection_given_up_are_ignored() {
        let b = backplane("p");
        let other = envelope(b"0123456789abcdef", "{}");
        b.current.store(5, Ordering::Release);
        b.arrive(4, message(b"p:/x:c:c", &other));
        assert_eq!(
            b.counters.received.load(Ordering::Relaxed),
            0,
            "an old one's"
        );
        assert_eq!(
            b.pushes.load(Ordering::Relaxed),
            0,
            "no proof of life either"
        );
        b.arrive(5, message(b"p:/x:c:c", &other));
        assert_eq!(
            b.counters.received.load(Ordering::Relaxed),
            0,
            "not handled yet"
        );
        handle_waiting(&b);
        assert_eq!(b.counters.received.load(Ordering::Relaxed), 1);
        assert_eq!(b.pushes.load(Ordering::Relaxed), 1);
        b.arrive(
            4,
            PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            },
        );
        handle_waiting(&b);
        assert!(b.queue.is_empty(), "an old connection's end is old news");
        b.arrive(
            5,
            PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            },
        );
        assert!(b.queue.is_empty(), "not handled yet");
        handle_waiting(&b);
        assert!(matches!(b.queue.try_recv(), Ok(Command::Lost(5))));
        b.current.store(0, Ordering::Release);
        b.arrive(5, message(b"p:/x:c:c", &other));
        handle_waiting(&b);
        assert_eq!(b.counters.received.load(Ordering::Relaxed), 1, "given up");
    }

    #[test]
    fn a_node_drops_its_own_messages_and_counts_the_others() {
        let b = backplane("p");
        let own = envelope(&b.node, "{}");
        b.handle_message(b"p:/x:c:c", &own, &mut Cork::default());
        assert_eq!(b.counters.received.load(Ordering::Relaxed), 0);
        let other = envelope(b"0123456789abcdef", "{}");
        b.handle_message(b"p:/x:c:c", &other, &mut Cork::default());
        assert_eq!(b.counters.received.load(Ordering::Relaxed), 1);
        b.handle_message(b"p:/x:c:c", b"short", &mut Cork::default());
        assert_eq!(b.counters.received.load(Ordering::Relaxed), 1);
        assert_eq!(b.node().len(), 16);
        assert!(b.node().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(b.node(), backplane("p").node(), "ids are random");
    }
}
