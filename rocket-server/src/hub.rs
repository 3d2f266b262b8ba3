//! A hub shared by many connection tasks: one [`Protocol`] value plus the outboxes of its
//! connections. The protocol is the Rocket [`Engine`], which the server addresses directly
//! (counts, broadcasts from other nodes), or a custom protocol behind the trait.
//!
//! Each event locks the protocol, feeds it, drains its outputs, then takes the dispatch
//! lock *before* releasing the protocol lock and hands the outputs to the outboxes. The
//! handoff keeps outputs in the order the protocol produced them (so every subscriber sees
//! a channel's broadcasts in acceptance order) while the next event can already run in the
//! protocol. Dispatch never waits on a client: a full outbox makes a slow consumer.
//!
//! The outputs pass through one buffer owned by the hub (behind the dispatch lock), not one
//! per connection: idle connections hold no output buffer.
//!
//! Time reaches the protocol through one timer task per hub ([`Hub::run_timer`]): it sleeps
//! until the protocol's [`poll_timeout`](Protocol::poll_timeout), then feeds
//! [`handle_timeout`](Protocol::handle_timeout) with the runtime's `now` and dispatches the
//! outputs like any other input's. An input that moves the timeout earlier wakes it.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rocket_proto::{
    ClientId, Completion, ConnectError, Engine, EngineConfig, EngineStats, Message, OpId,
    Operation, Output, Payload, Protocol, Publication, Reloaded, Token, Topic,
};

use crate::Runtime;
use crate::cluster::Backplane;
use crate::metrics::HubCounters;
use crate::outbox::{Outbox, Overflow, Pushed};
use crate::runtime::Task;
use crate::wire::Frame;
use crate::writers::{Batch, SHARE_MIN, Writers};

/// One hub: a request path served by one protocol instance.
pub struct Hub {
    path: String,
    state: Mutex<State>,
    /// Shared with the corks that left a run in it (see [`Run`]).
    peers: Arc<Mutex<Peers>>,
    next_id: AtomicU64,
    /// Wakes the timer task when the protocol's timeout moved earlier; closed at shutdown.
    wake: async_channel::Sender<()>,
    woken: async_channel::Receiver<()>,
    /// The timer task was handed out (there is one per hub).
    timer_started: AtomicBool,
    counters: HubCounters,
    /// The link to the other nodes, in a cluster.
    cluster: Option<Arc<Backplane>>,
}

/// The protocol a hub serves.
// One per hub: boxing the engine would only add an indirection to every input.
#[allow(clippy::large_enum_variant)]
enum HubProtocol {
    /// The Rocket protocol, which the server can address beyond the trait.
    Rocket(Engine),
    /// Any other protocol, served through the trait only.
    Custom(Box<dyn Protocol>),
}

impl HubProtocol {
    fn get(&mut self) -> &mut dyn Protocol {
        match self {
            HubProtocol::Rocket(engine) => engine,
            HubProtocol::Custom(protocol) => &mut **protocol,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            HubProtocol::Rocket(engine) => engine.poll_timeout(),
            HubProtocol::Custom(protocol) => protocol.poll_timeout(),
        }
    }
}

/// What the protocol lock guards.
struct State {
    protocol: HubProtocol,
    /// The instant the timer task sleeps until; `None` while it waits for news only.
    armed: Option<Instant>,
}

/// What the timer task does after a look at the protocol.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// The timeout was due and was handled: look again.
    Fired,
    /// Sleep until this instant (or, for `None`, until news).
    Sleep(Option<Instant>),
}

/// What the dispatch lock guards: the connections' outboxes and the output buffer.
/// The connections' outboxes by client.
type Outboxes = HashMap<ClientId, Arc<Outbox>, BuildHasherDefault<ahash::AHasher>>;

#[derive(Default)]
struct Peers {
    /// Looked up once per delivery: hashed with ahash's fixed keys (ids are the hub's own
    /// counter, so SipHash's defence against chosen keys buys nothing here; it cost ~2 %
    /// of a fan-out's server CPU).
    outboxes: Outboxes,
    outputs: Vec<Output>,
    /// Broadcasts dispatched and not yet queued.
    run: Run,
    /// The recipients of the broadcast being dispatched (kept for its allocation).
    recipients: Vec<ClientId>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("outboxes", &self.outboxes.len())
            .field("run", &self.run.frames.len())
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Queues the run to its recipients, if there is one (see [`Run`]).
    fn end_run(&mut self, cork: &mut Cork) {
        self.run.queue(&self.outboxes, cork);
    }
}

/// Broadcasts to the same recipients in a row, dispatched but not yet queued: one
/// channel's messages, read in a burst from its publishers (flat out, the hub reads up to
/// 32 in a row from one connection).
///
/// Queued one by one, each message of a burst to 1,000 subscribers cost 1,000 locks of
/// their outboxes and 1,000 increments of its bytes' shared count on one thread, 1,000
/// decrements on the threads that wrote them, and a copy into each recipient's write:
/// the hub's largest costs of its own. Their frames are the same bytes for every
/// recipient, so the run is joined once ([`Frame::join`]) and queued to each recipient as
/// one entry, when the run ends: when a message goes to other recipients, or to one of the
/// run's recipients alone, or a connection is closed, or the hub closes them all
/// ([`Hub::close_all`]); when the run is [`Run::MAX`] messages long; and at the latest
/// when a cork that added to it is flushed (the hub's locks are not held meanwhile). The
/// recipients come as one [`Output::Broadcast`] from the Rocket engine (which the hub asks
/// for), or as consecutive [`Output::Send`]s of one payload from a custom protocol. Every recipient gets the run's messages where they
/// would have been queued one by one: nothing queued to one of them by anyone passes the
/// run before it ends (a message to a single connection outside the run does, which no
/// recipient can tell), and the outbox takes a run that does not fit its bounds message
/// by message, as if queued one by one (`Outbox::push_by`).
#[derive(Debug, Default)]
struct Run {
    /// The recipients of each of its messages, in the order the protocol gave them.
    clients: Vec<ClientId>,
    frames: Vec<Frame>,
}

impl Run {
    /// Messages in a run at most; a longer one is queued and another begun.
    const MAX: usize = 64;
    /// A run's recipient list that kept more entries than this gives its memory back when
    /// the run is queued.
    const KEEP: usize = 16 * 1024;

    /// Queues the run's messages, joined, to each recipient still connected, into `cork`.
    fn queue(&mut self, outboxes: &Outboxes, cork: &mut Cork) {
        if self.frames.is_empty() {
            return;
        }
        let frame = Frame::join(&self.frames);
        self.frames.clear();
        for client in &self.clients {
            if let Some(outbox) = outboxes.get(client) {
                // On overflow the connection's driver closes it and logs why.
                let _ = cork.push(outbox, frame.clone());
            }
        }
        self.clients.clear();
        if self.clients.capacity() > Self::KEEP {
            self.clients = Vec::new();
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rocket = matches!(lock(&self.state).protocol, HubProtocol::Rocket(_));
        f.debug_struct("Hub")
            .field("path", &self.path)
            .field("protocol", &if rocket { "rocket" } else { "custom" })
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub on `path` serving the Rocket protocol with `engine`.
    pub fn rocket(path: impl Into<String>, engine: Engine) -> Self {
        Self::new(path.into(), HubProtocol::Rocket(engine))
    }

    /// A hub on `path` serving a protocol of its own. An [`Engine`] given here is served
    /// as a Rocket hub, as by [`Hub::rocket`].
    pub fn custom(path: impl Into<String>, protocol: impl Protocol) -> Self {
        // Downcasting through an `Option` moves the engine out without a second box.
        let mut slot = Some(protocol);
        let any: &mut dyn std::any::Any = &mut slot;
        let protocol = match any.downcast_mut::<Option<Engine>>() {
            Some(engine) => engine.take().map(HubProtocol::Rocket),
            None => slot.take().map(|p| HubProtocol::Custom(Box::new(p))),
        };
        // Exactly one branch took the value out of a `Some`.
        Self::new(path.into(), protocol.expect("the protocol was in the slot"))
    }

    fn new(path: String, mut protocol: HubProtocol) -> Self {
        if let HubProtocol::Rocket(engine) = &mut protocol {
            // The dispatch takes a broadcast whole (see `deliver`).
            engine.set_whole_broadcasts(true);
        }
        let (wake, woken) = async_channel::bounded(1);
        Self {
            path,
            state: Mutex::new(State {
                protocol,
                armed: None,
            }),
            peers: Arc::default(),
            next_id: AtomicU64::new(1),
            wake,
            woken,
            timer_started: AtomicBool::new(false),
            counters: HubCounters::default(),
            cluster: None,
        }
    }

    /// A Rocket hub on one node of a cluster: its engine's cluster outputs go to
    /// `backplane`.
    pub(crate) fn clustered(path: String, engine: Engine, backplane: Arc<Backplane>) -> Self {
        Self {
            cluster: Some(backplane),
            ..Self::new(path, HubProtocol::Rocket(engine))
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Registers a connection whose outbound messages go to `outbox`, and tells the
    /// protocol (which usually queues a greeting).
    pub(crate) fn connect(
        &self,
        token: Token,
        outbox: Arc<Outbox>,
    ) -> Result<ClientId, ConnectError> {
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.peers).outboxes.insert(id, outbox);
        let mut result = Ok(id);
        let started = self.run(None, |p| result = p.handle_connect(id, token).map(|()| id));
        debug_assert!(started.is_none(), "nothing to run before the first frame");
        if result.is_err() {
            lock(&self.peers).outboxes.remove(&id);
        } else {
            self.counters.opened.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// A message from `client`. Returns the operation the protocol started on `client`'s
    /// behalf, if any: the caller must run it and report its result with
    /// [`handle_completion`](Self::handle_completion) before feeding `client`'s next frame.
    /// What it queued for connections whose sockets the hub writes to is written when
    /// `cork` is flushed (or dropped).
    pub(crate) fn handle_message(
        &self,
        client: ClientId,
        frame: Message<'_>,
        cork: &mut Cork,
    ) -> Option<(OpId, Operation)> {
        self.run_with(
            Some(client),
            |p| p.get().handle_message(client, frame),
            cork,
        )
    }

    /// The result of operation `op`, which `client`'s driver ran. Returns the next
    /// operation started on `client`'s behalf, if any, as [`handle_message`](Self::handle_message).
    pub(crate) fn handle_completion(
        &self,
        client: ClientId,
        op: OpId,
        completion: Completion,
        cork: &mut Cork,
    ) -> Option<(OpId, Operation)> {
        self.run_with(
            Some(client),
            |p| p.get().handle_completion(op, completion),
            cork,
        )
    }

    /// `client`'s connection is gone.
    pub(crate) fn disconnect(&self, client: ClientId) {
        let _ = self.run(None, |p| p.handle_disconnect(client));
        lock(&self.peers).outboxes.remove(&client);
    }

    /// The hub's timer task on `runtime`, the first time it is asked for (a hub has one);
    /// `None` afterwards. It runs until [`stop_timer`](Self::stop_timer).
    pub(crate) fn timer_task(self: &Arc<Self>, runtime: Arc<dyn Runtime>) -> Option<Task> {
        if self.timer_started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let hub = Arc::clone(self);
        Some(Box::pin(async move { hub.run_timer(&*runtime).await }))
    }

    /// Ends the timer task (at shutdown).
    pub(crate) fn stop_timer(&self) {
        self.wake.close();
    }

    /// The timer task: sleeps until the protocol's next timeout, handles it at the
    /// runtime's `now`, and starts over; an input that moved the timeout earlier wakes it
    /// sooner. Returns once [`stop_timer`](Self::stop_timer) was called.
    pub(crate) async fn run_timer(&self, runtime: &dyn Runtime) {
        self.tell_time(runtime.now());
        while !self.woken.is_closed() {
            let now = runtime.now();
            let at = match self.tick(now) {
                Tick::Fired => {
                    // A protocol whose timeout stays due must not starve the executor.
                    crate::driver::yield_now().await;
                    continue;
                }
                Tick::Sleep(at) => at,
            };
            let news = pin!(self.woken.recv());
            let open = match at {
                None => news.await.is_ok(),
                Some(at) => {
                    let sleep = runtime.sleep(at.saturating_duration_since(now));
                    match futures_util::future::select(news, sleep).await {
                        futures_util::future::Either::Left((news, _)) => news.is_ok(),
                        futures_util::future::Either::Right(_) => true,
                    }
                }
            };
            if !open {
                return;
            }
        }
    }

    /// Gives the Rocket engine the time once, when the timer starts: a broadcast on a
    /// History hub is stamped relative to the last time the engine was given (see
    /// [`Engine::handle_timeout`]). Custom protocols hear of the time only when due.
    fn tell_time(&self, now: Instant) {
        let mut state = lock(&self.state);
        if let HubProtocol::Rocket(engine) = &mut state.protocol {
            engine.handle_timeout(now);
            let _ = self.dispatch(state, None, &mut Cork::default());
        }
    }

    /// One look at the protocol's timer at `now`: handles the timeout if it is due.
    fn tick(&self, now: Instant) -> Tick {
        let mut state = lock(&self.state);
        match state.protocol.poll_timeout() {
            Some(at) if at <= now => {
                state.protocol.get().handle_timeout(now);
                state.armed = None;
                let _ = self.dispatch(state, None, &mut Cork::default());
                Tick::Fired
            }
            next => {
                state.armed = next;
                Tick::Sleep(next)
            }
        }
    }

    /// Asks every connection to flush and close with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &'static str) {
        // Declared first, so flushed when it drops, after the lock below is released.
        let mut cork = Cork::default();
        let mut peers = lock(&self.peers);
        // What was accepted goes before the close.
        peers.end_run(&mut cork);
        for outbox in peers.outboxes.values() {
            outbox.close(code, reason);
        }
    }

    /// Live connections on this hub.
    pub fn connection_count(&self) -> usize {
        lock(&self.peers).outboxes.len()
    }

    /// Channels with at least one subscriber; `None` for a custom protocol.
    pub fn channel_count(&self) -> Option<usize> {
        match &lock(&self.state).protocol {
            HubProtocol::Rocket(engine) => Some(engine.channel_count()),
            HubProtocol::Custom(_) => None,
        }
    }

    /// Channels whose history is kept (see [`Engine::history_count`]); `None` for a
    /// custom protocol.
    pub fn history_count(&self) -> Option<usize> {
        match &lock(&self.state).protocol {
            HubProtocol::Rocket(engine) => Some(engine.history_count()),
            HubProtocol::Custom(_) => None,
        }
    }

    /// Subscribers of `channel` (0 when it does not exist); `None` for a custom protocol.
    pub fn subscriber_count(&self, channel: &str) -> Option<usize> {
        match &lock(&self.state).protocol {
            HubProtocol::Rocket(engine) => Some(engine.subscriber_count(channel)),
            HubProtocol::Custom(_) => None,
        }
    }

    /// Runs `f` on the Rocket engine and dispatches what it queued, as for any input,
    /// leaving what is to be written in `cork` (see [`Cork`]: the caller flushes it before
    /// it waits); `None`, doing nothing, on a custom protocol.
    pub(crate) fn with_engine<T>(
        &self,
        cork: &mut Cork,
        f: impl FnOnce(&mut Engine) -> T,
    ) -> Option<T> {
        let mut result = None;
        let started = self.run_with(
            None,
            |p| {
                if let HubProtocol::Rocket(engine) = p {
                    result = Some(f(engine));
                }
            },
            cork,
        );
        debug_assert!(started.is_none(), "a publish starts no client operation");
        result
    }

    /// The engine's totals and counts; `None` for a custom protocol.
    pub fn stats(&self) -> Option<EngineStats> {
        match &lock(&self.state).protocol {
            HubProtocol::Rocket(engine) => Some(engine.stats()),
            HubProtocol::Custom(_) => None,
        }
    }

    /// Counters the server keeps for this hub (connections opened, closes by reason).
    pub(crate) fn counters(&self) -> &HubCounters {
        &self.counters
    }

    /// A message that another node of a cluster published to `topic` (the complete event):
    /// delivered to this hub's subscribers of the channel or to the client with the token
    /// ([`Engine::handle_remote`]), dispatched like any input's outputs. Returns `false`,
    /// doing nothing, on a custom protocol.
    ///
    /// Its deliveries are handed to the recipients' tasks, which write whatever more
    /// arrived by the time they run: a message handed over alone gives no sign of where a
    /// burst ends. (A cluster node's own backplane corks each run of messages instead.)
    pub fn handle_remote(&self, topic: &Topic, payload: Payload) -> bool {
        self.handle_remote_into(topic, payload, &mut Cork::handing_over())
    }

    /// [`handle_remote`](Self::handle_remote), leaving what is to be written in `cork`.
    pub(crate) fn handle_remote_into(
        &self,
        topic: &Topic,
        payload: Payload,
        cork: &mut Cork,
    ) -> bool {
        let mut rocket = false;
        let started = self.run_with(
            None,
            |p| {
                if let HubProtocol::Rocket(engine) = p {
                    engine.handle_remote(topic, payload);
                    rocket = true;
                }
            },
            cork,
        );
        debug_assert!(started.is_none(), "a remote message starts no operation");
        rocket
    }

    /// A join or leave of client `about` in `channel` ([`Engine::handle_remote_about`]).
    pub(crate) fn handle_remote_about(
        &self,
        channel: &str,
        about: Token,
        payload: Payload,
        cork: &mut Cork,
    ) {
        let started = self.run_with(
            None,
            |p| {
                if let HubProtocol::Rocket(engine) = p {
                    engine.handle_remote_about(channel, about, payload);
                }
            },
            cork,
        );
        debug_assert!(started.is_none(), "a remote message starts no operation");
    }

    /// Sends `publication` to the other nodes of the cluster, after every publication the
    /// hub sent before, and resolves to whether another node held its topic (`false`
    /// without a cluster, or while Redis is unreachable). A History hub's broadcast
    /// resolves to whether any node held the channel, `None` when Redis was unreachable
    /// (see [`Backplane::publish_and_ask`]).
    pub(crate) fn publish_and_ask(
        &self,
        publication: &Publication,
    ) -> impl Future<Output = Option<bool>> + Send + 'static {
        let asked = self
            .cluster
            .as_ref()
            .map(|b| b.publish_and_ask(&self.path, publication));
        async move {
            match asked {
                Some(answer) => answer.await,
                None => Some(false),
            }
        }
    }

    /// Runs a cluster operation of this hub's engine on the backplane (a join, a history
    /// or presence read); resolves to its completion, or to `None` for a join, which the
    /// backplane completed through [`handle_joined`](Self::handle_joined) at its marker.
    pub(crate) fn run_shared(
        self: &Arc<Self>,
        op: OpId,
        operation: Operation,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Completion>> + Send + 'static>> {
        let Some(cluster) = self.cluster.clone() else {
            return Box::pin(std::future::ready(Some(Completion::Unavailable)));
        };
        match operation {
            Operation::Join(join) => Box::pin(cluster.join(self, op, &join)),
            Operation::History { channel, limit } => {
                let read = cluster.read_history(&self.path, &channel, limit);
                Box::pin(async move { Some(read.await) })
            }
            Operation::Presence(channel) => {
                let read = cluster.read_presence(&self.path, &channel);
                Box::pin(async move { Some(read.await) })
            }
            _ => Box::pin(std::future::ready(Some(Completion::Unavailable))),
        }
    }

    /// A join's marker arrived: the engine completes operation `op` now, in its place
    /// among the channel's messages.
    pub(crate) fn handle_joined(&self, op: OpId, completion: Completion) {
        let started = self.run(None, |p| p.handle_completion(op, completion));
        debug_assert!(started.is_none(), "a join's end starts no operation");
    }

    /// The engine's local subscriptions as the cluster's presence records them
    /// ([`Engine::presence_entries`]); empty on a custom protocol.
    pub(crate) fn presence_entries(&self) -> Vec<rocket_proto::PresenceEntry> {
        match &lock(&self.state).protocol {
            HubProtocol::Rocket(engine) => engine.presence_entries(),
            HubProtocol::Custom(_) => Vec::new(),
        }
    }

    /// Gives the Rocket engine a reloaded configuration ([`Engine::handle_reload`]) and
    /// returns what changed; `None`, doing nothing, on a custom protocol.
    pub fn reload(&self, config: &EngineConfig) -> Option<Reloaded> {
        let mut reloaded = None;
        let started = self.run_with(
            None,
            |p| {
                if let HubProtocol::Rocket(engine) = p {
                    reloaded = Some(engine.handle_reload(config));
                }
            },
            &mut Cork::default(),
        );
        debug_assert!(started.is_none(), "a reload starts no operation");
        reloaded
    }

    /// Feeds one input, then dispatches its outputs, and writes them through before
    /// returning. `caller` is the connection whose input it is: an operation started on
    /// its behalf is returned for it to run.
    fn run(
        &self,
        caller: Option<ClientId>,
        input: impl FnOnce(&mut dyn Protocol),
    ) -> Option<(OpId, Operation)> {
        // The cork is flushed when the statement ends, after the hub's locks are released.
        self.run_with(caller, |p| input(p.get()), &mut Cork::default())
    }

    /// [`run`](Self::run), with the protocol as the hub holds it; what is to be written
    /// through is left in `cork`.
    fn run_with(
        &self,
        caller: Option<ClientId>,
        input: impl FnOnce(&mut HubProtocol),
        cork: &mut Cork,
    ) -> Option<(OpId, Operation)> {
        let mut state = lock(&self.state);
        input(&mut state.protocol);
        let next = state.protocol.poll_timeout();
        if next.is_some_and(|at| state.armed.is_none_or(|armed| at < armed)) {
            // The timer task sleeps too long (or waits for news): wake it. A full channel
            // already holds a wake-up; a closed one means shutdown.
            state.armed = next;
            let _ = self.wake.try_send(());
        }
        cork.inputs += 1;
        self.dispatch(state, caller, cork)
    }

    /// Drains the protocol's outputs and carries them out, in order (the dispatch lock is
    /// taken before the protocol lock is released).
    fn dispatch(
        &self,
        mut state: MutexGuard<'_, State>,
        caller: Option<ClientId>,
        cork: &mut Cork,
    ) -> Option<(OpId, Operation)> {
        let mut peers = lock(&self.peers);
        state.protocol.get().drain_outputs(&mut peers.outputs);
        drop(state);
        let started = dispatch(
            &self.path,
            self.cluster.as_deref(),
            caller,
            &mut peers,
            cork,
        );
        if !peers.run.frames.is_empty() {
            cork.left_run(&self.peers);
        }
        started
    }
}

/// The outboxes a dispatch queued to without waking their connections' tasks (the hub
/// owns their sockets, see `outbox.rs`): each is written, once, however many messages it
/// got, when the cork is flushed or dropped, outside the hub's locks.
///
/// A connection's driver keeps one across the messages it reads in a row and flushes it
/// before it waits; every other input is flushed when it is dispatched. Who writes depends
/// on what the cork holds:
/// - **One input** (a broadcast and then the publisher waits: the quiet, common case), or a
///   short burst leaving about one message per connection: written through at once by the
///   flushing thread, which spares every recipient's task a wake-up. From [`SHARE_MIN`]
///   connections on, the process's writer threads take part (`writers.rs`), so a large
///   channel's subscribers are written on every free core, not one after the other.
/// - **A long burst of about one message per connection** (the driver read
///   [`DEFER_AT`](Self::DEFER_AT) messages or more in a row: publishers on many small
///   channels faster than the server writes): left to the writer threads, which write
///   through every outbox of it while the flushing thread goes back to reading; the next
///   bursts' messages for outboxes they have not reached yet go out in the same write
///   (`writers.rs`). Without writer threads (one core), written at once as above.
/// - **Several messages per connection** (a publisher's burst to one large channel: the
///   server is busy): handed to the connections' tasks, which the runtime runs on every
///   worker thread, each writing all its messages in one system call (what uWebSockets
///   calls corking), and whatever more arrived by the time it runs.
///
/// The last two rules trade latency for fewer system calls, and only apply when the server
/// is behind. Handing a many-channel burst to the tasks made the runtime run every
/// subscriber's task in turn before any of them wrote again, and its p99 latency was 4×
/// what writing it through gives; writing a long one through at once kept about one
/// delivery per system call, and the system calls capped the server's throughput below a
/// single-threaded loop's; the writer threads gather several per call.
///
/// Messages from other nodes of a cluster share a cork per run: the backplane's delivery
/// task takes every message waiting for it (`cluster.rs`, `Backplane::deliver`) and
/// flushes once, so the rules above see the burst. A cork per message would write each
/// delivery with a system call of its own: flat out, a cluster node then made 5 % of a
/// single node's deliveries per CPU-second. A message handed to [`Hub::handle_remote`]
/// alone goes to the tasks ([`handing_over`](Self::handing_over)).
#[derive(Debug)]
pub(crate) struct Cork {
    /// This cork's number, as its outboxes know it ([`Outbox::push_by`]), renewed when a
    /// flush leaves outboxes to the writer threads: what is queued behind a flush that
    /// somebody else owes is not counted here.
    id: u64,
    outboxes: Vec<Arc<Outbox>>,
    /// Hand every outbox to its task, however few messages it holds.
    hand_over: bool,
    /// Inputs dispatched into this cork since its last flush.
    inputs: u32,
    /// Messages those inputs queued, to any connection, but for those queued behind a
    /// flush that another cork (or the writer threads) owes.
    messages: usize,
    /// The hubs where a dispatch into this cork left a [`Run`]: ended when it is flushed.
    runs: Vec<Arc<Mutex<Peers>>>,
}

impl Default for Cork {
    fn default() -> Self {
        Self {
            id: Self::next_id(),
            outboxes: Vec::new(),
            hand_over: false,
            inputs: 0,
            messages: 0,
            runs: Vec::new(),
        }
    }
}

impl Cork {
    /// A cork that kept more entries than this gives its memory back after a flush: a
    /// connection that once broadcast to a large channel should not keep the list.
    const KEEP: usize = 1024;
    /// Messages per corked connection, on average, from which a burst goes to the tasks.
    const HAND_OVER_AT: usize = 2;
    /// Inputs in a row from which a burst of about one message per connection is left to
    /// the writer threads: that many messages waited in one connection's socket, so the
    /// server is behind its publishers. Below it, writing the burst at once costs less
    /// latency than gathering would save (at 10 × 1,000 publishes/s on 1,000 channels of
    /// 10, a rule of 2 had one writer thread take every burst and fall behind: p50 16–22 ms
    /// against 1.4–2.0).
    const DEFER_AT: u32 = 16;

    /// A cork whose outboxes always go to their tasks (see above).
    fn handing_over() -> Self {
        let mut cork = Self::default();
        cork.hand_over = true;
        cork
    }

    /// A fresh cork number: never 0 (a pusher with no name), never one given before.
    fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Pushes `frame` to `outbox`, keeping the outbox to flush if it asks for it. An
    /// overflow is the connection's driver's to report (it closes the connection).
    fn push(&mut self, outbox: &Arc<Outbox>, frame: Frame) -> Result<Pushed, Overflow> {
        let messages = frame.messages();
        let pushed = outbox.push_by(frame, self.id);
        match pushed {
            Ok(Pushed::Flush) => {
                self.messages += messages;
                self.outboxes.push(Arc::clone(outbox));
            }
            Ok(Pushed::Queued) | Err(Overflow) => self.messages += messages,
            Ok(Pushed::Behind) => {}
        }
        pushed
    }

    /// A dispatch into this cork left a run in `peers`: it ends, at the latest, when this
    /// cork is flushed.
    fn left_run(&mut self, peers: &Arc<Mutex<Peers>>) {
        if !self.runs.iter().any(|p| Arc::ptr_eq(p, peers)) {
            self.runs.push(Arc::clone(peers));
        }
    }

    /// Writes every corked outbox through, or leaves them to the writer threads, or hands
    /// them to their tasks (see above).
    pub(crate) fn flush(&mut self) {
        self.flush_with(|| Writers::get().map(|writers| &**writers));
    }

    /// [`flush`](Self::flush) with the writer threads `writers` gives, asked for only when
    /// they may take part (the process's are started on first use); `None`: no other
    /// thread writes.
    fn flush_with<'w>(&mut self, writers: impl FnOnce() -> Option<&'w Writers>) {
        for peers in std::mem::take(&mut self.runs) {
            // Somebody else may have ended it, and another begun: ending that early is
            // harmless.
            lock(&peers).end_run(self);
        }
        let inputs = std::mem::take(&mut self.inputs);
        let messages = std::mem::take(&mut self.messages);
        let burst = inputs > 1;
        if self.hand_over || (burst && messages >= Self::HAND_OVER_AT * self.outboxes.len()) {
            for outbox in self.outboxes.drain(..) {
                outbox.hand_over();
            }
        } else if let busy = inputs >= Self::DEFER_AT
            && !self.outboxes.is_empty()
            && (busy || self.outboxes.len() >= SHARE_MIN)
            && let Some(writers) = writers()
        {
            let batch = Arc::new(Batch::new(std::mem::take(&mut self.outboxes)));
            if busy {
                if writers.defer(&batch) {
                    // What it left to the writers is not this cork's to count any more.
                    self.id = Self::next_id();
                } else {
                    batch.work();
                }
            } else {
                writers.share(&batch);
                batch.work();
            }
            writers.forget_taken();
            if let Ok(batch) = Arc::try_unwrap(batch) {
                // No writer holds it any more: keep the list's memory.
                self.outboxes = batch.into_outboxes();
                self.outboxes.clear();
            }
        } else {
            for outbox in self.outboxes.drain(..) {
                outbox.flush();
            }
        }
        if self.outboxes.capacity() > Self::KEEP {
            self.outboxes = Vec::new();
        }
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Carries out the outputs in `peers`; returns the operation started on behalf of
/// `caller`, whose driver runs it. Cluster outputs go to `cluster` in order (they are
/// dropped on a hub outside a cluster, whose engine produces none).
fn dispatch(
    hub: &str,
    cluster: Option<&Backplane>,
    caller: Option<ClientId>,
    peers: &mut Peers,
    cork: &mut Cork,
) -> Option<(OpId, Operation)> {
    let mut started = None;
    let Peers {
        outboxes,
        outputs,
        run,
        recipients,
    } = peers;
    let mut outputs = outputs.drain(..).peekable();
    while let Some(output) = outputs.next() {
        match output {
            Output::Send { client, payload } => {
                // Consecutive sends of one payload are a broadcast too.
                recipients.clear();
                recipients.push(client);
                while let Some(Output::Send { client, payload: p }) = outputs.peek()
                    && same_bytes(p, &payload)
                {
                    recipients.push(*client);
                    outputs.next();
                }
                deliver(outboxes, run, recipients, &payload, cork);
            }
            Output::Broadcast { clients, payload } => {
                deliver(outboxes, run, &clients, &payload, cork);
            }
            Output::Close {
                client,
                code,
                reason,
            } => {
                // What the run holds for it goes before the close.
                run.queue(outboxes, cork);
                if let Some(outbox) = outboxes.get(&client) {
                    outbox.close(code.0, reason);
                }
            }
            Output::Start {
                client,
                op,
                operation,
            } if Some(client) == caller && started.is_none() => {
                tracing::trace!(%client, %op, "starting an operation");
                started = Some((op, *operation));
            }
            Output::Start { client, op, .. } => {
                // Only the client's own driver runs operations, one at a time.
                tracing::error!(%client, %op, hub, "operation not started: no driver runs it");
            }
            Output::AuthFailed {
                client,
                user,
                error,
            } => {
                // Debug formatting escapes control characters in the client-chosen name.
                tracing::warn!(%client, hub, ?user, error = error.name(), "authentication failed");
            }
            Output::Watch(topic) => {
                if let Some(cluster) = cluster {
                    cluster.watch(hub, &topic);
                }
            }
            Output::Unwatch(topic) => {
                if let Some(cluster) = cluster {
                    cluster.unwatch(hub, &topic);
                }
            }
            Output::Publish(publication) => {
                if let Some(cluster) = cluster {
                    cluster.publish(hub, &publication);
                }
            }
            Output::Left(departure) => {
                if let Some(cluster) = cluster {
                    cluster.leave(hub, &departure);
                }
            }
            other => tracing::error!(?other, "unsupported protocol output ignored"),
        }
    }
    started
}

/// Queues `payload`, framed once, to each of `recipients` in order: alone to a single
/// one (ending the run first if it is one of the run's), else by adding it to the run when
/// the recipients are the run's, or by ending the run and beginning another.
fn deliver(
    outboxes: &Outboxes,
    run: &mut Run,
    recipients: &[ClientId],
    payload: &Payload,
    cork: &mut Cork,
) {
    let frame = Frame::message(payload);
    match recipients {
        [] => {}
        [client] => {
            if run.clients.contains(client) {
                run.queue(outboxes, cork);
            }
            if let Some(outbox) = outboxes.get(client) {
                // On overflow the connection's driver closes it and logs why.
                let _ = cork.push(outbox, frame);
            }
        }
        _ if !run.frames.is_empty()
            && run.frames.len() < Run::MAX
            && run.clients[..] == *recipients =>
        {
            run.frames.push(frame);
        }
        _ => {
            run.queue(outboxes, cork);
            run.clients.extend_from_slice(recipients);
            run.frames.push(frame);
        }
    }
}

fn same_bytes(a: &Payload, b: &Payload) -> bool {
    let (a, b) = (a.bytes(), b.bytes());
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// Draws a fresh client token from the operating system's secure generator.
pub(crate) fn random_token() -> Token {
    let mut bytes = [0u8; 16];
    // Without OS randomness no token can be safe; the server cannot run correctly.
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    Token::from_bytes(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Protocols are written not to panic; if one did, its state is still the best we have.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outbox::Next;
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// A runtime whose clock moves only when the test says so.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl FakeClock {
        fn advance(&self, ms: u64) {
            *lock(&self.0) += Duration::from_millis(ms);
        }
    }

    impl Runtime for FakeClock {
        fn spawn(&self, _: crate::Task) {
            unreachable!("these tests poll their tasks by hand");
        }

        fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let (clock, until) = (self.clone(), self.now() + duration);
            // Polled by hand in these tests: no waker needed.
            Box::pin(std::future::poll_fn(move |_| {
                if *lock(&clock.0) >= until {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }))
        }

        fn now(&self) -> Instant {
            *lock(&self.0)
        }

        fn unblock(
            &self,
            job: Box<dyn FnOnce() -> bool + Send>,
        ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
            Box::pin(std::future::ready(job()))
        }
    }

    /// A protocol that answers the frame "at N" with "due N" once its clock reaches
    /// `base` + N ms; it reads no clock, it is told the time.
    struct Later {
        base: Instant,
        due: Vec<(Instant, ClientId, u64)>,
        out: VecDeque<Output>,
        /// The instants `handle_timeout` was given, for the test to see.
        timeouts: Arc<Mutex<Vec<Instant>>>,
    }

    impl Protocol for Later {
        fn handle_connect(&mut self, _: ClientId, _: Token) -> Result<(), ConnectError> {
            Ok(())
        }
        fn handle_message(&mut self, client: ClientId, frame: Message<'_>) {
            if let Message::Text(t) = frame {
                let ms: u64 = t.strip_prefix("at ").unwrap().parse().unwrap();
                self.due
                    .push((self.base + Duration::from_millis(ms), client, ms));
            }
        }
        fn handle_disconnect(&mut self, client: ClientId) {
            self.due.retain(|d| d.1 != client);
        }
        fn handle_timeout(&mut self, now: Instant) {
            lock(&self.timeouts).push(now);
            self.due.sort();
            while self.due.first().is_some_and(|d| d.0 <= now) {
                let (_, client, ms) = self.due.remove(0);
                let payload = Payload::text(format!("due {ms}"));
                self.out.push_back(Output::Send { client, payload });
            }
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.due.iter().map(|d| d.0).min()
        }
        fn poll_output(&mut self) -> Option<Output> {
            self.out.pop_front()
        }
    }

    type Timeouts = Arc<Mutex<Vec<Instant>>>;

    fn setup() -> (Arc<Hub>, FakeClock, ClientId, Arc<Outbox>, Timeouts) {
        let base = Instant::now();
        let clock = FakeClock(Arc::new(Mutex::new(base)));
        let protocol = Later {
            base,
            due: Vec::new(),
            out: VecDeque::new(),
            timeouts: Timeouts::default(),
        };
        let timeouts = Arc::clone(&protocol.timeouts);
        let hub = Arc::new(Hub::custom("/later", protocol));
        let outbox = Arc::new(Outbox::new(16, 1 << 20, None));
        let client = hub
            .connect(Token::from_bytes([1; 16]), Arc::clone(&outbox))
            .unwrap();
        (hub, clock, client, outbox, timeouts)
    }

    fn poll(timer: &mut Pin<&mut impl Future<Output = ()>>) -> Poll<()> {
        timer.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    /// The texts `outbox` holds now (none while it waits), for tests.
    pub(crate) fn received(outbox: &Outbox) -> Vec<String> {
        match outbox.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Next::Batch(batch)) => {
                batch.iter().flat_map(|queued| queued.texts()).collect()
            }
            Poll::Pending => Vec::new(),
            Poll::Ready(other) => panic!("{other:?}"),
        }
    }

    /// A protocol that does what each message says: `all X` sends X to every other
    /// connection (a broadcast: one payload in a send each, or one `Output::Broadcast` if
    /// `whole`), `to N X` sends X to the N-th connection alone, `close N` closes the N-th
    /// connection.
    #[derive(Default)]
    struct Script {
        whole: bool,
        clients: Vec<ClientId>,
        out: VecDeque<Output>,
    }

    impl Protocol for Script {
        fn handle_connect(&mut self, client: ClientId, _: Token) -> Result<(), ConnectError> {
            self.clients.push(client);
            Ok(())
        }
        fn handle_message(&mut self, from: ClientId, frame: Message<'_>) {
            let Message::Text(t) = frame else { return };
            let words: Vec<&str> = t.split(' ').collect();
            match words[..] {
                ["all", text] => {
                    let payload = Payload::text(text.to_owned());
                    let others = self.clients.iter().copied().filter(|&c| c != from);
                    if self.whole {
                        let clients = others.collect();
                        self.out.push_back(Output::Broadcast { clients, payload });
                    } else {
                        for client in others {
                            let payload = payload.clone();
                            self.out.push_back(Output::Send { client, payload });
                        }
                    }
                }
                ["to", n, text] => self.out.push_back(Output::Send {
                    client: self.clients[n.parse::<usize>().unwrap()],
                    payload: Payload::text(text.to_owned()),
                }),
                ["close", n] => self.out.push_back(Output::Close {
                    client: self.clients[n.parse::<usize>().unwrap()],
                    code: rocket_proto::CloseCode::NORMAL,
                    reason: "bye".into(),
                }),
                _ => panic!("{t}"),
            }
        }
        fn handle_disconnect(&mut self, client: ClientId) {
            self.clients.retain(|&c| c != client);
        }
        fn poll_output(&mut self) -> Option<Output> {
            self.out.pop_front()
        }
    }

    /// Broadcasts to the same recipients in a row are queued to each as one entry, and
    /// every connection still gets every message where it would have, queued one by one:
    /// a message to one of the run's recipients, from any cork, a close, and a shutdown
    /// come after the run; the publisher's answers (outside the run) need not wait.
    #[test]
    fn broadcasts_in_a_row_are_queued_joined_and_in_order() {
        broadcasts_in_a_row(false);
        broadcasts_in_a_row(true);
    }

    fn broadcasts_in_a_row(whole: bool) {
        let script = Script {
            whole,
            ..Script::default()
        };
        let hub = Hub::custom("/script", script);
        let outboxes: Vec<Arc<Outbox>> = (0..4)
            .map(|_| Arc::new(Outbox::new(2 * Run::MAX, 1 << 20, None)))
            .collect();
        let ids: Vec<ClientId> = outboxes
            .iter()
            .map(|o| {
                hub.connect(Token::from_bytes([1; 16]), Arc::clone(o))
                    .unwrap()
            })
            .collect();
        let say = |from: usize, text: &str, cork: &mut Cork| {
            let started = hub.handle_message(ids[from], Message::Text(text), cork);
            assert!(started.is_none());
        };
        let entries = |o: &Outbox| match o.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Next::Batch(batch)) => {
                batch.iter().map(crate::wire::Queued::texts).collect()
            }
            Poll::Pending => Vec::new(),
            Poll::Ready(other) => panic!("{other:?}"),
        };
        let (mut a, mut b) = (Cork::default(), Cork::default());

        // Connection 0 publishes twice; its answers do not wait for the run.
        say(0, "all m1", &mut a);
        say(0, "to 0 ok1", &mut a);
        say(0, "all m2", &mut a);
        say(0, "to 0 ok2", &mut a);
        assert_eq!(received(&outboxes[0]), ["ok1", "ok2"]);
        // Another connection's message to one of the run's recipients comes after it.
        say(1, "to 2 direct", &mut b);
        assert_eq!(entries(&outboxes[2]), [vec!["m1", "m2"], vec!["direct"]]);
        // Ended for every recipient, as one entry each.
        for o in [&outboxes[1], &outboxes[3]] {
            assert_eq!(entries(o), [vec!["m1", "m2"]]);
        }

        // A broadcast to other recipients ends the run, whichever cork it comes from.
        say(0, "all m3", &mut a);
        say(0, "all m4", &mut a);
        say(1, "all x", &mut b);
        say(0, "all m5", &mut a);
        assert_eq!(entries(&outboxes[2]), [vec!["m3", "m4"], vec!["x"]]);
        assert_eq!(entries(&outboxes[1]), [vec!["m3", "m4"]]);
        assert_eq!(received(&outboxes[0]), ["x"]);
        assert_eq!(
            received(&outboxes[2]),
            Vec::<String>::new(),
            "m5 waits for a flush"
        );
        // Any cork that left a run in the hub ends the run there when it is flushed.
        b.flush();
        for o in &outboxes[1..3] {
            assert_eq!(received(o), ["m5"]);
        }
        assert_eq!(received(&outboxes[3]), ["m3", "m4", "x", "m5"]);

        // A close comes after the run.
        let poll = |o: &Outbox| o.poll_next(&mut Context::from_waker(Waker::noop()));
        say(0, "all m6", &mut a);
        say(0, "close 3", &mut a);
        assert_eq!(received(&outboxes[3]), ["m6"]);
        assert!(matches!(poll(&outboxes[3]), Poll::Ready(Next::Finish(_))));
        for o in &outboxes[1..3] {
            assert_eq!(received(o), ["m6"]);
        }

        // A run is `Run::MAX` messages at most; what was accepted goes out before a
        // shutdown's close.
        for i in 0..=Run::MAX {
            say(0, &format!("all n{i}"), &mut a);
        }
        hub.close_all(1001, "shutting down");
        let expected: Vec<String> = (0..=Run::MAX).map(|i| format!("n{i}")).collect();
        for o in &outboxes[1..3] {
            let entries = entries(o);
            let lengths: Vec<usize> = entries.iter().map(Vec::len).collect();
            assert_eq!(lengths, [Run::MAX, 1]);
            assert_eq!(entries.concat(), expected);
            assert!(matches!(poll(o), Poll::Ready(Next::Finish(_))));
        }
    }

    /// Who writes a cork: about one message per connection is written through (by the
    /// writer threads too, from `SHARE_MIN` connections on) without waking anyone; a burst
    /// of several messages per connection goes to the recipients' tasks.
    #[cfg(unix)]
    #[test]
    fn a_cork_is_written_through_unless_messages_pile_up_per_connection() {
        use crate::outbox::tests::{direct_with, read_all, read_eventually};
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        // A writer thread may still be writing its last chunk when the flush returns.
        fn written(peer: &mut std::os::unix::net::UnixStream, case: &str) {
            read_eventually(peer, 1, case);
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        // Idle connections, their tasks waiting.
        let idle = |n: usize| -> (Vec<_>, Vec<_>) {
            (0..n)
                .map(|_| {
                    let (outbox, peer) = direct_with(16, 1 << 20);
                    let cx = &mut Context::from_waker(&waker);
                    assert!(outbox.poll_next(cx).is_pending());
                    (Arc::new(outbox), peer)
                })
                .unzip()
        };
        // (connections, inputs each queueing a message to every connection, written through)
        for (connections, inputs, through) in [
            (1, 1, true),
            (1, 2, false),
            (SHARE_MIN + 3, 1, true),
            (SHARE_MIN + 3, 3, false),
        ] {
            count.0.store(0, Ordering::SeqCst);
            let (outboxes, mut peers) = idle(connections);
            let mut cork = Cork::default();
            for i in 0..inputs {
                for outbox in &outboxes {
                    cork.push(outbox, Frame::text(format!("m{i}")))
                        .expect("room");
                }
                cork.inputs += 1;
            }
            cork.flush();
            let case = format!("{connections} connection(s), {inputs} input(s)");
            let woken = if through { 0 } else { connections };
            assert_eq!(count.0.load(Ordering::SeqCst), woken, "{case}: woken");
            for (outbox, peer) in outboxes.iter().zip(&mut peers) {
                if through {
                    written(peer, &case);
                    assert!(received(outbox).is_empty(), "{case}: nothing left");
                } else {
                    assert!(read_all(peer).is_empty(), "{case}: not written through");
                    assert_eq!(received(outbox).len(), inputs, "{case}: left to the task");
                }
            }
        }
        // A burst of one message to each of many connections (a burst to many small
        // channels) is written through too.
        count.0.store(0, Ordering::SeqCst);
        let (outboxes, mut peers) = idle(4);
        let mut cork = Cork::default();
        for (i, outbox) in outboxes.iter().enumerate() {
            cork.push(outbox, Frame::text(format!("to {i}")))
                .expect("room");
            cork.inputs += 1;
        }
        cork.flush();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "a burst of one each: woken"
        );
        for peer in &mut peers {
            written(peer, "a burst of one each");
        }
        // A cork handing over (a message given to `Hub::handle_remote` alone) wakes the
        // tasks, even for one message.
        count.0.store(0, Ordering::SeqCst);
        let (outboxes, mut peers) = idle(1);
        let mut cork = Cork::handing_over();
        cork.push(&outboxes[0], Frame::text("remote"))
            .expect("room");
        cork.inputs += 1;
        cork.flush();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a remote message: woken");
        assert!(
            read_all(&mut peers[0]).is_empty(),
            "a remote message: not written"
        );
        assert_eq!(received(&outboxes[0]), ["remote"]);
    }

    /// A long burst of about one message per connection is left to the writer threads: the
    /// flushing thread writes nothing, and what is pushed before a writer gets there goes
    /// out in the same write. One input and a short burst are written at once, and so is a
    /// long burst the writers are too far behind to take.
    #[cfg(unix)]
    #[test]
    fn a_long_burst_is_left_to_the_writer_threads_and_gathers_what_follows() {
        use crate::outbox::tests::{direct_with, read_all};
        let bytes = |texts: &[&str]| -> Vec<u8> {
            let frames = texts
                .iter()
                .map(|t| crate::wire::Queued::frame(Frame::text(*t)).bytes);
            frames.flat_map(|b| b.to_vec()).collect()
        };
        // Writers that write only when the test says so.
        let writers = Writers::default();
        let idle = |n: usize| -> (Vec<_>, Vec<_>) {
            (0..n)
                .map(|_| {
                    let (outbox, peer) = direct_with(16, 1 << 20);
                    assert!(
                        outbox
                            .poll_next(&mut Context::from_waker(Waker::noop()))
                            .is_pending()
                    );
                    (Arc::new(outbox), peer)
                })
                .unzip()
        };
        let (outboxes, mut peers) = idle(4);
        let mut cork = Cork::default();
        for (i, outbox) in outboxes.iter().enumerate() {
            cork.push(outbox, Frame::text(format!("to {i}")))
                .expect("room");
        }
        cork.inputs = Cork::DEFER_AT; // read in a row, the rest sent nothing here
        cork.flush_with(|| Some(&writers));
        for peer in &mut peers {
            assert!(
                read_all(peer).is_empty(),
                "the flushing thread wrote a burst"
            );
        }
        // The next burst: a message to every waiting connection joins the one waiting
        // (the writers' flush writes it: it does not count here), and one to an idle
        // connection makes one message per connection of this cork's own, so it is left to
        // the writers too, not handed to the task as a pile would be.
        let (fresh, mut fresh_peer) = idle(1);
        let mut next = Cork::default();
        for outbox in &outboxes {
            assert_eq!(next.push(outbox, Frame::text("again")), Ok(Pushed::Behind));
        }
        assert_eq!(next.push(&fresh[0], Frame::text("new")), Ok(Pushed::Flush));
        next.inputs = Cork::DEFER_AT;
        next.flush_with(|| Some(&writers));
        assert!(
            read_all(&mut fresh_peer[0]).is_empty(),
            "left to the writers"
        );
        assert_eq!(writers.work_waiting(), 2, "two batches waited");
        for (i, peer) in peers.iter_mut().enumerate() {
            let expected = bytes(&[&format!("to {i}"), "again"]);
            assert_eq!(read_all(peer), expected, "connection {i}: in one write");
        }
        assert_eq!(read_all(&mut fresh_peer[0]), bytes(&["new"]));
        for outbox in outboxes.iter().chain(&fresh) {
            assert!(received(outbox).is_empty(), "nothing left, no task needed");
        }

        // One input, many connections: written at once (shared with the writers).
        let (outboxes, mut peers) = idle(SHARE_MIN);
        let mut cork = Cork::default();
        for outbox in &outboxes {
            cork.push(outbox, Frame::text("quiet")).expect("room");
        }
        cork.inputs += 1;
        cork.flush_with(|| Some(&writers));
        for peer in &mut peers {
            assert_eq!(
                read_all(peer),
                bytes(&["quiet"]),
                "one input: written at once"
            );
        }
        writers.work_waiting();

        // A short burst of one message each: written at once too.
        let (outboxes, mut peers) = idle(3);
        let mut cork = Cork::default();
        for outbox in &outboxes {
            cork.push(outbox, Frame::text("short")).expect("room");
        }
        cork.inputs = Cork::DEFER_AT - 1;
        cork.flush_with(|| Some(&writers));
        for peer in &mut peers {
            assert_eq!(read_all(peer), bytes(&["short"]), "a short burst: at once");
        }
        assert_eq!(writers.work_waiting(), 0, "nothing left to the writers");

        // Writers far behind: the burst is written by the flushing thread after all.
        let (waiting, _waiting_peers) = idle(1);
        while writers.defer(&Arc::new(Batch::new(waiting.clone()))) {}
        let (outboxes, mut peers) = idle(2);
        let mut cork = Cork::default();
        for outbox in &outboxes {
            cork.push(outbox, Frame::text("behind")).expect("room");
        }
        cork.inputs = Cork::DEFER_AT;
        cork.flush_with(|| Some(&writers));
        for peer in &mut peers {
            assert_eq!(
                read_all(peer),
                bytes(&["behind"]),
                "writers behind: written at once"
            );
        }
    }

    #[test]
    fn the_timer_fires_at_the_protocols_timeout_and_dispatches_its_outputs() {
        let (hub, clock, client, outbox, timeouts) = setup();
        let runtime = clock.clone();
        let mut timer = pin!(hub.run_timer(&runtime));
        assert_eq!(
            poll(&mut timer),
            Poll::Pending,
            "no timeout: waits for news"
        );
        hub.handle_message(client, Message::Text("at 300"), &mut Cork::default());
        assert_eq!(poll(&mut timer), Poll::Pending);
        clock.advance(299);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert!(received(&outbox).is_empty(), "not yet");
        clock.advance(1);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(received(&outbox), ["due 300"]);
        assert_eq!(
            lock(&timeouts).len(),
            1,
            "handle_timeout ran once, when due"
        );
        clock.advance(10_000);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert!(received(&outbox).is_empty(), "nothing else was due");
        hub.stop_timer();
        assert_eq!(poll(&mut timer), Poll::Ready(()), "ends at shutdown");
    }

    #[test]
    fn an_earlier_timeout_wakes_the_sleeping_timer_and_a_later_one_does_not() {
        let (hub, clock, client, outbox, timeouts) = setup();
        let runtime = clock.clone();
        let mut timer = pin!(hub.run_timer(&runtime));
        hub.handle_message(client, Message::Text("at 1000"), &mut Cork::default());
        assert_eq!(poll(&mut timer), Poll::Pending, "sleeps until 1000");
        assert_eq!(
            lock(&hub.state).armed,
            Some(runtime.now() + Duration::from_millis(1000))
        );
        hub.handle_message(client, Message::Text("at 300"), &mut Cork::default());
        hub.handle_message(client, Message::Text("at 2000"), &mut Cork::default());
        clock.advance(300);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(received(&outbox), ["due 300"]);
        clock.advance(699);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert!(received(&outbox).is_empty());
        clock.advance(1);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(received(&outbox), ["due 1000"]);
        clock.advance(1000);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(received(&outbox), ["due 2000"]);
        // handle_timeout ran only when something was due, with the runtime's clock.
        let base = *lock(&timeouts).first().unwrap() - Duration::from_millis(300);
        let at = |ms| base + Duration::from_millis(ms);
        assert_eq!(*lock(&timeouts), [at(300), at(1000), at(2000)]);
        assert_eq!(lock(&hub.state).armed, None, "nothing left: waits for news");
        hub.stop_timer();
        assert_eq!(poll(&mut timer), Poll::Ready(()));
    }

    /// A Rocket hub at `path` whose user `u` (no secret) may subscribe and broadcast.
    pub(crate) fn rocket_hub_at(path: &str) -> Hub {
        let config = crate::Config::from_json(&format!(
            r#"{{"Hubs":[{{"Path":"{path}","Users":{{"u":{{"Secret":"","Permission":3}}}}}}]}}"#
        ))
        .unwrap();
        let engine = Engine::new(&config.engine_config(&config.hubs[0]), Default::default());
        Hub::rocket(path, engine)
    }

    /// Connects client `n` of `hub` with `outbox`, authenticated as `u` and subscribed to
    /// `channel`.
    pub(crate) fn subscribe(hub: &Hub, n: u8, channel: &str, outbox: &Arc<Outbox>) {
        let id = hub
            .connect(Token::from_bytes([n; 16]), Arc::clone(outbox))
            .unwrap();
        let subscribe = format!(r#"{{"subscribe":{{"channel":"{channel}"}}}}"#);
        for input in [r#"{"authenticate":{"user":"u","secret":""}}"#, &subscribe] {
            hub.handle_message(id, Message::Text(input), &mut Cork::default());
        }
    }

    fn subscribed(hub: &Hub, n: u8, channel: &str) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(16, 1 << 20, None));
        subscribe(hub, n, channel, &outbox);
        assert_eq!(received(&outbox).len(), 3, "greeting and two replies");
        outbox
    }

    #[test]
    fn a_rocket_hub_reports_its_channels_and_takes_remote_broadcasts() {
        let hub = rocket_hub_at("/r");
        assert_eq!(hub.channel_count(), Some(0));
        assert_eq!(hub.subscriber_count("news"), Some(0));
        let a = subscribed(&hub, 1, "news");
        let b = subscribed(&hub, 2, "news");
        let c = subscribed(&hub, 3, "sport");
        assert_eq!(hub.channel_count(), Some(2));
        assert_eq!(hub.subscriber_count("news"), Some(2));
        assert_eq!(hub.subscriber_count("sport"), Some(1));
        assert_eq!(hub.subscriber_count("nothing"), Some(0));
        let event = r#"{"event":"e","channel":"news","data":1}"#;
        assert!(hub.handle_remote(&Topic::Channel("news".into()), Payload::text(event)));
        assert_eq!(received(&a), [event]);
        assert_eq!(received(&b), [event]);
        assert!(received(&c).is_empty(), "other channels get nothing");
        assert!(hub.handle_remote(&Topic::Channel("nobody-here".into()), Payload::text(event)));
        assert!(received(&a).is_empty());
        assert!(format!("{hub:?}").contains("rocket"));
    }

    #[test]
    fn a_custom_hub_has_no_counts_and_refuses_remote_broadcasts() {
        let (hub, _, _, outbox, _) = setup();
        assert_eq!(hub.channel_count(), None);
        assert_eq!(hub.subscriber_count("news"), None);
        assert!(!hub.handle_remote(&Topic::Channel("news".into()), Payload::text("{}")));
        assert!(received(&outbox).is_empty());
        assert!(format!("{hub:?}").contains("custom"));
    }

    #[test]
    fn an_engine_given_as_a_custom_protocol_is_a_rocket_hub() {
        let config = crate::Config::demo();
        let engine = Engine::new(&config.engine_config(&config.hubs[0]), Default::default());
        let hub = Hub::custom("/e", engine);
        assert_eq!(hub.channel_count(), Some(0));
    }

    #[test]
    fn a_history_hubs_timer_gives_the_engine_the_time_stamps_broadcasts_and_expires_them() {
        let config = crate::Config::from_json(
            r#"{"Hubs":[{"Path":"/h","Users":{"u":{"Secret":"","Permission":3}},
                         "History":{"Size":10,"TtlMs":1000}}]}"#,
        )
        .unwrap();
        let engine = Engine::new(&config.engine_config(&config.hubs[0]), Default::default());
        let hub = Hub::rocket("/h", engine);
        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        let runtime = clock.clone();
        let mut timer = pin!(hub.run_timer(&runtime));
        assert_eq!(
            poll(&mut timer),
            Poll::Pending,
            "told the time; nothing due"
        );
        let outbox = Arc::new(Outbox::new(16, 1 << 20, None));
        let id = hub
            .connect(Token::from_bytes([1; 16]), Arc::clone(&outbox))
            .unwrap();
        for request in [
            r#"{"authenticate":{"user":"u","secret":""}}"#,
            r#"{"subscribe":{"channel":"c"}}"#,
            r#"{"broadcast":{"event":"e","channel":"c"}}"#,
            r#"{"unsubscribe":{"channel":"c"}}"#,
        ] {
            hub.handle_message(id, Message::Text(request), &mut Cork::default());
        }
        assert!(received(&outbox)[3].contains(r#""offset":1"#));
        assert_eq!(
            hub.history_count(),
            Some(1),
            "kept after the last subscriber"
        );
        // The broadcast is stamped 10 ms after the time the engine was given …
        assert_eq!(poll(&mut timer), Poll::Pending);
        clock.advance(10);
        assert_eq!(poll(&mut timer), Poll::Pending);
        // … and expires TtlMs after that stamp.
        clock.advance(999);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(hub.history_count(), Some(1));
        clock.advance(1);
        assert_eq!(poll(&mut timer), Poll::Pending);
        assert_eq!(hub.history_count(), Some(0));
        hub.stop_timer();
        assert_eq!(poll(&mut timer), Poll::Ready(()));
    }

    #[test]
    fn one_timer_task_per_hub() {
        let (hub, clock, ..) = setup();
        let runtime: Arc<dyn Runtime> = Arc::new(clock);
        assert!(hub.timer_task(Arc::clone(&runtime)).is_some());
        assert!(hub.timer_task(runtime).is_none());
    }
}
