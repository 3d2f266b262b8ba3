//! The publish API (PROTOCOL.md, "Publish API"): `POST /api/broadcast` and
//! `POST /api/direct` for backends that publish without holding a WebSocket.
//!
//! The HTTP front has already answered `413` for a body over `MaxMessageBytes` and read
//! the body. Here the checks run in the protocol's order: JSON shape (`400`), hub (`404
//! INVALID_HUB`), credentials (`401`, HTTP Basic with a user of the hub, verified exactly
//! like `authenticate`: PHC hashes off the executor, through the same queue as WebSocket
//! logins), permission (`403`), target (`404`). The publish itself is an input of the
//! hub's engine, so its deliveries are dispatched like a WebSocket broadcast's, into the
//! HTTP connection's cork: the requests a client pipelined, read in a row, are written as
//! one burst (`frontend.rs`, `hub::Cork`).

use std::net::IpAddr;

use base64::Engine as _;
use rocket_proto::{ErrorCode, Publish, PublishKind, PublishStep};
use tungstenite::http::{HeaderValue, StatusCode};

use crate::Runtime;
use crate::hub::Cork;
use crate::state::ServerState;

/// The answer to one publish.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The JSON body.
    pub(crate) body: String,
    /// The request presented credentials that failed (it counts toward `MaxFailedAuth`).
    pub(crate) auth_failed: bool,
}

impl Answer {
    fn error(code: ErrorCode) -> Self {
        let status = match code {
            ErrorCode::InvalidPayload => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidUser | ErrorCode::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::InvalidChannel | ErrorCode::InvalidClient => StatusCode::NOT_FOUND,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            // Publishing has no other error; keep the protocol's answer if one appears.
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            body: format!(r#"{{"err":"{}"}}"#, code.name()),
            auth_failed: matches!(code, ErrorCode::InvalidUser | ErrorCode::InvalidCredentials),
        }
    }
}

/// Runs one publish of `kind` with `body` and the request's `Authorization` header,
/// leaving its deliveries in `cork`, which it flushes before it waits (for a verification
/// or for the other nodes of a cluster).
pub(crate) async fn publish(
    state: &ServerState,
    runtime: &dyn Runtime,
    peer: IpAddr,
    kind: PublishKind,
    authorization: Option<&HeaderValue>,
    body: &[u8],
    cork: &mut Cork,
) -> Answer {
    let publish = match Publish::parse(kind, body) {
        Ok(publish) => publish,
        Err(code) => return Answer::error(code),
    };
    let Some(hub) = state.hub(publish.hub()).filter(|h| h.stats().is_some()) else {
        return Answer {
            status: StatusCode::NOT_FOUND,
            body: r#"{"err":"INVALID_HUB"}"#.into(),
            auth_failed: false,
        };
    };
    let Some((user, secret)) = authorization.and_then(basic_credentials) else {
        hub.counters().api_auth_failed();
        return Answer::error(ErrorCode::InvalidUser);
    };
    let mut step = hub
        .with_engine(cork, |engine| {
            engine.handle_publish(&publish, &user, &secret)
        })
        .expect("a Rocket hub");
    if let PublishStep::Verify(verification) = step {
        let phc = std::sync::Arc::clone(&verification.phc);
        cork.flush();
        let ok = state.verify(runtime, peer, verification).await;
        step = hub
            .with_engine(cork, |engine| {
                engine.handle_publish_verified(&publish, &user, &phc, ok)
            })
            .expect("a Rocket hub");
    }
    let result = match step {
        PublishStep::Done(result) => result,
        // A cluster node without a local holder of the target asks the other nodes.
        PublishStep::Publish(publication) => {
            cork.flush();
            let reached = hub.publish_and_ask(&publication).await;
            hub.with_engine(cork, |engine| match reached {
                Some(reached) => engine.handle_publish_published(&publication, reached),
                None => engine.handle_publish_unavailable(&publication),
            })
            .expect("a Rocket hub")
        }
        // Verified already: the engine asks for one verification at most.
        _ => Err(ErrorCode::InvalidCredentials),
    };
    match result {
        Ok(reply) => Answer {
            status: StatusCode::OK,
            body: reply.as_text().unwrap_or_default().to_owned(),
            auth_failed: false,
        },
        Err(code) => {
            if matches!(code, ErrorCode::InvalidUser | ErrorCode::InvalidCredentials) {
                tracing::info!(%peer, hub = hub.path(), user, error = code.name(), "publish API: authentication failed");
            }
            Answer::error(code)
        }
    }
}

/// `user` and `secret` of an HTTP Basic `Authorization` header; `None` when it is absent
/// or malformed.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn basic_credentials_are_decoded_strictly() {
        // "backend:se:cret" — the secret may contain ':'.
        let h = header("Basic YmFja2VuZDpzZTpjcmV0");
        assert_eq!(
            basic_credentials(&h),
            Some(("backend".into(), "se:cret".into()))
        );
        assert_eq!(
            basic_credentials(&header("basic   dTo=")),
            Some(("u".into(), String::new()))
        );
        for bad in [
            "Bearer dTo=",
            "Basic",
            "Basic !!!",
            "Basic dQ==", // "u": no ':'
            "Basic /w==", // not UTF-8
        ] {
            assert_eq!(basic_credentials(&header(bad)), None, "{bad}");
        }
    }

    #[test]
    fn errors_map_to_their_status() {
        for (code, status) in [
            (ErrorCode::InvalidPayload, 400),
            (ErrorCode::InvalidUser, 401),
            (ErrorCode::InvalidCredentials, 401),
            (ErrorCode::AccessDenied, 403),
            (ErrorCode::InvalidChannel, 404),
            (ErrorCode::InvalidClient, 404),
            (ErrorCode::Unavailable, 503),
        ] {
            let a = Answer::error(code);
            assert_eq!(a.status.as_u16(), status, "{code:?}");
            assert_eq!(a.body, format!(r#"{{"err":"{}"}}"#, code.name()));
        }
    }
}
