//! The small sans-IO trait every frontend drives. [`Engine`](crate::Engine) is the Rocket
//! implementation; any other type can be served by the same frontends.

use std::time::Instant;

use crate::{ClientId, Completion, ConnectError, Message, OpId, Output, Token};

/// A protocol served on one hub path: connection events and frames in, [`Output`]s out.
///
/// A frontend owns one value per hub and, for every event, calls one `handle_*` method and
/// then drains the outputs ([`poll_output`](Self::poll_output) until `None`, or
/// [`drain_outputs`](Self::drain_outputs)) before feeding the next event. Outputs for one
/// client must be carried out in the order they were produced.
///
/// Methods come in the kinds quinn-proto uses: inputs (`handle_*`: a connection opened or
/// closed, a frame, the completion of an operation, time passing) and outputs (`poll_*`:
/// what to do, and when the protocol next needs the time).
///
/// Time is an input: the engine never reads a clock. After every input the driver calls
/// [`poll_timeout`](Self::poll_timeout) and (re)arms one timer for the instant it returns;
/// when that timer fires it calls [`handle_timeout`](Self::handle_timeout) with the
/// driver's `now`, then drains the outputs as after any other input. Only
/// `handle_timeout` carries the time so far: a protocol that needs the instant of another
/// input (a TTL counted from a broadcast, say) must take it from the last `now` it was
/// given, as the [`Engine`](crate::Engine)'s history does: it asks, through `poll_timeout`,
/// for the time shortly after such an input, and `rocket-server` gives the engine the time
/// once when its hub timer starts.
///
/// ```
/// use rocket_proto::{ClientId, ConnectError, Message, Output, Payload, Protocol, Token};
///
/// /// Echoes every message back to its sender.
/// #[derive(Default)]
/// struct Echo { out: std::collections::VecDeque<Output> }
///
/// impl Protocol for Echo {
///     fn handle_connect(&mut self, _: ClientId, _: Token) -> Result<(), ConnectError> { Ok(()) }
///     fn handle_message(&mut self, client: ClientId, frame: Message<'_>) {
///         let payload = match frame {
///             Message::Text(t) => Payload::text(t),
///             Message::Binary(b) => Payload::binary(b.to_vec()),
///         };
///         self.out.push_back(Output::Send { client, payload });
///     }
///     fn handle_disconnect(&mut self, _: ClientId) {}
///     fn poll_output(&mut self) -> Option<Output> { self.out.pop_front() }
/// }
/// ```
pub trait Protocol: Send + 'static {
    /// A client finished the WebSocket handshake. `token` is its 128-bit public identity.
    /// An error means the frontend broke its own promise (a reused id or token); the
    /// frontend then drops the connection.
    fn handle_connect(&mut self, client: ClientId, token: Token) -> Result<(), ConnectError>;

    /// A complete message arrived from `client`.
    fn handle_message(&mut self, client: ClientId, frame: Message<'_>);

    /// The client's connection is gone (closed by either side, or dropped). Must be a no-op
    /// for a client the protocol already closed with [`Output::Close`].
    fn handle_disconnect(&mut self, client: ClientId);

    /// The result of the operation the protocol started as `op` ([`Output::Start`]). Must
    /// ignore an `op` it does not know or no longer expects (its client left meanwhile, say)
    /// and a completion of the wrong kind. The default ignores everything (for protocols
    /// that start no operations).
    fn handle_completion(&mut self, op: OpId, completion: Completion) {
        let _ = (op, completion);
    }

    /// Time passed: `now` is the driver's clock, at or after the instant
    /// [`poll_timeout`](Self::poll_timeout) returned (a driver may also call it earlier to
    /// tell the protocol the time; nothing is then due). Expire what is due; the outputs
    /// this produces are drained as after any other input. The default does nothing.
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// When the protocol next needs [`handle_timeout`](Self::handle_timeout), or `None`
    /// when it has no timer running. The answer may change after any `handle_*` call, so
    /// the driver asks again after each one and re-arms its timer when the instant moved.
    /// An instant in the past means "now". The default is `None` (no timers).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next output, or `None` when everything was drained.
    fn poll_output(&mut self) -> Option<Output>;

    /// Moves every pending output into `out`, in order.
    fn drain_outputs(&mut self, out: &mut Vec<Output>) {
        while let Some(o) = self.poll_output() {
            out.push(o);
        }
    }
}
