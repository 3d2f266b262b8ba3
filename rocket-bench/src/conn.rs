//! One client WebSocket connection on a mio socket: the non-blocking connect, the HTTP
//! upgrade, and reading server frames out of a read buffer shared by every connection of
//! a thread. Only bytes that end in the middle of a frame are copied into the connection,
//! so an idle connection holds no buffer at all.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::frame::{self, MaskGen, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, Sender};
use crate::handshake;

/// The largest server message accepted.
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug)]
enum Phase {
    /// `connect` was called; waiting for the socket to become writable.
    Connecting,
    /// The upgrade request was written; reading the response.
    Upgrading { key: String },
    /// WebSocket frames flow.
    Open,
    /// A plain HTTP/1.1 keep-alive connection (the publish API): each response's body is
    /// handed over as one message.
    Http,
}

/// What one readiness event did to a connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The upgrade completed during this event.
    pub opened: bool,
    /// The connection ended during this event, and why.
    pub closed: Option<String>,
}

/// A client connection.
#[derive(Debug)]
pub struct WsConn {
    /// The socket, for registering with a `mio::Poll`.
    pub stream: TcpStream,
    phase: Phase,
    host: String,
    path: String,
    /// Bytes read but not yet parsed (a partial frame or response head).
    pending: Vec<u8>,
    /// Bytes not yet written.
    out: Vec<u8>,
    /// The message being reassembled from fragments.
    fragments: Option<Vec<u8>>,
    /// The close code the server sent, if any.
    pub close_code: Option<u16>,
    /// Plain HTTP/1.1 instead of a WebSocket ([`WsConn::connect_http`]).
    http: bool,
}

impl WsConn {
    /// Starts a non-blocking connect to `addr`, from `source` when given (a loopback
    /// address other than 127.0.0.1 gives another range of ephemeral ports).
    pub fn connect(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        host: &str,
        path: &str,
    ) -> io::Result<Self> {
        let stream = match source {
            None => TcpStream::connect(addr)?,
            Some(ip) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                socket.set_nonblocking(true)?;
                // Ports of earlier runs may linger in TIME_WAIT; the 4-tuple differs.
                socket.set_reuse_address(true)?;
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                match socket.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(socket.into())
            }
        };
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            phase: Phase::Connecting,
            host: host.to_owned(),
            path: path.to_owned(),
            pending: Vec::new(),
            out: Vec::new(),
            fragments: None,
            close_code: None,
            http: false,
        })
    }

    /// Starts a non-blocking connect for plain HTTP/1.1 requests (no upgrade): after it,
    /// [`WsConn::on_event`] hands each response body to its callback.
    pub fn connect_http(addr: SocketAddr, host: &str) -> io::Result<Self> {
        let mut conn = Self::connect(addr, None, host, "")?;
        conn.http = true;
        Ok(conn)
    }

    /// Whether the upgrade is done (or, for HTTP, the connect).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Http)
    }

    /// Queues a masked text frame and tries to write it.
    pub fn send_text(&mut self, text: &[u8], masks: &mut MaskGen) -> io::Result<()> {
        frame::encode_masked(&mut self.out, frame::OP_TEXT, text, masks.next_mask());
        self.flush()
    }

    /// Queues several already-framed bytes and tries to write them.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        self.flush()
    }

    /// Queues already-framed bytes without writing them (see [`WsConn::flush`]).
    pub fn send_raw_queued(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Bytes still waiting to be written.
    pub fn unsent(&self) -> usize {
        self.out.len()
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.is_open() && !matches!(self.phase, Phase::Upgrading { .. }) {
            return Ok(()); // still connecting: written once connected
        }
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.drain(..written);
        if self.out.is_empty() && self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Handles a readiness event: finishes the connect, reads the upgrade response, and
    /// hands each complete text message to `on_text`. `buf` is scratch space shared by
    /// the connections of a thread. Pings are answered.
    pub fn on_event(
        &mut self,
        buf: &mut [u8],
        masks: &mut MaskGen,
        mut on_text: impl FnMut(&[u8]),
    ) -> Progress {
        let mut progress = Progress::default();
        if let Err(why) = self.step(buf, masks, &mut on_text, &mut progress) {
            progress.closed = Some(why);
        }
        progress
    }

    fn step(
        &mut self,
        buf: &mut [u8],
        masks: &mut MaskGen,
        on_text: &mut impl FnMut(&[u8]),
        progress: &mut Progress,
    ) -> Result<(), String> {
        if let Phase::Connecting = self.phase {
            if let Some(e) = self.stream.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect: {e}")),
            }
            if self.http {
                self.phase = Phase::Http;
                progress.opened = true;
                return self.step(buf, masks, on_text, progress);
            }
            let mut seed = [0u8; 16];
            seed[..8].copy_from_slice(&masks.next_mask().repeat(2));
            seed[8..].copy_from_slice(&masks.next_mask().repeat(2));
            let key = handshake::key_from(seed);
            let req = handshake::request(&self.host, &self.path, &key);
            let mut out = req.into_bytes();
            out.append(&mut self.out);
            self.out = out;
            self.phase = Phase::Upgrading { key };
        }
        self.flush().map_err(|e| format!("write: {e}"))?;
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    return Err(match self.close_code {
                        Some(code) => format!("closed by server with {code}"),
                        None => "connection closed by server".into(),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            if self.pending.is_empty() {
                let used = self.consume(&buf[..n], masks, on_text, progress)?;
                self.pending.extend_from_slice(&buf[used..n]);
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.extend_from_slice(&buf[..n]);
                let used = self.consume(&pending, masks, on_text, progress)?;
                pending.drain(..used);
                self.pending = pending;
            }
            if self.pending.is_empty() && self.pending.capacity() > 0 {
                self.pending = Vec::new();
            }
            self.flush().map_err(|e| format!("write: {e}"))?;
            // Edge-triggered: a short read emptied the socket, and any byte arriving
            // later raises a new event, so the extra read that would say EAGAIN is saved.
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    /// Parses what it can of `data`; returns how many bytes were used.
    fn consume(
        &mut self,
        data: &[u8],
        masks: &mut MaskGen,
        on_text: &mut impl FnMut(&[u8]),
        progress: &mut Progress,
    ) -> Result<usize, String> {
        let mut at = 0;
        if let Phase::Http = self.phase {
            while let Some((head, body)) = http_response(&data[at..])? {
                on_text(&data[at + head..at + head + body]);
                at += head + body;
            }
            return Ok(at);
        }
        if let Phase::Upgrading { key } = &self.phase {
            match handshake::parse_response(data, key) {
                Ok(None) => return Ok(0),
                Ok(Some(len)) => {
                    at = len;
                    self.phase = Phase::Open;
                    progress.opened = true;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        while at < data.len() {
            let Some(h) = frame::parse_header(&data[at..], Sender::Server, MAX_MESSAGE)
                .map_err(|e| e.to_string())?
            else {
                break;
            };
            if data.len() - at < h.frame_len() {
                break;
            }
            let payload = &data[at + h.header_len..at + h.frame_len()];
            at += h.frame_len();
            match h.opcode {
                OP_PING => frame::encode_masked(&mut self.out, OP_PONG, payload, masks.next_mask()),
                OP_PONG => {}
                OP_CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    self.close_code = Some(code);
                    return Err(format!("closed by server with {code}"));
                }
                OP_CONTINUATION => {
                    let Some(f) = self.fragments.as_mut() else {
                        return Err("continuation without a first fragment".into());
                    };
                    f.extend_from_slice(payload);
                    if f.len() > MAX_MESSAGE {
                        return Err("fragmented message too long".into());
                    }
                    if h.fin {
                        let whole = self.fragments.take().unwrap_or_default();
                        on_text(&whole);
                    }
                }
                _ if !h.fin => self.fragments = Some(payload.to_vec()),
                _ => on_text(payload),
            }
        }
        Ok(at)
    }
}

/// One complete HTTP/1.1 response at the start of `data`: the lengths of its head and of
/// its body (by `Content-Length`); `None` while incomplete.
fn http_response(data: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response: {e}")),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("an HTTP response without Content-Length")?;
    Ok((data.len() >= head + length).then_some((head, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_are_split_by_content_length() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nxy";
        let (h, b) = http_response(two).unwrap().unwrap();
        assert_eq!(&two[h..h + b], b"abc");
        let rest = &two[h + b..];
        let (h2, b2) = http_response(rest).unwrap().unwrap();
        assert_eq!(&rest[h2..h2 + b2], b"xy");
        assert_eq!(http_response(&two[..10]).unwrap(), None);
        assert_eq!(
            http_response(&two[..h + 1]).unwrap(),
            None,
            "body incomplete"
        );
        assert!(http_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
