//! What crosses the engine's boundary: [`Message`]s in, [`Output`]s out, and the shared
//! [`Payload`] bytes they carry.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::ClientId;

/// One WebSocket message as a frontend read it from a socket (already defragmented and,
/// for text, already checked to be UTF-8 by the WebSocket library).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Bytes to send to a client as one WebSocket message. Cloning is O(1) and allocation-free
/// (a reference count), so a broadcast shares one encoding among all its recipients.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    bytes: Bytes,
    text: bool,
}

impl Payload {
    /// A text message. The bytes come from a `str`, so they are UTF-8.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            bytes: Bytes::from(text.into()),
            text: true,
        }
    }

    /// A text message from a static string (no allocation).
    pub const fn from_static(text: &'static str) -> Self {
        Self {
            bytes: Bytes::from_static(text.as_bytes()),
            text: true,
        }
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            text: false,
        }
    }

    /// Whether this is a text message (its bytes are then valid UTF-8).
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message bytes as a cheap, shareable handle.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The text of a text message; `None` for binary.
    pub fn as_text(&self) -> Option<&str> {
        // Text payloads are only built from `str`, so this never fails for them.
        self.text
            .then(|| std::str::from_utf8(&self.bytes).expect("text payloads are UTF-8"))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_text() {
            Some(text) => write!(f, "Text({text})"),
            None => write!(f, "Binary({} bytes)", self.bytes.len()),
        }
    }
}

/// A WebSocket close code (RFC 6455 §7.4) with the codes Rocket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the client asked to disconnect.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is shutting down, or the client was idle too long.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1007: a text message was not UTF-8.
    pub const INVALID_DATA: Self = Self(1007);
    /// 1008: a policy was violated (slow consumer, too many failed authentications).
    pub const POLICY: Self = Self(1008);
    /// 1009: a message exceeded `MaxMessageBytes`.
    pub const TOO_BIG: Self = Self(1009);
}

/// What the engine asks its frontend to do. Drained in order with
/// [`Protocol::poll_output`](crate::Protocol::poll_output).
///
/// A broadcast is one [`Output::Send`] per recipient, or, for a driver that asked for it
/// ([`Engine::set_whole_broadcasts`](crate::Engine::set_whole_broadcasts)), one
/// [`Output::Broadcast`] naming them all ([`Output::split`] takes it apart). Outputs are
/// moved one by one, so the enum is kept small (56 bytes on 64-bit targets): the rare,
/// large variants' contents are boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Queue `payload` to `client`, after everything queued to it before.
    Send {
        /// Recipient.
        client: ClientId,
        /// The message; shared with the other recipients of the same broadcast.
        payload: Payload,
    },
    /// Queue `payload` to each of `clients`, in that order, each after everything queued
    /// to it before: the same as one [`Output::Send`] per client, made once. The engine
    /// makes these only when asked to
    /// ([`Engine::set_whole_broadcasts`](crate::Engine::set_whole_broadcasts)); a custom
    /// protocol may make them too. A client may appear more than once (then it gets the
    /// payload that many times).
    Broadcast {
        /// Recipients, in order.
        clients: Arc<[ClientId]>,
        /// The message, the same for every recipient.
        payload: Payload,
    },
    /// Flush what is queued to `client`, then close it with `code` and `reason`. The engine
    /// has already forgotten the client; a later `handle_disconnect` for it is a no-op.
    Close {
        /// The client to close.
        client: ClientId,
        /// WebSocket close code.
        code: CloseCode,
        /// Close reason (at most 123 bytes).
        reason: Cow<'static, str>,
    },
    /// Run `operation` on behalf of `client`, then report its result with
    /// [`Protocol::handle_completion`](crate::Protocol::handle_completion) under `op`.
    /// Until then, feed no further frames from `client`: its replies must stay in order
    /// (the completion may produce the reply to the frame that started the operation).
    Start {
        /// The client on whose behalf the operation runs.
        client: ClientId,
        /// The operation's id, to hand back with its completion.
        op: crate::OpId,
        /// What to do (boxed: it is rare and large, and every [`Output`] is as large as
        /// its largest variant).
        operation: Box<crate::Operation>,
    },
    /// Cluster only: this node now holds `topic` (a channel got its first local subscriber,
    /// or a client connected). Receive what other nodes publish to it, in order, and feed
    /// each message with [`Engine::handle_remote`](crate::Engine::handle_remote).
    Watch(crate::Topic),
    /// Cluster only: this node no longer holds `topic` (a channel's last local subscriber
    /// left, or a client left).
    Unwatch(crate::Topic),
    /// Cluster only: send the publication to the other nodes that hold its topic, after
    /// every publication this engine asked for before (an [`Output::Publish`] or an
    /// [`Operation::Publish`](crate::Operation::Publish)), which keeps each publisher's
    /// order across nodes. Nothing to report back: the engine has answered the publisher.
    Publish(Box<crate::Publication>),
    /// Cluster, on a hub with `Presence` or `JoinLeave`: a client left a channel (see
    /// [`Departure`](crate::Departure)); send it in order with the rest. Nothing to report
    /// back.
    Left(Box<crate::Departure>),
    /// For the log only: `client` failed to authenticate as `user`. Nothing to send; the
    /// error reply is a separate [`Output::Send`].
    AuthFailed {
        /// The client.
        client: ClientId,
        /// The user name it tried (never the secret).
        user: String,
        /// `InvalidUser` or `InvalidCredentials`.
        error: crate::ErrorCode,
    },
}

// Outputs are moved one by one: keep them small (see the enum's docs).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Output>() <= 56);

impl Output {
    /// This output as a driver that queues per recipient sees it: an
    /// [`Output::Broadcast`] as one [`Output::Send`] per client, in order; any other
    /// output as it is.
    ///
    /// ```
    /// use rocket_proto::{ClientId, Output, Payload};
    /// let broadcast = Output::Broadcast {
    ///     clients: [ClientId(1), ClientId(2)].into(),
    ///     payload: Payload::text("hi"),
    /// };
    /// let sends: Vec<Output> = broadcast.split().collect();
    /// assert_eq!(sends.len(), 2);
    /// assert!(matches!(&sends[1], Output::Send { client: ClientId(2), .. }));
    /// ```
    pub fn split(self) -> impl Iterator<Item = Output> {
        let (one, each) = match self {
            Output::Broadcast { clients, payload } => (None, Some((clients, payload))),
            other => (Some(other), None),
        };
        let sends = each.into_iter().flat_map(|(clients, payload)| {
            (0..clients.len()).map(move |i| Output::Send {
                client: clients[i],
                payload: payload.clone(),
            })
        });
        one.into_iter().chain(sends)
    }
}
