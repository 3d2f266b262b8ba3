//! The HTTP/1.1 upgrade of RFC 6455 section 4, both sides, on plain byte buffers.

use base64::Engine as _;
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest response or request head accepted.
pub const MAX_HEAD: usize = 8192;

/// What went wrong in an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head is over [`MAX_HEAD`] bytes.
    TooLong,
    /// The server did not answer 101; the status line is kept.
    Status(String),
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
    /// The request is not a WebSocket upgrade (no `Sec-WebSocket-Key`).
    NotUpgrade,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong => write!(f, "HTTP head over {MAX_HEAD} bytes"),
            Self::Status(line) => write!(f, "upgrade refused: {line}"),
            Self::BadAccept => write!(f, "Sec-WebSocket-Accept missing or wrong"),
            Self::NotUpgrade => write!(f, "not a WebSocket upgrade request"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// A `Sec-WebSocket-Key` made from 16 bytes.
pub fn key_from(bytes: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `Sec-WebSocket-Accept` value the server must return for `key`.
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The client's upgrade request.
pub fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The server's 101 response.
pub fn response(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// The length of the head (through the blank line) at the front of `buf`, once complete.
fn head_len(buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
    match memchr::memmem::find(buf, b"\r\n\r\n") {
        Some(i) => Ok(Some(i + 4)),
        None if buf.len() > MAX_HEAD => Err(HandshakeError::TooLong),
        None => Ok(None),
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks the server's response to a request made with `key`. Returns the length of the
/// response head once it is complete; bytes after it are already WebSocket frames.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let Some(len) = head_len(buf)? else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..len]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(HandshakeError::Status(status.to_owned()));
    }
    match header(&head, "sec-websocket-accept") {
        Some(accept) if accept == accept_for(key) => Ok(Some(len)),
        _ => Err(HandshakeError::BadAccept),
    }
}

/// Reads a client's upgrade request: the head's length and its `Sec-WebSocket-Key`.
pub fn parse_request(buf: &[u8]) -> Result<Option<(usize, String)>, HandshakeError> {
    let Some(len) = head_len(buf)? else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..len]);
    let key = header(&head, "sec-websocket-key").ok_or(HandshakeError::NotUpgrade)?;
    Ok(Some((len, key.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(key_from(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn both_sides_agree_and_trailing_frames_are_left() {
        let key = key_from([7; 16]);
        let req = request("127.0.0.1:9772", "/echo", &key);
        let (len, got) = parse_request(req.as_bytes()).unwrap().unwrap();
        assert_eq!((len, got.as_str()), (req.len(), key.as_str()));
        let mut resp = response(&accept_for(&key)).into_bytes();
        let head = resp.len();
        assert_eq!(parse_response(&resp[..head - 1], &key), Ok(None));
        resp.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_response(&resp, &key), Ok(Some(head)));
        let other = key_from([8; 16]);
        assert_eq!(
            parse_response(&resp, &other),
            Err(HandshakeError::BadAccept)
        );
    }

    #[test]
    fn refusals_are_reported() {
        let resp = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_response(resp, "k"),
            Err(HandshakeError::Status(
                "HTTP/1.1 503 Service Unavailable".into()
            ))
        );
        assert_eq!(
            parse_response(&[b'a'; MAX_HEAD + 1], "k"),
            Err(HandshakeError::TooLong)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::NotUpgrade)
        );
    }
}
