//! What a clustered engine exchanges with the other nodes of its cluster, through its
//! driver's backplane (Rocket's server uses Redis pub/sub). The engine stays sans-IO: it
//! says which [`Topic`]s this node holds ([`Output::Watch`](crate::Output::Watch),
//! [`Output::Unwatch`](crate::Output::Unwatch)) and what to send to the other nodes
//! ([`Output::Publish`](crate::Output::Publish), [`Operation::Publish`](crate::Operation::Publish));
//! the driver feeds what other nodes sent with
//! [`Engine::handle_remote`](crate::Engine::handle_remote).

use std::sync::Arc;

use crate::{HistoryConfig, Payload, Token};

/// Something a node holds and other nodes may send to: a channel with local subscribers,
/// or a local client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A channel: broadcasts to it.
    Channel(Arc<str>),
    /// A client, by its token: direct messages to it.
    Client(Token),
}

/// A message for the other nodes' holders of `topic`: the complete event as its
/// recipients receive it, encoded once by the node that accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Where it goes.
    pub topic: Topic,
    /// The event, byte for byte as every recipient receives it (on a History hub: before
    /// its offset and epoch are added, see `history`).
    pub payload: Payload,
    /// On a History hub: the channel's shared store gives the event the channel's next
    /// offset and its epoch (inserting `,"offset":N,"epoch":"E"` before the payload's final
    /// `}`), keeps it as this config says, and delivers it to every node holding the
    /// channel, *this one included*: the engine delivers nothing itself, so that every
    /// node sees the channel's events in offset order. Always an
    /// [`Operation::Publish`](crate::Operation::Publish); a driver may answer it at once
    /// when this node holds the channel (the store will keep it, since this node receives
    /// it), provided it then never loses it. `None` elsewhere.
    pub history: Option<HistoryConfig>,
}

/// Cluster, on a hub with `History`, `Presence` or `JoinLeave` ([`Operation::Join`](crate::Operation::Join)):
/// a client enters a channel through the shared store, which orders it among the
/// channel's events. The store, atomically and in this order: records the presence entry
/// (`presence`), sends `join` to the channel's holders, reads the channel's position and
/// the events after `since` (`history`), and sends the driver a marker on the channel
/// that carries them. The marker's place among the channel's events is where the client's
/// subscription begins: the driver feeds it as [`Completion::Joined`](crate::Completion::Joined)
/// at once, in the order of arrival, before the events that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Join {
    /// The channel.
    pub channel: Arc<str>,
    /// The client's token.
    pub token: Token,
    /// The client's user.
    pub user: Arc<str>,
    /// On a History hub: the hub's history settings, for a channel whose epoch must be made.
    pub history: Option<HistoryConfig>,
    /// The position the client asked to recover from: offset and epoch.
    pub since: Option<(u64, String)>,
    /// Record the client in the channel's presence (`Presence` or `JoinLeave` hubs).
    pub presence: bool,
    /// `{"join":…}` to send to the channel's holders (`JoinLeave`, a client not yet subscribed).
    pub join: Option<Payload>,
    /// `{"leave":…}` for the channel's holders should this node die without sending it
    /// (`JoinLeave`).
    pub leave: Option<Payload>,
}

/// Where a client's subscription begins ([`Completion::Joined`](crate::Completion::Joined)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Joined {
    /// The channel's last offset (0 on a hub without history).
    pub offset: u64,
    /// The channel's epoch (empty on a hub without history).
    pub epoch: String,
    /// With `since`: `None` if the missed events could not all be recovered, else the
    /// events after `since`, oldest first. `None` without `since`.
    pub recovery: Option<Option<Vec<Payload>>>,
}

impl Joined {
    /// A position with its recovery.
    pub fn new(offset: u64, epoch: String, recovery: Option<Option<Vec<Payload>>>) -> Self {
        Self {
            offset,
            epoch,
            recovery,
        }
    }
}

/// A channel's kept events, read from the shared store ([`Completion::History`](crate::Completion::History)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryRead {
    /// The channel's last offset (0 when nothing is kept).
    pub offset: u64,
    /// The channel's epoch (empty when nothing is kept).
    pub epoch: String,
    /// The last kept events asked for, oldest first.
    pub events: Vec<Payload>,
}

impl HistoryRead {
    /// A read of `events` at `offset` in `epoch`.
    pub fn new(offset: u64, epoch: String, events: Vec<Payload>) -> Self {
        Self {
            offset,
            epoch,
            events,
        }
    }
}

/// Cluster ([`Output::Left`](crate::Output::Left)): a client left a channel on a hub with
/// `Presence` or `JoinLeave`. The store removes its presence entry and, if the entry was
/// still there, sends `leave` to the channel's holders (this node included).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Departure {
    /// The channel.
    pub channel: Arc<str>,
    /// The client's token.
    pub token: Token,
    /// `{"leave":…}` for the channel's holders (`JoinLeave`).
    pub leave: Option<Payload>,
}

impl Departure {
    /// `token` left `channel`; `leave` is the event for its holders, if any.
    pub fn new(channel: Arc<str>, token: Token, leave: Option<Payload>) -> Self {
        Self {
            channel,
            token,
            leave,
        }
    }
}

/// A local subscription as the shared store's presence records it (see
/// [`Engine::presence_entries`](crate::Engine::presence_entries)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceEntry {
    /// The channel.
    pub channel: Arc<str>,
    /// The subscriber's token.
    pub token: Token,
    /// The subscriber's user.
    pub user: Arc<str>,
    /// `{"leave":…}` should this node die (`JoinLeave`).
    pub leave: Option<Payload>,
    /// `{"join":…}` should the store have sent its leave (`JoinLeave`).
    pub join: Option<Payload>,
}
