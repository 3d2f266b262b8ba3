//! One client WebSocket connection on a mio socket: the non-blocking connect, the TLS
//! session for `wss://`, the HTTP upgrade, and reading server frames out of a read buffer
//! shared by every connection of a thread. Only bytes that end in the middle of a frame are
//! copied into the connection, so an idle plain connection holds no buffer at all.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::frame::{self, MaskGen, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, Sender};
use crate::handshake;
use crate::tls::TlsClient;

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
    /// The TLS session of a `wss://` (or `https://`) connection: what is written goes
    /// through it, and what is read comes out of it.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl WsConn {
    /// Starts a non-blocking connect to `addr`, from `source` when given (a loopback
    /// address other than 127.0.0.1 gives another range of ephemeral ports), over TLS when
    /// `tls` is given.
    pub fn connect(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        host: &str,
        path: &str,
        tls: Option<&TlsClient>,
    ) -> io::Result<Self> {
        let tls = tls.map(TlsClient::start).transpose()?.map(Box::new);
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
            tls,
        })
    }

    /// Starts a non-blocking connect for plain HTTP/1.1 requests (no upgrade): after it,
    /// [`WsConn::on_event`] hands each response body to its callback.
    pub fn connect_http(addr: SocketAddr, host: &str, tls: Option<&TlsClient>) -> io::Result<Self> {
        let mut conn = Self::connect(addr, None, host, "", tls)?;
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

    /// Whether bytes are still waiting to be written (plaintext, or a TLS session's
    /// records).
    pub fn has_unsent(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.is_open() && !matches!(self.phase, Phase::Upgrading { .. }) {
            return Ok(()); // still connecting: written once connected
        }
        let written = match &mut self.tls {
            None => write_plain(&mut self.stream, &self.out)?,
            Some(tls) => write_tls(tls, &mut self.stream, &self.out)?,
        };
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
            let n = match self.read_some(buf) {
                Ok(0) => {
                    return Err(match self.close_code {
                        Some(code) => format!("closed by server with {code}"),
                        None => "connection closed by server".into(),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Reading may have moved a TLS handshake on: send what it asks.
                    return self.flush().map_err(|e| format!("write: {e}"));
                }
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
            // (Not over TLS: a short read of plaintext says nothing about the socket.)
            if n < buf.len() && self.tls.is_none() {
                return Ok(());
            }
        }
    }

    /// Reads what the server sent: from the socket, or the plaintext of the TLS session
    /// (feeding it from the socket until it has some). `Ok(0)` is the end of the stream.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the server ended the session (close_notify)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
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

/// Writes `out` to a plain socket as far as it takes it; returns how many bytes it took.
fn write_plain(stream: &mut TcpStream, out: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < out.len() {
        match stream.write(&out[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Hands `out` to the TLS session (which holds it until its handshake is done) and writes
/// the session's records to the socket as far as it takes them; returns how many bytes of
/// `out` the session took.
fn write_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    out: &[u8],
) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        if taken < out.len() {
            taken += tls.writer().write(&out[taken..])?;
        }
        if !tls.wants_write() {
            return Ok(taken);
        }
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
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

    /// A blocking `wss://` server for one connection: the TLS handshake, the upgrade,
    /// a greeting of `big` bytes (many TLS records), then every text frame echoed back.
    fn tls_echo_server(dir: &std::path::Path, big: usize) -> SocketAddr {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let session = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(session, tcp);
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            let (len, key) = loop {
                let n = tls.read(&mut chunk).unwrap();
                got.extend_from_slice(&chunk[..n]);
                if let Some(head) = handshake::parse_request(&got).unwrap() {
                    break head;
                }
            };
            got.drain(..len);
            let mut out = handshake::response(&handshake::accept_for(&key)).into_bytes();
            frame::encode_unmasked(&mut out, frame::OP_TEXT, &vec![b'x'; big]);
            tls.write_all(&out).unwrap();
            loop {
                while let Some(h) = frame::parse_header(&got, Sender::Client, MAX_MESSAGE).unwrap()
                    && got.len() >= h.frame_len()
                {
                    let mut payload = got[h.header_len..h.frame_len()].to_vec();
                    frame::apply_mask(&mut payload, h.mask.unwrap());
                    got.drain(..h.frame_len());
                    let mut echo = Vec::new();
                    frame::encode_unmasked(&mut echo, h.opcode, &payload);
                    tls.write_all(&echo).unwrap();
                }
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        addr
    }

    /// Over `wss://` the connection opens, reads a message spread over many TLS records,
    /// and writes: its text comes back.
    #[test]
    fn a_wss_connection_reads_and_writes_through_tls() {
        let dir = std::env::temp_dir().join(format!("rocket-bench-wss-{}", std::process::id()));
        crate::tls::write_self_signed(&crate::tls::CertArgs {
            out: dir.clone(),
            names: vec!["127.0.0.1".into()],
        })
        .unwrap();
        let big = 100_000;
        let addr = tls_echo_server(&dir, big);
        let host = addr.to_string();
        let tls = TlsClient::new(&dir.join("cert.pem"), &host).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let mut conn = WsConn::connect(addr, None, &host, "/t", Some(&tls)).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(
                &mut conn.stream,
                mio::Token(0),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
            .unwrap();
        let mut events = mio::Events::with_capacity(8);
        // A small shared buffer: the plaintext arrives in many reads.
        let mut buf = vec![0u8; 1024];
        let mut masks = MaskGen::new(7);
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut sent = false;
        while texts.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "timed out: {texts:?}");
            poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
                .unwrap();
            let progress = conn.on_event(&mut buf, &mut masks, |t| texts.push(t.to_vec()));
            assert_eq!(progress.closed, None);
            if texts.len() == 1 && !sent {
                assert!(conn.is_open());
                conn.send_text(b"ping over tls", &mut masks).unwrap();
                sent = true;
            }
        }
        assert_eq!(texts[0], vec![b'x'; big]);
        assert_eq!(texts[1], b"ping over tls");
        assert!(!conn.has_unsent());
    }
}
