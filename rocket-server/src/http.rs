//! The HTTP/1.1 front on the server's port: every accepted connection (after TLS, when it
//! is on) starts here. Its request heads are parsed once with `httparse`; a WebSocket
//! upgrade on a hub path is admitted ([`ServerState::admit`]) and answered with `101`, and the
//! connection then belongs to the hub; plain requests get their answer here, with
//! keep-alive (PROTOCOL.md, "HTTP on the same port"):
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` (or `HEAD`) | `200 {"status":"ok"}` |
//! | `GET /ready` | `200 {"status":"ready"}`; `503 {"status":"degraded",…}` while a cluster's Redis is unreachable; `503 {"status":"shutting down"}` during shutdown |
//! | `GET /metrics` | the Prometheus text format 0.0.4 ([`crate::metrics`]); `401` without the `MetricsToken` bearer token when one is set |
//! | `POST /api/broadcast`, `POST /api/direct` | the publish API ([`crate::api`]): `413` over `MaxMessageBytes`, `411` without a `Content-Length` |
//! | a hub path without `Upgrade: websocket` | `426 Upgrade Required`, `Upgrade: websocket` |
//! | an upgrade on a hub path | `101`, or `404`/`403`/`503` from admission |
//! | a known path with another method | `405` with `Allow` |
//! | a path under the static files' prefix, when given ([`crate::StaticFiles`]) | the file, `404`, `405` or `308` |
//! | anything else | `404` |
//!
//! Each request head must arrive within `HandshakeTimeoutMs` and fit in
//! [`MAX_HEAD_BYTES`]. Only the publish API reads a body; another request with a body is
//! answered and the connection closed.

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::http::{self, HeaderMap, HeaderName, HeaderValue, StatusCode};

use rocket_proto::PublishKind;

use crate::gate::Permit;
use crate::metrics::Refused;
use crate::state::{Admission, ServerState};

/// The largest request head (request line and headers) accepted: `431` beyond it.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers in one request: `431` beyond it.
const MAX_HEADERS: usize = 64;

/// Answers of the endpoints are never cached.
const NO_STORE: &str = "no-store";
const JSON: &str = "application/json";

/// How many bytes a connection reads at a time while in HTTP.
const READ_CHUNK: usize = 1024;

/// A request head, parsed.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) request: http::Request<()>,
    /// Bytes of the head in the read buffer.
    len: usize,
    /// HTTP/1.1 (keep-alive by default) rather than 1.0.
    http11: bool,
}

/// What one request leads to.
pub(crate) enum Step {
    /// Switch to WebSocket: write `response`, then hand the connection to the hub.
    Upgrade {
        admission: Admission,
        response: Vec<u8>,
    },
    /// Write `response`; then serve the next request on this connection if `keep_alive`.
    Respond { response: Vec<u8>, keep_alive: bool },
    /// A publish API request: read its body of `length` bytes, run it ([`crate::api`]),
    /// answer, and go on with the connection if `keep_alive`.
    Publish {
        kind: PublishKind,
        length: usize,
        authorization: Option<HeaderValue>,
        keep_alive: bool,
    },
}

/// Why the HTTP phase ended without an upgrade.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The client closed the connection between requests.
    Eof,
    /// Reading or writing failed.
    Io(io::Error),
}

impl From<io::Error> for Closed {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads one request head into `buf` (which may already hold bytes of it) and parses it.
/// `Ok(Err(response))` is a malformed or oversized head, answered and then closed.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Result<Head, Vec<u8>>, Closed> {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Complete(head) => return Ok(Ok(*head)),
                Parsed::Invalid(status, why) => return Ok(Err(plain(status, why, true, &[]))),
                Parsed::Partial if buf.len() >= MAX_HEAD_BYTES => {
                    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                    return Ok(Err(plain(status, "request head too large", true, &[])));
                }
                Parsed::Partial => {}
            }
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let n = stream.read(&mut buf[start..]).await;
        buf.truncate(start + *n.as_ref().unwrap_or(&0));
        match n? {
            0 if start == 0 => return Err(Closed::Eof),
            0 => return Err(Closed::Io(io::ErrorKind::UnexpectedEof.into())),
            _ => {}
        }
    }
}

/// Whether [`read_head`] answers from `buf` alone, without reading: it holds a whole
/// request head, or bytes that cannot start one.
pub(crate) fn holds_head(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return false;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let partial = matches!(
        httparse::Request::new(&mut headers).parse(buf),
        Ok(httparse::Status::Partial)
    );
    !partial || buf.len() >= MAX_HEAD_BYTES
}

enum Parsed {
    Complete(Box<Head>),
    Partial,
    Invalid(StatusCode, &'static str),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many headers",
            );
        }
        Err(_) => return Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed request"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed request");
    };
    let mut builder =
        http::Request::builder()
            .method(method)
            .uri(target)
            .version(if version == 1 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_10
            });
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed header");
        };
        map.append(name, value);
    }
    if let Some(headers) = builder.headers_mut() {
        *headers = map;
    }
    match builder.body(()) {
        Ok(request) => Parsed::Complete(Box::new(Head {
            request,
            len,
            http11: version == 1,
        })),
        Err(_) => Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed request target"),
    }
}

/// Decides what `head` gets. Consumes the head's bytes from `buf`.
/// `place` is the connection's place under `MaxConnections` (taken here if it has none
/// yet): without one, every request but the probes and `/metrics` is answered `503`, and
/// the connection is closed after the answer; an upgrade hands it to the WebSocket.
pub(crate) fn route(
    head: Head,
    buf: &mut Vec<u8>,
    state: &ServerState,
    peer: IpAddr,
    place: &mut Option<Permit>,
) -> Step {
    buf.drain(..head.len);
    let request = &head.request;
    let headers = request.headers();
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let keep_alive = head.http11 && !has_token(headers, http::header::CONNECTION, "close");
    // Without a body to skip, the next request follows directly.
    let keep_alive = keep_alive && !has_body;
    let path = request.uri().path();
    let method = request.method();
    if place.is_none() {
        *place = state.take_place(peer);
    }
    // A server at MaxConnections still answers its probes and its metrics, when they are
    // needed most (a failed liveness probe would get a healthy, full server restarted),
    // on a connection closed after the answer: it holds no place. Such sockets stay
    // bounded by the cap on unfinished handshakes, which lasts until an upgrade.
    let probe = matches!(path, "/health" | "/ready" | "/metrics");
    let keep_alive = keep_alive && place.is_some();
    let respond = |status, text: &str, extra: &[(&str, &str)]| Step::Respond {
        response: plain(status, text, !keep_alive, extra),
        keep_alive,
    };
    if place.is_none() && !probe {
        if has_token(headers, http::header::UPGRADE, "websocket") {
            state.counters().refused(Refused::Unavailable);
        }
        return Step::Respond {
            response: plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
                true,
                &[],
            ),
            keep_alive: false,
        };
    }
    let get = matches!(*method, http::Method::GET | http::Method::HEAD);
    let head_only = *method == http::Method::HEAD;
    let use_get = || {
        respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET",
            &[("Allow", "GET, HEAD")],
        )
    };
    match path {
        "/health" if get => {
            let body = r#"{"status":"ok"}"#;
            return Step::Respond {
                response: json(StatusCode::OK, body, !keep_alive, head_only),
                keep_alive,
            };
        }
        "/ready" if get => {
            let (status, body) = if state.is_shutting_down() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"shutting down"}"#,
                )
            } else if state.cluster_up() == Some(false) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"degraded","reasons":["cluster backplane (Redis) unreachable"]}"#,
                )
            } else {
                (StatusCode::OK, r#"{"status":"ready"}"#)
            };
            return Step::Respond {
                response: json(status, body, !keep_alive, head_only),
                keep_alive,
            };
        }
        "/metrics" if get => {
            let token = &state.config().metrics_token;
            if !token.is_empty() && !bearer_matches(headers, token) {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required",
                    &[("WWW-Authenticate", r#"Bearer realm="rocket""#)],
                );
            }
            // The scrape itself is counted before the values are read.
            state.counters().http_request(path, 200);
            let body = crate::metrics::render(state);
            return Step::Respond {
                response: response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                    !keep_alive,
                    head_only,
                    NO_STORE,
                    &[],
                ),
                keep_alive,
            };
        }
        "/health" | "/ready" | "/metrics" => return use_get(),
        "/api/broadcast" | "/api/direct" if *method == http::Method::POST => {
            let kind = if path == "/api/broadcast" {
                PublishKind::Broadcast
            } else {
                PublishKind::Direct
            };
            // The body is read, so the connection may go on after it.
            let keep_alive = !has_token(headers, http::header::CONNECTION, "close");
            return publish_step(kind, &head, state, keep_alive);
        }
        "/api/broadcast" | "/api/direct" => {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST",
                &[("Allow", "POST")],
            );
        }
        _ => {}
    }
    // Static files (rocket-cli --demo): under their own prefix, which no hub path shares.
    if let Some(files) = state.static_files().filter(|f| f.covers(path)) {
        return Step::Respond {
            response: files.respond(method, path, !keep_alive),
            keep_alive,
        };
    }
    if !state.paths().any(|p| p == path) {
        if has_token(headers, http::header::UPGRADE, "websocket") {
            state.counters().refused(Refused::NoHub);
        }
        return respond(StatusCode::NOT_FOUND, "not found", &[]);
    }
    if !has_token(headers, http::header::UPGRADE, "websocket") {
        return if *method == http::Method::GET {
            respond(
                StatusCode::UPGRADE_REQUIRED,
                "this is a WebSocket endpoint",
                &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        } else {
            respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET with Upgrade: websocket",
                &[("Allow", "GET")],
            )
        };
    }
    if let Err(why) = check_upgrade(&head) {
        let extra: &[(&str, &str)] = match why.0 {
            StatusCode::UPGRADE_REQUIRED => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        };
        return Step::Respond {
            response: plain(why.0, why.1, true, extra),
            keep_alive: false,
        };
    }
    match state.admit(request, peer, place) {
        Ok(admission) => {
            // check_upgrade made sure the key is there.
            let key = headers
                .get(http::header::SEC_WEBSOCKET_KEY)
                .expect("a checked upgrade has a key");
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            Step::Upgrade {
                admission,
                response: response.into_bytes(),
            }
        }
        Err(refusal) => {
            tracing::debug!(%peer, path, %refusal, "handshake refused");
            Step::Respond {
                response: plain(refusal.0, refusal.1, true, &[]),
                keep_alive: false,
            }
        }
    }
}

/// A publish request's body must come with a `Content-Length` within `MaxMessageBytes`
/// (`413` beyond, before anything else is checked).
fn publish_step(kind: PublishKind, head: &Head, state: &ServerState, keep_alive: bool) -> Step {
    let headers = head.request.headers();
    let refuse = |status, text: &str| Step::Respond {
        response: plain(status, text, true, &[]),
        keep_alive: false,
    };
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "send the body with a Content-Length",
        );
    }
    let length = match headers.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) => n,
            None => return refuse(StatusCode::BAD_REQUEST, "malformed Content-Length"),
        },
    };
    if length > state.limits().max_message_bytes {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than MaxMessageBytes",
        );
    }
    Step::Publish {
        kind,
        length,
        authorization: headers.get(http::header::AUTHORIZATION).cloned(),
        keep_alive: head.http11 && keep_alive,
    }
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, given)| {
            scheme.eq_ignore_ascii_case("bearer")
                && bool::from(
                    sha2_digest(given.trim().as_bytes()).ct_eq(&sha2_digest(token.as_bytes())),
                )
        })
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The rest of RFC 6455 §4.2.1 for a request that asked to upgrade.
fn check_upgrade(head: &Head) -> Result<(), (StatusCode, &'static str)> {
    let request = &head.request;
    let headers = request.headers();
    if request.method() != http::Method::GET || !head.http11 {
        return Err((
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade is an HTTP/1.1 GET",
        ));
    }
    if !has_token(headers, http::header::CONNECTION, "upgrade") {
        return Err((StatusCode::BAD_REQUEST, "Connection: Upgrade is missing"));
    }
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
        ));
    }
    if headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .is_none_or(|k| k.is_empty())
    {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing"));
    }
    Ok(())
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn plain(status: StatusCode, text: &str, close: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{text}\n");
    let content_type = "text/plain; charset=utf-8";
    response(
        status,
        content_type,
        body.as_bytes(),
        close,
        false,
        NO_STORE,
        extra,
    )
}

fn json(status: StatusCode, body: &str, close: bool, head_only: bool) -> Vec<u8> {
    response(
        status,
        JSON,
        body.as_bytes(),
        close,
        head_only,
        NO_STORE,
        &[],
    )
}

/// A JSON response with extra headers.
pub(crate) fn json_with(
    status: StatusCode,
    body: &str,
    close: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    response(status, JSON, body.as_bytes(), close, false, NO_STORE, extra)
}

/// The status code of a response built here.
pub(crate) fn status_code(response: &[u8]) -> u16 {
    response
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A whole response: the status line, `Content-Type`, `Content-Length`, `Cache-Control:
/// {cache}`, the `extra` headers, `Connection: close` when `close`, then the body (none for
/// `HEAD`: `head_only`).
pub(crate) fn response(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
    cache: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    use std::fmt::Write;
    let reason = status.canonical_reason().unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: {cache}\r\n",
        status.as_u16(),
        body.len()
    );
    for (name, value) in extra {
        // Writing to a String cannot fail.
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Writes `bytes` and flushes.
pub(crate) async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// The status line of a response built here, for logs and tests.
pub(crate) fn status_of(response: &[u8]) -> Cow<'_, str> {
    let line = response.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn state() -> ServerState {
        ServerState::new(Config::from_json(r#"{"Hubs":[{"Path":"/echo"}]}"#).unwrap())
    }

    fn step(raw: &str) -> (String, bool) {
        let mut buf = raw.as_bytes().to_vec();
        let head = match parse(&buf) {
            Parsed::Complete(head) => *head,
            Parsed::Partial => panic!("partial head"),
            Parsed::Invalid(status, why) => return (format!("{status} {why}"), false),
        };
        match route(head, &mut buf, &state(), [127, 0, 0, 1].into(), &mut None) {
            Step::Upgrade { response, .. } => (String::from_utf8(response).unwrap(), true),
            Step::Respond {
                response,
                keep_alive,
            } => (String::from_utf8(response).unwrap(), keep_alive),
            Step::Publish {
                kind,
                length,
                keep_alive,
                ..
            } => (format!("publish {kind:?} {length}"), keep_alive),
        }
    }

    #[test]
    fn a_full_server_still_answers_its_probes_and_metrics_then_closes() {
        let state = ServerState::new(
            Config::from_json(r#"{"Hubs":[{"Path":"/echo"}],"Limits":{"MaxConnections":1}}"#)
                .unwrap(),
        );
        let peer = [127, 0, 0, 1].into();
        let held = state.take_place(peer).expect("the one place");
        let answer = |raw: &str| {
            let mut buf = raw.as_bytes().to_vec();
            let Parsed::Complete(head) = parse(&buf) else {
                panic!("a complete head")
            };
            match route(*head, &mut buf, &state, peer, &mut None) {
                Step::Respond {
                    response,
                    keep_alive,
                } => (status_of(&response).into_owned(), keep_alive),
                _ => panic!("a response"),
            }
        };
        for path in ["/health", "/ready", "/metrics"] {
            let (status, keep_alive) = answer(&format!("GET {path} HTTP/1.1\r\n\r\n"));
            assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
            assert!(!keep_alive, "{path}: closed, since it holds no place");
        }
        let upgrade = format!("GET /echo HTTP/1.1\r\n{UPGRADE}\r\n");
        assert_eq!(answer(&upgrade).0, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(
            answer("GET /nope HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 503 Service Unavailable"
        );
        drop(held);
        assert_eq!(
            answer("GET /nope HTTP/1.1\r\n\r\n").0,
            "HTTP/1.1 404 Not Found"
        );
    }

    #[test]
    fn publish_requests_need_post_and_a_bounded_length() {
        let post = |path: &str, extra: &str| {
            step(&format!("POST {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"))
        };
        assert_eq!(
            post("/api/broadcast", "Content-Length: 12\r\n"),
            ("publish Broadcast 12".into(), true)
        );
        assert_eq!(
            post("/api/direct", "Content-Length: 3\r\nConnection: close\r\n"),
            ("publish Direct 3".into(), false)
        );
        let (r, keep) = post("/api/broadcast", "Content-Length: 65537\r\n");
        assert!(r.starts_with("HTTP/1.1 413 ") && !keep, "{r}");
        let (r, keep) = post("/api/broadcast", "Transfer-Encoding: chunked\r\n");
        assert!(r.starts_with("HTTP/1.1 411 ") && !keep, "{r}");
        let (r, _) = post("/api/broadcast", "Content-Length: x\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let (r, _) = step("GET /api/direct HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: POST\r\n"),
            "{r}"
        );
        let (r, _) = step("PUT /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD\r\n"),
            "{r}"
        );
    }

    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn health_answers_ok_with_keep_alive() {
        let (r, keep) = step("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n{\"status\":\"ok\"}"), "{r}");
        assert!(r.contains("Content-Type: application/json\r\n"), "{r}");
        assert!(keep && !r.contains("Connection: close"));
        let (r, keep) = step("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!keep && r.contains("Connection: close\r\n"));
        let (r, keep) = step("GET /health HTTP/1.0\r\n\r\n");
        assert!(!keep && r.starts_with("HTTP/1.1 200"));
        let (r, _) = step("HEAD /health HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let (r, _) = step("POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD"),
            "{r}"
        );
    }

    #[test]
    fn hub_paths_without_upgrade_get_426() {
        let (r, keep) = step("GET /echo HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{r}");
        assert!(r.contains("Upgrade: websocket\r\n") && keep, "{r}");
        let (r, _) = step("GET /echo?x=1 HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 426"), "query ignored: {r}");
        let (r, _) = step("POST /echo HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in ["/", "/echo/", "/nope", "/api", "/api/other", "/healthz"] {
            let (r, _) = step(&format!("GET {path} HTTP/1.1\r\n\r\n"));
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {r}");
            let (r, _) = step(&format!("GET {path} HTTP/1.1\r\n{UPGRADE}\r\n"));
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        }
    }

    #[test]
    fn a_valid_upgrade_switches_protocols() {
        let (r, upgraded) = step(&format!("GET /echo HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"));
        assert!(upgraded, "{r}");
        assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{r}");
        // RFC 6455's own example key and answer.
        assert!(
            r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{r}"
        );
    }

    #[test]
    fn broken_upgrades_are_refused() {
        let without = |header: &str| {
            let headers: String = UPGRADE
                .split_inclusive("\r\n")
                .filter(|h| !h.starts_with(header))
                .collect();
            step(&format!("GET /echo HTTP/1.1\r\n{headers}\r\n")).0
        };
        assert!(without("Sec-WebSocket-Key").starts_with("HTTP/1.1 400"));
        assert!(without("Connection").starts_with("HTTP/1.1 400"));
        let r = without("Sec-WebSocket-Version");
        assert!(r.starts_with("HTTP/1.1 426") && r.contains("Sec-WebSocket-Version: 13"));
        let r = step(&format!("GET /echo HTTP/1.0\r\n{UPGRADE}\r\n")).0;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }

    #[test]
    fn malformed_heads_and_bodies() {
        assert!(step("GARBAGE\r\n\r\n").0.contains("400"));
        let (r, keep) = step("POST /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert!(r.starts_with("HTTP/1.1 404") && !keep && r.contains("Connection: close"));
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(
            step(&format!("GET / HTTP/1.1\r\n{many}\r\n"))
                .0
                .contains("431")
        );
    }

    proptest::proptest! {
        /// Whatever arrives, the head parser answers (complete, partial or an error
        /// status) without panicking, and routing a complete head never panics either.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut buf = bytes.clone();
            if let Parsed::Complete(head) = parse(&buf) {
                assert!(head.len <= bytes.len());
                let _ = route(*head, &mut buf, &state(), [127, 0, 0, 1].into(), &mut None);
            }
        }

        /// Well-formed requests with random paths, methods and headers are routed to one
        /// of the documented statuses.
        #[test]
        fn requests_get_a_documented_status(
            method in "(GET|HEAD|POST|PUT|DELETE|OPTIONS)",
            path in "/[a-z/]{0,12}",
            upgrade in proptest::bool::ANY,
            extra in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..6),
        ) {
            let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
            if upgrade {
                raw.push_str(UPGRADE);
            }
            for (name, value) in &extra {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            let (response, _) = step(&raw);
            let status: u16 = response[9..12].parse().unwrap();
            assert!([101, 200, 400, 404, 405, 426, 503].contains(&status), "{raw:?} -> {response}");
        }
    }

    #[test]
    fn static_files_are_served_under_their_prefix_only() {
        let files = crate::StaticFiles::new(
            "/demo/",
            vec![crate::StaticFile {
                path: "/demo/".into(),
                content_type: "text/html; charset=utf-8",
                body: b"<p>hi</p>".as_slice().into(),
            }],
        )
        .unwrap();
        let state = state().with_static_files(files).unwrap();
        let with_demo = |raw: &str| {
            let mut buf = raw.as_bytes().to_vec();
            let Parsed::Complete(head) = parse(&buf) else {
                panic!("complete")
            };
            match route(*head, &mut buf, &state, [127, 0, 0, 1].into(), &mut None) {
                Step::Respond { response, .. } => String::from_utf8(response).unwrap(),
                Step::Upgrade { .. } | Step::Publish { .. } => panic!("a plain answer"),
            }
        };
        let r = with_demo("GET /demo/ HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("<p>hi</p>"),
            "{r}"
        );
        assert!(
            r.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(with_demo("GET /demo/x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(with_demo("GET /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(with_demo("GET /echo HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 426"));
        // Without static files, /demo/ is an unknown path.
        assert!(
            step("GET /demo/ HTTP/1.1\r\n\r\n")
                .0
                .starts_with("HTTP/1.1 404")
        );
    }

    #[test]
    fn pipelined_requests_stay_in_the_buffer() {
        let raw = b"GET /health HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n";
        let mut buf = raw.to_vec();
        let Parsed::Complete(head) = parse(&buf) else {
            panic!("complete")
        };
        let Step::Respond { .. } =
            route(*head, &mut buf, &state(), [127, 0, 0, 1].into(), &mut None)
        else {
            panic!("a response")
        };
        assert_eq!(buf, b"GET /echo HTTP/1.1\r\n\r\n");
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), "HTTP/1.1 200 OK");
    }
}
