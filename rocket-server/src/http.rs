//! The HTTP/1.1 front on the server's port: every accepted connection (after TLS, when it
//! is on) starts here. Its request heads are parsed once with `httparse`; a WebSocket
//! upgrade on a hub path is admitted ([`ServerState::admit`]) and answered with `101`, and the
//! connection then belongs to the hub; plain requests get their answer here, with
//! keep-alive (PROTOCOL.md, "HTTP on the same port"):
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` (or `HEAD`) | `200 {"status":"ok"}` |
//! | a hub path without `Upgrade: websocket` | `426 Upgrade Required`, `Upgrade: websocket` |
//! | an upgrade on a hub path | `101`, or `404`/`403`/`503` from admission |
//! | a known path with another method | `405` with `Allow` |
//! | a path under the static files' prefix, when given ([`crate::StaticFiles`]) | the file, `404`, `405` or `308` |
//! | anything else | `404` |
//!
//! Each request head must arrive within `HandshakeTimeoutMs` and fit in
//! [`MAX_HEAD_BYTES`]; a request with a body is answered and the connection closed, since
//! no endpoint here takes a body.

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::http::{self, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::state::{Admission, ServerState};

/// The largest request head (request line and headers) accepted: `431` beyond it.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers in one request: `431` beyond it.
const MAX_HEADERS: usize = 64;

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
pub(crate) fn route(head: Head, buf: &mut Vec<u8>, state: &ServerState, peer: IpAddr) -> Step {
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
    let respond = |status, text: &str, extra: &[(&str, &str)]| Step::Respond {
        response: plain(status, text, !keep_alive, extra),
        keep_alive,
    };
    let path = request.uri().path();
    let method = request.method();
    if path == "/health" {
        return match *method {
            http::Method::GET | http::Method::HEAD => Step::Respond {
                response: json(
                    StatusCode::OK,
                    r#"{"status":"ok"}"#,
                    !keep_alive,
                    *method == http::Method::HEAD,
                ),
                keep_alive,
            },
            _ => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET",
                &[("Allow", "GET, HEAD")],
            ),
        };
    }
    // Static files (rocket-cli --demo): under their own prefix, which no hub path shares.
    if let Some(files) = state.static_files().filter(|f| f.covers(path)) {
        return Step::Respond {
            response: files.respond(method, path, !keep_alive),
            keep_alive,
        };
    }
    if !state.paths().any(|p| p == path) {
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
    match state.admit(request, peer) {
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
    response(
        status,
        "text/plain; charset=utf-8",
        &format!("{text}\n"),
        close,
        false,
        extra,
    )
}

fn json(status: StatusCode, body: &str, close: bool, head_only: bool) -> Vec<u8> {
    response(status, "application/json", body, close, head_only, &[])
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: &str,
    close: bool,
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    use std::fmt::Write;
    let reason = status.canonical_reason().unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
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
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
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
        match route(head, &mut buf, &state(), [127, 0, 0, 1].into()) {
            Step::Upgrade { response, .. } => (String::from_utf8(response).unwrap(), true),
            Step::Respond {
                response,
                keep_alive,
            } => (String::from_utf8(response).unwrap(), keep_alive),
        }
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
        for path in ["/", "/echo/", "/nope", "/ready", "/api/broadcast"] {
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
                let _ = route(*head, &mut buf, &state(), [127, 0, 0, 1].into());
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
            match route(*head, &mut buf, &state, [127, 0, 0, 1].into()) {
                Step::Respond { response, .. } => String::from_utf8(response).unwrap(),
                Step::Upgrade { .. } => panic!("no upgrade"),
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
        let Step::Respond { .. } = route(*head, &mut buf, &state(), [127, 0, 0, 1].into()) else {
            panic!("a response")
        };
        assert_eq!(buf, b"GET /echo HTTP/1.1\r\n\r\n");
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n\r\n"), "HTTP/1.1 200 OK");
    }
}
