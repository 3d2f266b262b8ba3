//! A hub shared by many connection tasks: one [`Protocol`] value plus the outboxes of its
//! connections.
//!
//! Each event locks the protocol, feeds it, drains its outputs, then takes the dispatch
//! lock *before* releasing the protocol lock and hands the outputs to the outboxes. The
//! handoff keeps outputs in the order the protocol produced them (so every subscriber sees
//! a channel's broadcasts in acceptance order) while the next event can already run in the
//! protocol. Dispatch never waits on a client: a full outbox makes a slow consumer.
//!
//! The outputs pass through one buffer owned by the hub (behind the dispatch lock), not one
//! per connection: idle connections hold no output buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rocket_proto::{
    ClientId, Completion, ConnectError, Frame, OpId, Operation, Output, Payload, Protocol, Token,
};
use tungstenite::Message;
use tungstenite::protocol::frame::Utf8Bytes;

use crate::outbox::Outbox;

/// One hub: a request path served by one protocol instance.
pub struct Hub {
    path: String,
    protocol: Mutex<Box<dyn Protocol>>,
    peers: Mutex<Peers>,
    next_id: AtomicU64,
}

/// What the dispatch lock guards: the connections' outboxes and the output buffer.
#[derive(Default)]
struct Peers {
    outboxes: HashMap<ClientId, Arc<Outbox>>,
    outputs: Vec<Output>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub on `path` serving `protocol`.
    pub fn new(path: impl Into<String>, protocol: Box<dyn Protocol>) -> Self {
        Self {
            path: path.into(),
            protocol: Mutex::new(protocol),
            peers: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Registers a connection whose outbound messages go to `outbox`, and tells the
    /// protocol (which usually queues a greeting).
    pub fn connect(&self, token: Token, outbox: Arc<Outbox>) -> Result<ClientId, ConnectError> {
        let id = ClientId(self.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.peers).outboxes.insert(id, outbox);
        let mut result = Ok(id);
        let started = self.run(None, |p| result = p.handle_connect(id, token).map(|()| id));
        debug_assert!(started.is_none(), "nothing to run before the first frame");
        if result.is_err() {
            lock(&self.peers).outboxes.remove(&id);
        }
        result
    }

    /// A message from `client`. Returns the operation the protocol started on `client`'s
    /// behalf, if any: the caller must run it and report its result with
    /// [`handle_completion`](Self::handle_completion) before feeding `client`'s next frame.
    pub fn handle_frame(&self, client: ClientId, frame: Frame<'_>) -> Option<(OpId, Operation)> {
        self.run(Some(client), |p| p.handle_frame(client, frame))
    }

    /// The result of operation `op`, which `client`'s driver ran. Returns the next
    /// operation started on `client`'s behalf, if any, as [`handle_frame`](Self::handle_frame).
    pub fn handle_completion(
        &self,
        client: ClientId,
        op: OpId,
        completion: Completion,
    ) -> Option<(OpId, Operation)> {
        self.run(Some(client), |p| p.handle_completion(op, completion))
    }

    /// `client`'s connection is gone.
    pub fn disconnect(&self, client: ClientId) {
        let _ = self.run(None, |p| p.handle_disconnect(client));
        lock(&self.peers).outboxes.remove(&client);
    }

    /// Asks every connection to flush and close with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for outbox in lock(&self.peers).outboxes.values() {
            outbox.close(code, reason);
        }
    }

    /// Live connections on this hub.
    pub fn connection_count(&self) -> usize {
        lock(&self.peers).outboxes.len()
    }

    /// Feeds one input, then dispatches its outputs. `caller` is the connection whose
    /// input it is: an operation started on its behalf is returned for it to run.
    fn run(
        &self,
        caller: Option<ClientId>,
        input: impl FnOnce(&mut dyn Protocol),
    ) -> Option<(OpId, Operation)> {
        let mut protocol = lock(&self.protocol);
        input(&mut **protocol);
        let mut peers = lock(&self.peers);
        let Peers { outboxes, outputs } = &mut *peers;
        protocol.drain_outputs(outputs);
        drop(protocol);
        dispatch(&self.path, caller, outboxes, outputs)
    }
}

/// Carries out `outputs`; returns the operation started on behalf of `caller`, whose
/// driver runs it.
fn dispatch(
    hub: &str,
    caller: Option<ClientId>,
    peers: &HashMap<ClientId, Arc<Outbox>>,
    outputs: &mut Vec<Output>,
) -> Option<(OpId, Operation)> {
    let mut started = None;
    // Consecutive sends of one broadcast share a payload: convert it to a message once.
    let mut last: Option<(Payload, Message)> = None;
    for output in outputs.drain(..) {
        match output {
            Output::Send { client, payload } => {
                let Some(outbox) = peers.get(&client) else {
                    continue;
                };
                let message = match &last {
                    Some((p, m)) if same_bytes(p, &payload) => m.clone(),
                    _ => {
                        let m = to_message(&payload);
                        last = Some((payload, m.clone()));
                        m
                    }
                };
                // On overflow the connection's driver closes it and logs why.
                let _ = outbox.push(message);
            }
            Output::Close {
                client,
                code,
                reason,
            } => {
                if let Some(outbox) = peers.get(&client) {
                    outbox.close(code.0, reason);
                }
            }
            Output::Start {
                client,
                op,
                operation,
            } if Some(client) == caller && started.is_none() => {
                tracing::trace!(%client, %op, "starting an operation");
                started = Some((op, operation));
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
            other => tracing::error!(?other, "unsupported protocol output ignored"),
        }
    }
    started
}

fn same_bytes(a: &Payload, b: &Payload) -> bool {
    let (a, b) = (a.bytes(), b.bytes());
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The WebSocket message for a payload.
fn to_message(payload: &Payload) -> Message {
    if payload.is_text() {
        // Text payloads are UTF-8 by construction; the check runs once per broadcast.
        Message::Text(Utf8Bytes::try_from(payload.bytes().clone()).expect("text payload is UTF-8"))
    } else {
        Message::Binary(payload.bytes().clone())
    }
}

/// Draws a fresh client token from the operating system's secure generator.
pub fn random_token() -> Token {
    let mut bytes = [0u8; 16];
    // Without OS randomness no token can be safe; the server cannot run correctly.
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    Token::from_bytes(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Protocols are written not to panic; if one did, its state is still the best we have.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
