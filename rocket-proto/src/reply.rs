//! The wire text the engine sends: error names (defined here and nowhere else) and the
//! encoders for replies and deliveries.

use serde_json::value::RawValue;

use crate::{Payload, Token};

/// Every error a request can get, as `{"err":"NAME"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not a valid request.
    InvalidPayload,
    /// The session lacks the permission the action needs.
    AccessDenied,
    /// A per-client limit (subscriptions) is reached.
    LimitExceeded,
    /// `broadcast` to a channel with no subscribers.
    InvalidChannel,
    /// `direct` to a token no live client of this hub has.
    InvalidClient,
    /// `authenticate` as a user the hub does not have.
    InvalidUser,
    /// `authenticate` with the wrong secret.
    InvalidCredentials,
    /// Cluster: the store that holds the hub's shared state (history, presence) could not
    /// be reached or did not answer. Nothing happened, unless the link broke after the
    /// request went out (a broadcast may then have been delivered).
    Unavailable,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [Self; 8] = [
        Self::InvalidPayload,
        Self::AccessDenied,
        Self::LimitExceeded,
        Self::InvalidChannel,
        Self::InvalidClient,
        Self::InvalidUser,
        Self::InvalidCredentials,
        Self::Unavailable,
    ];

    /// The name on the wire, e.g. `INVALID_PAYLOAD`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidPayload => "INVALID_PAYLOAD",
            Self::AccessDenied => "ACCESS_DENIED",
            Self::LimitExceeded => "LIMIT_EXCEEDED",
            Self::InvalidChannel => "INVALID_CHANNEL",
            Self::InvalidClient => "INVALID_CLIENT",
            Self::InvalidUser => "INVALID_USER",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// The complete reply, `{"err":"NAME"}`, without allocating.
    pub const fn payload(self) -> Payload {
        Payload::from_static(match self {
            Self::InvalidPayload => r#"{"err":"INVALID_PAYLOAD"}"#,
            Self::AccessDenied => r#"{"err":"ACCESS_DENIED"}"#,
            Self::LimitExceeded => r#"{"err":"LIMIT_EXCEEDED"}"#,
            Self::InvalidChannel => r#"{"err":"INVALID_CHANNEL"}"#,
            Self::InvalidClient => r#"{"err":"INVALID_CLIENT"}"#,
            Self::InvalidUser => r#"{"err":"INVALID_USER"}"#,
            Self::InvalidCredentials => r#"{"err":"INVALID_CREDENTIALS"}"#,
            Self::Unavailable => r#"{"err":"UNAVAILABLE"}"#,
        })
    }
}

pub(crate) const LOGGED_OUT: Payload = Payload::from_static(r#"{"loggedOut":true}"#);

/// `{"key":"value"}` with `value` escaped as a JSON string.
pub(crate) fn keyed(key: &str, value: &str) -> Payload {
    let mut out = String::with_capacity(key.len() + value.len() + 8);
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":");
    push_json_string(&mut out, value);
    out.push('}');
    Payload::text(out)
}

/// The greeting, `{"connected":"<token>"}`.
pub(crate) fn connected(token: &Token) -> Payload {
    let hex = token.to_hex();
    keyed(
        "connected",
        std::str::from_utf8(&hex).expect("hex is ASCII"),
    )
}

/// A delivery: `{"event":E,"<route_key>":R,"data":D}`, `data` omitted when absent.
/// `route_key` is `channel` for broadcasts and `from` for direct messages.
pub(crate) fn event(event: &str, route_key: &str, route: &str, data: Option<&RawValue>) -> Payload {
    event_with(event, Some((route_key, route)), data)
}

/// A broadcast delivery on a History hub: [`event`]'s object with `"offset":N` and
/// `"epoch":"E"` appended.
pub(crate) fn event_at(
    event: &str,
    channel: &str,
    data: Option<&RawValue>,
    offset: u64,
    epoch: &str,
) -> Payload {
    let data_len = data.map_or(0, |d| d.get().len() + 8);
    let mut out = String::with_capacity(event.len() + channel.len() + data_len + 64);
    out.push_str("{\"event\":");
    push_json_string(&mut out, event);
    out.push_str(",\"channel\":");
    push_json_string(&mut out, channel);
    if let Some(data) = data {
        out.push_str(",\"data\":");
        out.push_str(data.get());
    }
    push_position(&mut out, offset, epoch);
    out.push('}');
    Payload::text(out)
}

/// `,"offset":N,"epoch":"E"`.
fn push_position(out: &mut String, offset: u64, epoch: &str) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, ",\"offset\":{offset},\"epoch\":");
    push_json_string(out, epoch);
}

/// Pushes `[e1,e2,…]`: the events' texts as they were delivered.
fn push_events<'a>(out: &mut String, events: impl Iterator<Item = &'a Payload>) {
    out.push('[');
    for (i, event) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Deliveries are text payloads built by this module.
        out.push_str(event.as_text().expect("events are text"));
    }
    out.push(']');
}

/// `{"subscribed":"c","offset":N,"epoch":"E"}`; with `recovery` (the client sent `since`)
/// also `"recovered":false` (`Some(None)`) or `"recovered":true,"events":[…]`.
pub(crate) fn subscribed_at<'a, I: Iterator<Item = &'a Payload>>(
    channel: &str,
    offset: u64,
    epoch: &str,
    recovery: Option<Option<I>>,
) -> Payload {
    let mut out = String::with_capacity(channel.len() + 64);
    out.push_str("{\"subscribed\":");
    push_json_string(&mut out, channel);
    push_position(&mut out, offset, epoch);
    match recovery {
        None => {}
        Some(None) => out.push_str(",\"recovered\":false"),
        Some(Some(events)) => {
            out.push_str(",\"recovered\":true,\"events\":");
            push_events(&mut out, events);
        }
    }
    out.push('}');
    Payload::text(out)
}

/// `{"history":{"channel":"c","offset":N,"epoch":"E","events":[…]}}`.
pub(crate) fn history<'a>(
    channel: &str,
    offset: u64,
    epoch: &str,
    events: impl Iterator<Item = &'a Payload>,
) -> Payload {
    let mut out = String::with_capacity(channel.len() + 64);
    out.push_str("{\"history\":{\"channel\":");
    push_json_string(&mut out, channel);
    push_position(&mut out, offset, epoch);
    out.push_str(",\"events\":");
    push_events(&mut out, events);
    out.push_str("}}");
    Payload::text(out)
}

/// `{"presence":{"channel":"c","clients":{"<token>":{"user":"u"},…}}}`.
pub(crate) fn presence<'a>(
    channel: &str,
    clients: impl Iterator<Item = (&'a Token, &'a str)>,
) -> Payload {
    let mut out = String::with_capacity(channel.len() + 64);
    out.push_str("{\"presence\":{\"channel\":");
    push_json_string(&mut out, channel);
    out.push_str(",\"clients\":{");
    for (i, (token, user)) in clients.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        // Hex digits are ASCII.
        out.push_str(std::str::from_utf8(&token.to_hex()).expect("hex is ASCII"));
        out.push_str("\":{\"user\":");
        push_json_string(&mut out, user);
        out.push('}');
    }
    out.push_str("}}}");
    Payload::text(out)
}

/// `{"join":{…}}` or `{"leave":{…}}` (`kind`) with `"channel"`, `"client"` and `"user"`.
pub(crate) fn join_leave(kind: &str, channel: &str, token: &Token, user: &str) -> Payload {
    let mut out = String::with_capacity(channel.len() + user.len() + 80);
    out.push_str("{\"");
    out.push_str(kind);
    out.push_str("\":{\"channel\":");
    push_json_string(&mut out, channel);
    out.push_str(",\"client\":\"");
    // Hex digits are ASCII.
    out.push_str(std::str::from_utf8(&token.to_hex()).expect("hex is ASCII"));
    out.push_str("\",\"user\":");
    push_json_string(&mut out, user);
    out.push_str("}}");
    Payload::text(out)
}

/// A direct message from the publish API: `{"event":E,"data":D}`, with no `from`.
pub(crate) fn event_unrouted(event: &str, data: Option<&RawValue>) -> Payload {
    event_with(event, None, data)
}

fn event_with(event: &str, route: Option<(&str, &str)>, data: Option<&RawValue>) -> Payload {
    let data_len = data.map_or(0, |d| d.get().len() + 8);
    let route_len = route.map_or(0, |(k, r)| k.len() + r.len() + 6);
    let mut out = String::with_capacity(event.len() + route_len + data_len + 16);
    out.push_str("{\"event\":");
    push_json_string(&mut out, event);
    if let Some((route_key, route)) = route {
        out.push_str(",\"");
        out.push_str(route_key);
        out.push_str("\":");
        push_json_string(&mut out, route);
    }
    if let Some(data) = data {
        out.push_str(",\"data\":");
        out.push_str(data.get());
    }
    out.push('}');
    Payload::text(out)
}

fn push_json_string(out: &mut String, s: &str) {
    // Fast path: nothing to escape.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a str into a String cannot fail.
        out.push_str(&serde_json::to_string(s).expect("a str serializes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_payloads_match_names() {
        for code in ErrorCode::ALL {
            let v: serde_json::Value = serde_json::from_slice(code.payload().as_bytes()).unwrap();
            assert_eq!(v, serde_json::json!({ "err": code.name() }));
        }
    }

    #[test]
    fn strings_are_escaped() {
        let p = keyed("subscribed", "a\"b\\c\n\u{1}é");
        let v: serde_json::Value = serde_json::from_slice(p.as_bytes()).unwrap();
        assert_eq!(v["subscribed"], "a\"b\\c\n\u{1}é");
        let raw = RawValue::from_string("[1, {\"x\": null}]".into()).unwrap();
        let p = event("e\"", "channel", "c", Some(&raw));
        assert_eq!(
            p.as_text().unwrap(),
            r#"{"event":"e\"","channel":"c","data":[1, {"x": null}]}"#
        );
        assert_eq!(
            event_at("e", "c\"", Some(&raw), 7, "ep").as_text().unwrap(),
            r#"{"event":"e","channel":"c\"","data":[1, {"x": null}],"offset":7,"epoch":"ep"}"#
        );
        let t = Token::from_bytes([0xab; 16]);
        let p = join_leave("join", "c", &t, "u\"");
        let v: serde_json::Value = serde_json::from_slice(p.as_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"join":{"channel":"c","client":"ab".repeat(16),"user":"u\""}})
        );
        let p = presence("c", [(&t, "u")].into_iter());
        let v: serde_json::Value = serde_json::from_slice(p.as_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"presence":{"channel":"c","clients":{"ab".repeat(16):{"user":"u"}}}})
        );
        assert_eq!(
            event("e", "from", "t", None).as_text().unwrap(),
            r#"{"event":"e","from":"t"}"#
        );
    }
}
