//! # rocket-server: what Rocket's frontends share
//!
//! `rocket-tokio` and `rocket-async-std` are thin: they accept sockets, run the WebSocket
//! handshake on their runtime, and hand each upgraded connection to
//! [`serve_connection`]. Everything that does not depend on the runtime lives here, once:
//!
//! - [`Service`]: the hubs built from a [`Config`](rocket_proto::Config), request path to
//!   hub routing (404), `AllowedOrigins` (403), `MaxConnections` and `MaxConnectionsPerIp`
//!   (503), the tungstenite `WebSocketConfig`, and graceful shutdown (1001);
//! - [`Hub`]: one [`Protocol`](rocket_proto::Protocol) shared by many connections, with
//!   ordered, non-blocking dispatch of its outputs;
//! - [`Outbox`]: a connection's bounded send queue and the slow-consumer policy;
//! - [`serve_connection`]: the per-connection loop over the `futures` `Stream`/`Sink`
//!   traits, with pings, idle timeout and close codes; a runtime supplies only a timer and a
//!   blocking pool ([`Runtime`]), used for argon2 verification of PHC secrets.
//!
//! Client tokens are 128 bits from the operating system's secure generator
//! ([`random_token`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admission;
mod driver;
mod frontend;
pub mod http;
mod hub;
mod liveness;
mod metered;
mod outbox;
mod runtime;
mod secrets;
mod service;
mod tls;

pub use admission::{Full, Gate, Permit};
pub use driver::serve_connection;
pub use frontend::{AsSocket, LISTEN_BACKLOG, Running, Server, bind_listener, serve_socket};
pub use hub::{Hub, random_token};
pub use metered::{Metered, WriteProgress};
pub use outbox::{End, Next, Outbox, Overflow};
pub use runtime::{Runtime, Task};
pub use rustls;
pub use secrets::{MAX_CONCURRENT_VERIFICATIONS, hash_secret, verify_phc};
pub use service::{Admission, PendingHandshake, READ_BUFFER_BYTES, Refusal, Service};
pub use tls::{TlsError, load_tls_config};
pub use tungstenite;
