//! Parsing a client's text frame into a [`Request`]. Anything that is not a valid request
//! is `None`, which the engine answers with `INVALID_PAYLOAD`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Longest `user`, `channel` or `event` name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest nesting of objects and arrays in a request (the request object is level 1).
pub const MAX_NESTING: usize = 128;

/// A well-formed request, borrowing from the frame's text where it can.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    Authenticate {
        user: Cow<'a, str>,
        secret: Cow<'a, str>,
    },
    Subscribe {
        channel: Cow<'a, str>,
        /// `since`, read only on a History hub (elsewhere it is an ignored field).
        since: Option<&'a RawValue>,
    },
    Unsubscribe {
        channel: Cow<'a, str>,
    },
    Broadcast {
        event: Cow<'a, str>,
        channel: Cow<'a, str>,
        data: Option<&'a RawValue>,
    },
    Direct {
        event: Cow<'a, str>,
        client: Cow<'a, str>,
        data: Option<&'a RawValue>,
    },
    /// Only a History hub knows this action.
    History {
        channel: Cow<'a, str>,
        /// `None` or 0: everything kept.
        limit: Option<u64>,
    },
    /// Only a Presence hub knows this action.
    Presence {
        channel: Cow<'a, str>,
    },
    Logout,
    Disconnect,
}

/// The position a client recovers from: `{"offset":15,"epoch":"E"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Since<'a> {
    pub(crate) offset: u64,
    #[serde(borrow)]
    pub(crate) epoch: Cow<'a, str>,
}

impl<'a> Since<'a> {
    /// Parses `since`; a mistyped or incomplete value is `None` (`INVALID_PAYLOAD`).
    pub(crate) fn parse(raw: &'a RawValue) -> Option<Self> {
        serde_json::from_str(raw.get()).ok()
    }
}

#[cfg(test)]
impl PartialEq for Request<'_> {
    fn eq(&self, other: &Self) -> bool {
        // RawValue has no PartialEq; compare its text.
        format!("{self:?}") == format!("{other:?}")
    }
}

impl<'a> Request<'a> {
    /// Parses one text frame: exactly one JSON object with exactly one known action key,
    /// names of 1..=255 bytes, nesting of at most [`MAX_NESTING`] levels.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        if nesting_exceeds(text.as_bytes(), MAX_NESTING) {
            return None;
        }
        let request: Request<'a> = serde_json::from_str(text).ok()?;
        request.names_valid().then_some(request)
    }

    fn names_valid(&self) -> bool {
        let ok = |name: &str| !name.is_empty() && name.len() <= MAX_NAME_BYTES;
        match self {
            Request::Authenticate { user, .. } => ok(user),
            Request::Subscribe { channel, .. }
            | Request::Unsubscribe { channel }
            | Request::History { channel, .. }
            | Request::Presence { channel } => ok(channel),
            Request::Broadcast { event, channel, .. } => ok(event) && ok(channel),
            Request::Direct { event, .. } => ok(event),
            Request::Logout | Request::Disconnect => true,
        }
    }
}

/// Whether objects and arrays nest deeper than `max` levels anywhere in `json`. serde_json
/// skips ignored fields and raw values without a depth limit, so this runs first.
pub(crate) fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Action {
    Authenticate,
    Subscribe,
    Unsubscribe,
    Broadcast,
    Direct,
    Logout,
    Disconnect,
    History,
    Presence,
}

#[derive(Deserialize)]
struct Authenticate<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    secret: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ChannelBody<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
}

#[derive(Deserialize)]
struct SubscribeBody<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HistoryBody<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct Broadcast<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Direct<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    client: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// `data` is optional, and `"data": null` is present (and forwarded as `null`).
fn present<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The value of `logout` and `disconnect`: `true` or an object whose fields are ignored.
struct Flag;

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FlagVisitor;
        impl<'de> Visitor<'de> for FlagVisitor {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or an object")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                if v {
                    Ok(Flag)
                } else {
                    Err(E::invalid_value(de::Unexpected::Bool(v), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flag, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Flag)
            }
        }
        d.deserialize_any(FlagVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Request<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RequestVisitor<'a> {
            type Value = Request<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with exactly one action key")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request<'a>, A::Error> {
                let action: Action = map
                    .next_key()?
                    .ok_or_else(|| de::Error::custom("empty request"))?;
                let request = match action {
                    Action::Authenticate => {
                        let b: Authenticate<'a> = map.next_value()?;
                        Request::Authenticate {
                            user: b.user,
                            secret: b.secret,
                        }
                    }
                    Action::Subscribe => {
                        let b: SubscribeBody<'a> = map.next_value()?;
                        Request::Subscribe {
                            channel: b.channel,
                            since: b.since,
                        }
                    }
                    Action::History => {
                        let b: HistoryBody<'a> = map.next_value()?;
                        Request::History {
                            channel: b.channel,
                            limit: b.limit,
                        }
                    }
                    Action::Presence => Request::Presence {
                        channel: map.next_value::<ChannelBody<'a>>()?.channel,
                    },
                    Action::Unsubscribe => Request::Unsubscribe {
                        channel: map.next_value::<ChannelBody<'a>>()?.channel,
                    },
                    Action::Broadcast => {
                        let b: Broadcast<'a> = map.next_value()?;
                        Request::Broadcast {
                            event: b.event,
                            channel: b.channel,
                            data: b.data,
                        }
                    }
                    Action::Direct => {
                        let b: Direct<'a> = map.next_value()?;
                        Request::Direct {
                            event: b.event,
                            client: b.client,
                            data: b.data,
                        }
                    }
                    Action::Logout => {
                        map.next_value::<Flag>()?;
                        Request::Logout
                    }
                    Action::Disconnect => {
                        map.next_value::<Flag>()?;
                        Request::Disconnect
                    }
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a request has exactly one key"));
                }
                Ok(request)
            }
        }
        d.deserialize_map(RequestVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Request<'_> {
        Request::parse(text).unwrap_or_else(|| panic!("should parse: {text}"))
    }

    #[test]
    fn parses_every_action() {
        assert_eq!(
            ok(r#"{"authenticate":{"user":"u","secret":""}}"#),
            Request::Authenticate {
                user: "u".into(),
                secret: "".into()
            }
        );
        assert_eq!(
            ok(r#"{"subscribe":{"channel":"c","x":1}}"#),
            Request::Subscribe {
                channel: "c".into(),
                since: None
            }
        );
        assert_eq!(
            ok(r#"{"unsubscribe":{"channel":"c"}}"#),
            Request::Unsubscribe {
                channel: "c".into()
            }
        );
        match ok(r#"{"broadcast":{"event":"e","channel":"c","data":null}}"#) {
            Request::Broadcast { data: Some(d), .. } => assert_eq!(d.get(), "null"),
            other => panic!("{other:?}"),
        }
        match ok(r#"{"broadcast":{"event":"e","channel":"c"}}"#) {
            Request::Broadcast { data: None, .. } => {}
            other => panic!("{other:?}"),
        }
        match ok(r#"{"direct":{"event":"e","client":"","data":{"a":[1,2]}}}"#) {
            Request::Direct {
                client,
                data: Some(d),
                ..
            } => {
                assert_eq!(client, "");
                assert_eq!(d.get(), r#"{"a":[1,2]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ok(r#"{"logout":true}"#), Request::Logout);
        assert_eq!(ok(r#"{"logout":{"why":[1]}}"#), Request::Logout);
        assert_eq!(ok(r#" {"disconnect" : {}} "#), Request::Disconnect);
        assert_eq!(
            ok(r#"{"subscribe":{"channel":"\u00e9\n"}}"#),
            Request::Subscribe {
                channel: "é\n".into(),
                since: None
            }
        );
        assert_eq!(
            ok(r#"{"subsc\u0072ibe":{"channel":"c"}}"#),
            Request::Subscribe {
                channel: "c".into(),
                since: None
            }
        );
        match ok(r#"{"subscribe":{"channel":"c","since":{"offset":3,"epoch":"e"}}}"#) {
            Request::Subscribe { since: Some(s), .. } => {
                let s = Since::parse(s).unwrap();
                assert_eq!((s.offset, &*s.epoch), (3, "e"));
            }
            other => panic!("{other:?}"),
        }
        match ok(r#"{"subscribe":{"channel":"c","since":5}}"#) {
            Request::Subscribe { since: Some(s), .. } => assert!(Since::parse(s).is_none()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ok(r#"{"history":{"channel":"c","limit":2}}"#),
            Request::History {
                channel: "c".into(),
                limit: Some(2)
            }
        );
        assert_eq!(
            ok(r#"{"presence":{"channel":"c"}}"#),
            Request::Presence {
                channel: "c".into()
            }
        );
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(256);
        let bad = [
            "",
            "null",
            "[]",
            "{}",
            "\"subscribe\"",
            "{\"subscribe\":{\"channel\":\"c\"}",
            "tru",
            r#"{"subscribe":{"channel":"c"}} x"#,
            r#"{"subscribe":{"channel":"c"},"logout":true}"#,
            r#"{"logout":true,"logout":true}"#,
            r#"{"publish":{"channel":"c"}}"#,
            r#"{"Subscribe":{"channel":"c"}}"#,
            r#"{"subscribe":{}}"#,
            r#"{"subscribe":{"channel":""}}"#,
            r#"{"subscribe":{"channel":5}}"#,
            r#"{"subscribe":{"channel":null}}"#,
            r#"{"subscribe":"c"}"#,
            r#"{"subscribe":{"channel":"a","channel":"b"}}"#,
            r#"{"authenticate":{"user":"u"}}"#,
            r#"{"authenticate":{"user":"","secret":""}}"#,
            r#"{"broadcast":{"channel":"c","data":1}}"#,
            r#"{"broadcast":{"event":"e","channel":"c","data":}}"#,
            r#"{"direct":{"event":"e","data":1}}"#,
            r#"{"direct":{"event":"e","client":1}}"#,
            r#"{"logout":false}"#,
            r#"{"logout":1}"#,
            r#"{"logout":null}"#,
            r#"{"disconnect":"yes"}"#,
            r#"{"history":{"channel":"c","limit":-1}}"#,
            r#"{"history":{"channel":"c","limit":"2"}}"#,
            r#"{"history":{}}"#,
            r#"{"presence":{"channel":""}}"#,
            "{\"subscribe\":{\"channel\":\"a\u{0}\"}}",
        ];
        for text in bad {
            assert!(Request::parse(text).is_none(), "should reject: {text}");
        }
        assert!(Request::parse(&format!(r#"{{"subscribe":{{"channel":"{long}"}}}}"#)).is_none());
        assert!(
            Request::parse(&format!(
                r#"{{"subscribe":{{"channel":"{}"}}}}"#,
                &long[1..]
            ))
            .is_some()
        );
    }

    #[test]
    fn nesting_limit_covers_data_and_ignored_fields() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // The request object and the action object are levels 1 and 2.
        let req = |n| {
            format!(
                r#"{{"broadcast":{{"event":"e","channel":"c","data":{}}}}}"#,
                nest(n)
            )
        };
        assert!(Request::parse(&req(126)).is_some());
        assert!(Request::parse(&req(127)).is_none());
        assert!(Request::parse(&req(10_000)).is_none());
        let ignored = format!(r#"{{"subscribe":{{"channel":"c","x":{}}}}}"#, nest(10_000));
        assert!(Request::parse(&ignored).is_none());
        // Brackets inside strings do not count.
        let quoted = format!(r#"{{"subscribe":{{"channel":"{}"}}}}"#, "[".repeat(200));
        assert!(Request::parse(&quoted).is_some());
        let escaped = format!(r#"{{"subscribe":{{"channel":"\"{}"}}}}"#, "[".repeat(200));
        assert!(Request::parse(&escaped).is_some());
    }

    #[test]
    fn huge_numbers_are_forwarded_as_written() {
        match ok(r#"{"broadcast":{"event":"e","channel":"c","data":1e999999}}"#) {
            Request::Broadcast { data: Some(d), .. } => assert_eq!(d.get(), "1e999999"),
            other => panic!("{other:?}"),
        }
    }
}
