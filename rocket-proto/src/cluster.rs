//! What a clustered engine exchanges with the other nodes of its cluster, through its
//! driver's backplane (Rocket's server uses Redis pub/sub). The engine stays sans-IO: it
//! says which [`Topic`]s this node holds ([`Output::Watch`](crate::Output::Watch),
//! [`Output::Unwatch`](crate::Output::Unwatch)) and what to send to the other nodes
//! ([`Output::Publish`](crate::Output::Publish), [`Operation::Publish`](crate::Operation::Publish));
//! the driver feeds what other nodes sent with
//! [`Engine::handle_remote`](crate::Engine::handle_remote).

use std::sync::Arc;

use crate::{Payload, Token};

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
    /// The event, byte for byte as every recipient receives it.
    pub payload: Payload,
}
