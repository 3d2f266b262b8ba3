//! # rocket-proto: the Rocket pub/sub protocol, sans IO
//!
//! This crate is the whole Rocket protocol (see `docs/PROTOCOL.md`) as a plain state
//! machine. It never touches a socket, a clock or the operating system's randomness, and it
//! runs on no async runtime: a *frontend* (`rocket-tokio`, `rocket-async-std`, a test, a
//! fuzzer) reads WebSocket messages, feeds them in, and carries out what comes out.
//!
//! ## Who does what
//! - The **frontend** owns the sockets. It accepts connections, picks the hub by request
//!   path, gives each connection a [`ClientId`] and a [`Token`] drawn from the OS's secure
//!   generator, enforces transport limits (message size, UTF-8, handshake and idle
//!   timeouts, slow consumers), and writes each [`Output`] to its client's socket. It also
//!   owns the clock and the slow work: it runs each [`Operation`] the engine starts and
//!   feeds back its [`Completion`], and keeps the one timer the engine asks for
//!   ([`Protocol::poll_timeout`], [`Protocol::handle_timeout`]).
//! - The **[`Engine`]** (one per hub) owns users, sessions, channels and the routing of
//!   messages. Inputs are `handle_*` calls; outputs queue inside the engine until drained.
//! - Payloads fan out without copies: a broadcast is encoded **once** into a [`Payload`],
//!   and each recipient's [`Output::Send`] holds a reference-counted clone of the same bytes;
//!   a driver that asks for it ([`Engine::set_whole_broadcasts`]) gets one
//!   [`Output::Broadcast`] naming every recipient instead.
//!
//! ## The driver loop
//! Feed one input, drain every output, then ask when the engine next needs the time, before
//! the next input:
//!
//! ```
//! use rocket_proto::{ClientId, Completion, Engine, EngineConfig, HashSeed, Message, Operation, Output, Token};
//!
//! let config = EngineConfig::from_json(r#"{"Users": {"alice": {"Permission": 7}}}"#).unwrap();
//! let mut engine = Engine::new(&config, HashSeed::default());
//! let mut outputs = Vec::new();
//! let alice = ClientId(1);
//! engine.handle_connect(alice, Token::from_bytes([7; 16])).unwrap(); // on accept
//! engine.handle_message(alice, Message::Text(r#"{"subscribe":{"channel":"news"}}"#)); // on read
//! engine.drain_outputs(&mut outputs);
//! for output in outputs.drain(..) {
//!     match output {
//!         Output::Send { client, payload } => { /* queue payload on client's socket */ }
//!         Output::Broadcast { clients, payload } => {
//!             /* only after engine.set_whole_broadcasts(true): queue payload on each of
//!                clients' sockets, in order, as a Send each */
//!         }
//!         Output::Close { client, code, reason } => { /* flush, then close with code */ }
//!         Output::Start { client, op, operation } => match *operation {
//!             Operation::VerifySecret(v) => {
//!                 /* hold client's frames; check v off-thread; when done, with the result
//!                    `ok`: engine.handle_completion(op, Completion::SecretVerified(ok)),
//!                    then drain */
//!             }
//!             _ => {} // the others come only with EngineConfig::cluster (below)
//!         },
//!         Output::AuthFailed { client, user, error } => { /* log it */ }
//!         Output::Watch(_) | Output::Unwatch(_) | Output::Publish(_) => {
//!             /* only with EngineConfig::cluster: to the backplane, in order */
//!         }
//!         _ => {} // outputs may grow (the enum is non-exhaustive)
//!     }
//! }
//! let wake_at = engine.poll_timeout(); // (re)arm the one timer; None: no timer
//! // ... once at start, and whenever it fires, with the driver's clock (the engine never
//! // reads one):
//! engine.handle_timeout(std::time::Instant::now()); // then drain and poll_timeout again
//! engine.handle_disconnect(alice); // on socket close
//! ```
//!
//! ## The contract
//! - **Order.** Outputs come out in the order the engine produced them. For one client,
//!   replies follow the order of its requests, and deliveries of one channel follow the
//!   order in which the engine accepted the broadcasts. A frontend that keeps per-client
//!   order when writing keeps the whole guarantee.
//! - **At most once.** A broadcast answered with `broadcasted` yields exactly one
//!   [`Output::Send`] for each client subscribed at that moment (or one
//!   [`Output::Broadcast`] naming each once), the sender included if subscribed; a `direct` answered with `directSent` yields one to its target. The engine
//!   never retries, and stores messages only as a History hub's bounded history: a frontend that cannot deliver (a full queue, a dead
//!   socket) must close that client, never skip a message silently.
//! - **Replies.** Every request gets exactly one reply (`{"err":…}` or its success reply),
//!   except `disconnect`, which yields [`Output::Close`] with code 1000. Errors are checked
//!   in the order shape, permission, limit, target.
//! - **Close.** [`Output::Close`] means: flush what is queued for that client, then close
//!   with the given code. The engine has already forgotten the client, and frames that
//!   still arrive from it are ignored. The engine closes a client on `disconnect` (1000)
//!   and on its `MaxFailedAuth`-th failed authentication (1008).
//! - **Operations.** Work the engine cannot do itself goes out as [`Output::Start`] with an
//!   [`Operation`] and a fresh [`OpId`]; the frontend runs it off the engine's lock and
//!   feeds the result back with [`Engine::handle_completion`] under the same id. Until
//!   then it feeds no frame from the client on whose behalf the operation runs, so that
//!   client's replies stay in order. Completions the engine no longer awaits (the client
//!   left or re-authenticated meanwhile) and unknown ids are ignored.
//! - **Secrets.** Plain secrets are compared in constant time inside the engine. For a
//!   user whose `Secret` is an argon2 PHC hash, the engine starts
//!   [`Operation::VerifySecret`] (argon2 is slow on purpose) and concludes on
//!   [`Completion::SecretVerified`]. Secrets never appear in outputs other than that
//!   operation, and never in `Debug` output.
//! - **Reload.** [`Engine::handle_reload`] swaps in new users and limits without
//!   disconnecting anyone: sessions keep their user (with its new permissions from the
//!   next request) unless the user was removed, which ends the session silently (the
//!   client is anonymous, its subscriptions dropped). A verification still running cannot
//!   grant a secret the reload replaced.
//! - **Hygiene.** A channel exists only while it has a subscriber; a disconnected client
//!   leaves nothing behind ([`Engine::is_idle`] after everyone left and, on a History hub,
//!   the kept histories expired).
//! - **No panics on input.** Any byte sequence, from any client, in any state, is handled.
//!
//! ## History, recovery and presence (per hub, off by default)
//! An [`EngineConfig`] with [`history`](EngineConfig::history), [`presence`](EngineConfig::presence)
//! or [`join_leave`](EngineConfig::join_leave) turns on the version-2 additions of
//! `docs/PROTOCOL.md`; without them a client sees exactly version 1 (`history` and `presence`
//! are unknown actions, `since` is an ignored field).
//! - **Offsets.** Each channel has an epoch (16 hex digits from the hub's [`HashSeed`]-keyed
//!   hasher and a counter: unpredictable, yet fixed for a seed in tests) and numbers its
//!   broadcasts 1, 2, 3, … Every delivery carries `"offset"` and `"epoch"`; it is encoded once,
//!   and the same bytes go to every subscriber and into the history.
//! - **Recovery is exact.** `subscribe` with `since` answers with the deliveries after `since`
//!   (each byte for byte as delivered) in the same reply that makes the client a subscriber,
//!   and the engine handles one input at a time, so the replay and the live deliveries that
//!   follow have no gap and no duplicate. `recovered:false` when the epoch differs, the offset
//!   lies ahead of the channel, or a missed delivery is no longer kept.
//! - **Memory is bounded.** A channel keeps at most `Size` deliveries. Its history (offset,
//!   epoch, events) lives while the channel has subscribers, and after the last one leaves
//!   until `TtlMs` after the last broadcast; then it expires and the channel starts over with a
//!   new epoch. Events that expire while the channel still has subscribers are dropped, but its
//!   offset and epoch stay (a client that missed nothing still recovers).
//! - **Time.** The engine reads no clock. A broadcast marks its channel unstamped;
//!   [`Engine::handle_timeout`]`(now)` stamps unstamped channels (expiry `now + TtlMs`) and
//!   expires what is due; [`Engine::poll_timeout`] asks for the stamp 10 ms after the last
//!   time it was given. So a history is kept at least `TtlMs` after its last broadcast and at
//!   most 10 ms plus the driver's timer latency longer. A driver gives the engine the time once
//!   when it starts (`rocket-server`'s hub timer does) and whenever `poll_timeout` is due;
//!   until it was given the time, nothing expires.
//! - **Presence and join/leave.** `presence` lists a channel's subscribers with their users.
//!   `join`/`leave` go to the other subscribers whenever a client enters or leaves a channel:
//!   subscribe, unsubscribe, logout, (re-)authenticate, `disconnect`, and
//!   [`Engine::handle_disconnect`] (so every close the frontend makes: lost connection, slow
//!   consumer, idle timeout). Nobody gets a join for itself; a subscriber hears of changes
//!   after its own subscribe reply.
//! - **Single node.** History, presence and join/leave are kept per engine. In a cluster
//!   they are kept in the cluster's shared store instead (below).
//!
//! ## Clusters
//! With [`EngineConfig::cluster`] set, the engine runs as one node of several that share a
//! backplane (`rocket-server` uses Redis pub/sub), still without IO. It names what this node
//! holds and what goes to the others as [`Topic`]s: a channel with local subscribers, or a
//! local client's token.
//! - [`Output::Watch`] / [`Output::Unwatch`]: this node starts or stops holding a topic (a
//!   channel's first local subscriber arrives or its last one leaves; a client connects or
//!   leaves). Applied in order, they always describe exactly what the node holds.
//! - [`Output::Publish`]: a broadcast delivered here to local subscribers goes to the other
//!   nodes too, the same bytes, once. The engine answers `broadcasted` at once.
//! - [`Operation::Publish`]: a broadcast to a channel, or a direct message to a token, that
//!   this node does not hold. The other nodes' answer ([`Completion::Published`]: did one
//!   hold it?) decides between the reply and `INVALID_CHANNEL` / `INVALID_CLIENT`; a local
//!   subscriber that appeared meanwhile gets the broadcast then. The publish API's
//!   counterpart is [`PublishStep::Publish`] and [`Engine::handle_publish_published`].
//! - [`Engine::handle_remote`]: what another node published to a topic this node holds,
//!   delivered to its local holders as it is (it was encoded once, by the accepting node).
//!
//! - **Shared hubs.** On a hub with `History`, `Presence` or `JoinLeave`, those live in the
//!   cluster's store. A subscribe is [`Operation::Join`]: the store orders it among the
//!   channel's messages and returns a marker, which the driver feeds as
//!   [`Completion::Joined`] in its place among them (the client receives exactly what
//!   follows it). A History broadcast is an [`Operation::Publish`] whose
//!   [`Publication::history`] is set: the store gives it its offset and delivers it to every
//!   node, this one too. `history` and `presence` are [`Operation::History`] and
//!   [`Operation::Presence`]; a departure is [`Output::Left`]; an unreachable store is
//!   [`Completion::Unavailable`] (`UNAVAILABLE`). [`Engine::presence_entries`] lists what
//!   the store must hold for this node.
//!
//! A driver keeps one publisher's order across nodes by sending publications in the order
//! the engine produced them (outputs and operations alike) over one ordered link.
//!
//! ## Other protocols
//! Frontends drive the [`Protocol`] trait, which [`Engine`] implements, so they can serve
//! any protocol written the same way (the original Rocket let users define their own per
//! path).
//!
//! ## Configuration
//! An [`EngineConfig`] holds what the engine uses: users, [`EngineLimits`], and the hub's
//! [`HistoryConfig`], presence and join/leave switches. The config
//! file as a whole (address, TLS, hub paths, transport limits) is `rocket-server`'s.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod cluster;
pub mod config;
mod engine;
mod history;
mod message;
mod operation;
mod permissions;
mod protocol;
mod publish;
mod reply;
mod request;

pub use client::{ClientId, Token};
pub use cluster::{Departure, HistoryRead, Join, Joined, PresenceEntry, Publication, Topic};
pub use config::{ConfigError, EngineConfig, EngineLimits, HistoryConfig, UserConfig, is_phc};
pub use engine::{ConnectError, Engine, EngineStats, HashSeed, PublishStep, Reloaded};
pub use message::{CloseCode, Message, Output, Payload};
pub use operation::{Completion, OpId, Operation, Verification};
pub use permissions::Permissions;
pub use protocol::Protocol;
pub use publish::{Publish, PublishKind};
pub use reply::ErrorCode;
pub use request::{MAX_NAME_BYTES, MAX_NESTING};
