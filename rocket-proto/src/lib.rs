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
//!   and each recipient's [`Output::Send`] holds a reference-counted clone of the same bytes.
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
//!         Output::Close { client, code, reason } => { /* flush, then close with code */ }
//!         Output::Start { client, op, operation: Operation::VerifySecret(v) } => {
//!             /* hold client's frames; check v off-thread; when done, with the result `ok`:
//!                engine.handle_completion(op, Completion::SecretVerified(ok)), then drain */
//!         }
//!         Output::AuthFailed { client, user, error } => { /* log it */ }
//!         _ => {} // outputs may grow (the enum is non-exhaustive)
//!     }
//! }
//! let wake_at = engine.poll_timeout(); // (re)arm the one timer; None: no timer
//! // ... when it fires, with the driver's clock (the engine never reads one):
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
//!   [`Output::Send`] for each client subscribed at that moment, the sender included if
//!   subscribed; a `direct` answered with `directSent` yields one to its target. The engine
//!   never retries or stores messages: a frontend that cannot deliver (a full queue, a dead
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
//! - **Hygiene.** A channel exists only while it has a subscriber; a disconnected client
//!   leaves nothing behind ([`Engine::is_idle`] after everyone left).
//! - **No panics on input.** Any byte sequence, from any client, in any state, is handled.
//!
//! ## Other protocols and clusters
//! Frontends drive the [`Protocol`] trait, which [`Engine`] implements, so they can serve
//! any protocol written the same way (the original Rocket let users define their own per
//! path). For a cluster, [`Engine::handle_remote_broadcast`] is the input for a broadcast
//! that another node accepted; a matching output for "publish this to the other nodes" can
//! be added to the non-exhaustive [`Output`] without changing the rest.
//!
//! ## Configuration
//! An [`EngineConfig`] holds what the engine uses: users and [`EngineLimits`]. The config
//! file as a whole (address, TLS, hub paths, transport limits) is `rocket-server`'s.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
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
pub use config::{ConfigError, EngineConfig, EngineLimits, HistoryConfig, UserConfig, is_phc};
pub use engine::{ConnectError, Engine, EngineStats, HashSeed, PublishStep};
pub use message::{CloseCode, Message, Output, Payload};
pub use operation::{Completion, OpId, Operation, Verification};
pub use permissions::Permissions;
pub use protocol::Protocol;
pub use publish::{Publish, PublishKind};
pub use reply::ErrorCode;
pub use request::{MAX_NAME_BYTES, MAX_NESTING};
