//! Publishes from backends over HTTP (`POST /api/broadcast`, `POST /api/direct`): the
//! request body, parsed and checked as strictly as a WebSocket request.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::reply::ErrorCode;
use crate::request::{MAX_NAME_BYTES, MAX_NESTING, nesting_exceeds};

/// Which endpoint a publish came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// `POST /api/broadcast`: `{"hub","channel","event","data"?}`.
    Broadcast,
    /// `POST /api/direct`: `{"hub","client","event","data"?}`.
    Direct,
}

/// A publish parsed from its body; run it with [`Engine::handle_publish`](crate::Engine::handle_publish)
/// on the engine of [`hub`](Self::hub).
#[derive(Debug)]
pub struct Publish {
    hub: String,
    pub(crate) target: Target,
    pub(crate) event: String,
    pub(crate) data: Option<Box<RawValue>>,
}

#[derive(Debug)]
pub(crate) enum Target {
    Channel(String),
    Client(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    hub: String,
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectBody {
    hub: String,
    client: String,
    event: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

impl Publish {
    /// Parses a request body: one JSON object with exactly the endpoint's fields, names of
    /// 1 to 255 bytes, nesting of at most [`MAX_NESTING`] levels. Anything else is
    /// `INVALID_PAYLOAD` (HTTP 400). `"data": null` is no data, as on the WebSocket.
    pub fn parse(kind: PublishKind, body: &[u8]) -> Result<Self, ErrorCode> {
        if nesting_exceeds(body, MAX_NESTING) {
            return Err(ErrorCode::InvalidPayload);
        }
        let text = std::str::from_utf8(body).map_err(|_| ErrorCode::InvalidPayload)?;
        let bad = |_| ErrorCode::InvalidPayload;
        let publish = match kind {
            PublishKind::Broadcast => {
                let b: BroadcastBody = serde_json::from_str(text).map_err(bad)?;
                Self {
                    hub: b.hub,
                    target: Target::Channel(b.channel),
                    event: b.event,
                    data: b.data,
                }
            }
            PublishKind::Direct => {
                let d: DirectBody = serde_json::from_str(text).map_err(bad)?;
                Self {
                    hub: d.hub,
                    target: Target::Client(d.client),
                    event: d.event,
                    data: d.data,
                }
            }
        };
        let ok = |name: &str| !name.is_empty() && name.len() <= MAX_NAME_BYTES;
        let names_ok = ok(&publish.event)
            && match &publish.target {
                Target::Channel(channel) => ok(channel),
                Target::Client(_) => true,
            };
        if names_ok {
            Ok(publish)
        } else {
            Err(ErrorCode::InvalidPayload)
        }
    }

    /// The hub path named in the body.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Which endpoint the publish is for.
    pub fn kind(&self) -> PublishKind {
        match self.target {
            Target::Channel(_) => PublishKind::Broadcast,
            Target::Client(_) => PublishKind::Direct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: PublishKind, body: &str) -> Result<Publish, ErrorCode> {
        Publish::parse(kind, body.as_bytes())
    }

    #[test]
    fn bodies_parse_with_and_without_data() {
        let p = parse(
            PublishKind::Broadcast,
            r#"{"hub":"/echo","channel":"c","event":"e","data":{"x":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(p.hub(), "/echo");
        assert_eq!(p.kind(), PublishKind::Broadcast);
        assert_eq!(p.data.as_deref().map(RawValue::get), Some(r#"{"x":[1,2]}"#));
        let p = parse(
            PublishKind::Direct,
            r#"{"hub":"/echo","client":"ab","event":"e"}"#,
        )
        .unwrap();
        assert_eq!(p.kind(), PublishKind::Direct);
        assert!(p.data.is_none());
        let p = parse(
            PublishKind::Direct,
            r#"{"hub":"/h","client":"ab","event":"e","data":null}"#,
        )
        .unwrap();
        assert!(
            p.data.is_none(),
            "null data is no data, as on the WebSocket"
        );
    }

    #[test]
    fn anything_else_is_invalid_payload() {
        let deep = format!(
            r#"{{"hub":"/h","channel":"c","event":"e","data":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let long = "x".repeat(256);
        for (kind, body) in [
            (PublishKind::Broadcast, "not json"),
            (PublishKind::Broadcast, "[]"),
            (PublishKind::Broadcast, r#"{"hub":"/h","event":"e"}"#),
            (PublishKind::Broadcast, r#"{"hub":"/h","channel":"c"}"#),
            (PublishKind::Broadcast, r#"{"channel":"c","event":"e"}"#),
            (
                PublishKind::Broadcast,
                r#"{"hub":"/h","channel":"","event":"e"}"#,
            ),
            (
                PublishKind::Broadcast,
                r#"{"hub":"/h","channel":"c","event":""}"#,
            ),
            (
                PublishKind::Broadcast,
                r#"{"hub":"/h","channel":"c","event":"e","extra":1}"#,
            ),
            (
                PublishKind::Broadcast,
                r#"{"hub":"/h","client":"t","event":"e"}"#,
            ),
            (
                PublishKind::Broadcast,
                r#"{"hub":1,"channel":"c","event":"e"}"#,
            ),
            (
                PublishKind::Broadcast,
                r#"{"hub":"/h","channel":"c","event":"e"} x"#,
            ),
            (
                PublishKind::Direct,
                r#"{"hub":"/h","channel":"c","event":"e"}"#,
            ),
            (PublishKind::Broadcast, deep.as_str()),
        ] {
            assert_eq!(
                parse(kind, body).unwrap_err(),
                ErrorCode::InvalidPayload,
                "{body}"
            );
        }
        let body = format!(r#"{{"hub":"/h","channel":"{long}","event":"e"}}"#);
        assert!(parse(PublishKind::Broadcast, &body).is_err());
        assert!(Publish::parse(PublishKind::Broadcast, b"{\"hub\":\"\xff\"}").is_err());
    }
}
