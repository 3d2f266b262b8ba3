//! # rocket-server: what Rocket's frontends share
//!
//! `rocket-tokio` and `rocket-async-std` are thin: each supplies its listener, its TLS
//! acceptor, its WebSocket stream constructor and one [`Runtime`] (spawn, sleep, now,
//! unblock). Everything that does not depend on the runtime lives here, once.
//!
//! ## The flow of a connection
//! 1. The adapter binds ([`bind_listener`]) and starts a [`Server`]; `Server::run` spawns the
//!    accept loop and one timer task per hub on the runtime, and spawns the adapter's
//!    connection function for each accepted socket.
//! 2. The adapter's connection function calls [`serve_socket`] with its TLS handshake
//!    (`secure`) and its WebSocket constructor (`upgrade`).
//! 3. The HTTP front (`http.rs`) reads request heads under `HandshakeTimeoutMs`: `/health`
//!    is answered, other requests get 426, 404 or 405, and an upgrade on a hub path is
//!    admitted by the [`ServerState`] (path to [`Hub`], `AllowedOrigins`, `MaxConnections`,
//!    `MaxConnectionsPerIp`) and answered with 101.
//! 4. The connection driver (`driver.rs`) serves the WebSocket until it ends: it feeds the
//!    hub, writes what the hub queued for it (a bounded send queue per connection; a client
//!    that does not read is a slow consumer, closed with 1008), pings, and enforces the
//!    idle and write timeouts; it closes with 1001 at shutdown.
//!
//! ## The driver loop
//! A [`Hub`] owns one sans-IO [`Protocol`](rocket_proto::Protocol) (the Rocket
//! [`Engine`](rocket_proto::Engine), or a custom one). Every input, whichever task brings
//! it (a connection's frame, connect or disconnect, an operation's completion, a broadcast
//! from another node, the hub's timer), goes through the same few lines:
//!
//! ```text
//! lock the protocol
//! protocol.handle_*(input)                  // handle_timeout(runtime.now()) for the timer
//! if protocol.poll_timeout() moved earlier: wake the hub's timer task
//! lock the outboxes; protocol.drain_outputs(buffer); unlock the protocol
//! for output in buffer, in order, never waiting on a client:
//!     Send, Broadcast (the engine's, one output for all its recipients)
//!                => outbox.push(message)    // the same bytes for every recipient;
//!                   broadcasts in a row to the same recipients are joined and queued
//!                   to each once (`hub.rs`, `Run`);
//!                   an idle connection's task is not woken: the message is written
//!                   through to its socket after the dispatch, by the dispatching
//!                   thread and, for a large channel or a burst of messages, writer
//!                   threads on the other cores (`outbox.rs`, `Cork`, `writers.rs`)
//!     Close      => outbox.close(code, reason)
//!     Start      => to the client's driver: it runs the operation (argon2 off the
//!                   executor), holds the client's frames, then feeds the Completion
//!     AuthFailed => log
//! ```
//!
//! ## Threads
//! Everything runs on the runtime's tasks, with two exceptions: argon2 verifications go to
//! [`Runtime::unblock`], and the first broadcast that reaches 32 or more idle connections,
//! or the first burst of messages a connection's task read in a row, starts the process's
//! writer threads (one per core beyond the first, at most 7; none on one core), which only
//! ever make non-blocking writes of what the hub queued, beside or instead of the thread
//! that dispatched it (`writers.rs`).
//!
//! ## Cluster
//! With a `Cluster` setting ([`ClusterConfig`]) the hubs' engines run in cluster mode: their
//! `Watch`/`Unwatch`/`Publish` outputs and `Publish` operations go, in order, to one
//! backplane task per server (`cluster.rs`), which keeps one RESP3 connection to Redis,
//! and the messages other nodes publish come back as inputs
//! ([`Hub::handle_remote`]). Without the setting none of it exists.
//!
//! ## Reload
//! [`ServerState::reload`] applies a new [`Config`] to a running server without closing a
//! connection: each hub's users and engine limits (through
//! [`Hub::reload`] and the engine's `handle_reload`) and its `AllowedOrigins`. Adding or
//! removing hubs and the settings read at startup (address, TLS, log, transport limits)
//! need a restart; the [`ReloadReport`] lists them.
//!
//! Time reaches the server only through [`Runtime::now`], so a runtime with a controlled
//! clock controls every timer. Client tokens are 128 bits from the operating system's
//! secure generator.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod cluster;
pub mod config;
mod driver;
mod frontend;
mod gate;
mod http;
mod hub;
mod liveness;
mod metrics;
mod origin;
mod outbox;
mod runtime;
mod secrets;
mod state;
mod static_files;
mod tls;
mod verifier;
mod wire;
mod writers;

pub use config::{ClusterConfig, Config, HubConfig, Limits};
pub use frontend::{AsSocket, Server, ServerHandle, bind_listener, serve_socket};
pub use hub::Hub;
pub use outbox::DirectSocket;
pub use runtime::{Runtime, Task};
pub use secrets::{hash_secret, verify_phc};
pub use state::{HubReload, ReloadReport, ServerState};
pub use static_files::{StaticFile, StaticFiles};
pub use tls::TlsError;
pub use wire::Wire;
// The public signatures carry rustls and tungstenite types: adapters build on these.
pub use {rustls, tungstenite};
