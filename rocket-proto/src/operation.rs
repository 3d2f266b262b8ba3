//! Asynchronous work the engine asks its driver to do: an [`Operation`] goes out in
//! [`Output::Start`](crate::Output::Start) under an [`OpId`], and its result comes back in
//! with [`Protocol::handle_completion`](crate::Protocol::handle_completion) as a
//! [`Completion`] under the same id.

use std::fmt;
use std::sync::Arc;

/// Names one operation the engine started, unique for the engine's life. The engine picks
/// it (from a counter); the driver hands it back with the operation's [`Completion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Work that the engine cannot do itself (it is slow, or needs IO) and asks its driver to
/// run, off the engine's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Check a secret against an argon2 PHC hash (deliberately slow: run it where blocking
    /// is allowed). Completes with [`Completion::SecretVerified`].
    VerifySecret(Verification),
    /// Cluster only: send the publication to the other nodes that hold its topic, in order
    /// after every publication asked for before, and find out whether any node held it (a
    /// channel or client this node does not hold). Completes with
    /// [`Completion::Published`].
    Publish(crate::Publication),
    /// Cluster, on a hub with `History`, `Presence` or `JoinLeave`: enter a channel through
    /// the shared store (see [`Join`](crate::Join)). Completes with
    /// [`Completion::Joined`] when its marker arrives, or [`Completion::Unavailable`].
    Join(crate::Join),
    /// Cluster, on a History hub: read the channel's last `limit` kept events (all for 0).
    /// Completes with [`Completion::History`] or [`Completion::Unavailable`].
    History {
        /// The channel.
        channel: std::sync::Arc<str>,
        /// How many of the last events (0: all).
        limit: u64,
    },
    /// Cluster, on a Presence hub: read who is subscribed to the channel on every node.
    /// Completes with [`Completion::Presence`] or [`Completion::Unavailable`].
    Presence(std::sync::Arc<str>),
}

/// The result of an [`Operation`], fed back with
/// [`Protocol::handle_completion`](crate::Protocol::handle_completion).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// The result of [`Operation::VerifySecret`]: whether the secret matched the hash.
    SecretVerified(bool),
    /// The result of [`Operation::Publish`]: whether another node held the topic when the
    /// publication reached the backplane (`false` too when the backplane is unreachable).
    Published(bool),
    /// The marker of an [`Operation::Join`]: where the subscription begins.
    Joined(crate::Joined),
    /// The result of [`Operation::History`].
    History(crate::HistoryRead),
    /// The result of [`Operation::Presence`]: every subscriber's token and user.
    Presence(Vec<(crate::Token, String)>),
    /// The shared store of a cluster could not be reached or did not answer (an
    /// [`Operation::Publish`] of a History hub, [`Operation::Join`], [`Operation::History`],
    /// [`Operation::Presence`]); the client is answered `UNAVAILABLE`. When the link was
    /// lost after the request went out, the store may have carried it out: a History
    /// broadcast may have been delivered, and a join is undone with a leave. An [`Operation::Publish`] without history completes with
    /// `Published(false)` instead.
    Unavailable,
    /// A completion that no operation expects; it exists only in rocket-proto's own unit
    /// tests, to check that a completion of the wrong kind is ignored.
    #[cfg(test)]
    Unexpected,
}

/// A secret to check against an argon2 PHC hash, off the engine's thread (verification is
/// deliberately slow).
#[derive(Clone, PartialEq, Eq)]
pub struct Verification {
    /// The configured PHC hash.
    pub phc: Arc<str>,
    /// The secret the client sent.
    pub secret: String,
}

impl fmt::Debug for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verification { .. }") // never print secrets or hashes
    }
}
