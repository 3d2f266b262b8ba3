//! The physical ceiling: a trivial single-threaded server speaking just enough of the
//! protocol for the benchmark (greeting, authenticate, subscribe, broadcast), with no JSON
//! parser and no engine. A broadcast's event is cut out of the request's bytes
//! (`{"broadcast":EVENT}` → `EVENT`), framed once, and the same bytes are appended to
//! every subscriber's output buffer; each buffer is written with one `write` per loop
//! turn. Whatever a real server does beyond this is the price of being a real server.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Sender};
use crate::handshake;

/// The options of `rocket-bench ceiling`.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:9800")]
    pub listen: SocketAddr,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0.0)]
    pub max_seconds: f64,
}

const LISTENER: Token = Token(usize::MAX);
/// Output a connection may have pending before it is dropped as a slow consumer.
const MAX_OUT: usize = 64 << 20;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    open: bool,
    pending: Vec<u8>,
    out: Vec<u8>,
    dirty: bool,
}

/// The text after `"key":"` up to the next quote.
fn field<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut pat = Vec::with_capacity(key.len() + 4);
    pat.extend_from_slice(b"\"");
    pat.extend_from_slice(key);
    pat.extend_from_slice(b"\":\"");
    let at = memchr::memmem::find(text, &pat)? + pat.len();
    let len = memchr::memchr(b'"', &text[at..])?;
    Some(&text[at..at + len])
}

fn reply(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let mut text = Vec::with_capacity(key.len() + value.len() + 8);
    text.extend_from_slice(b"{\"");
    text.extend_from_slice(key.as_bytes());
    text.extend_from_slice(b"\":\"");
    text.extend_from_slice(value);
    text.extend_from_slice(b"\"}");
    frame::encode_unmasked(out, OP_TEXT, &text);
}

/// Runs the ceiling server until killed (or `max_seconds`).
pub fn serve(args: &CeilingArgs) -> io::Result<()> {
    // A deep accept queue, so that a connect storm measures the server, not SYN retries.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(args.listen),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&args.listen.into())?;
    socket.listen(4096)?;
    let listener: std::net::TcpListener = socket.into();
    eprintln!(
        "rocket-bench ceiling: listening on ws://{}/ (any path)",
        listener.local_addr()?
    );
    let deadline = (args.max_seconds > 0.0)
        .then(|| Instant::now() + Duration::from_secs_f64(args.max_seconds));
    serve_on(listener, deadline)
}

/// Serves on a bound listener until `deadline` (or forever).
pub fn serve_on(listener: std::net::TcpListener, deadline: Option<Instant>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut channels: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut body = Vec::new();
    let mut dirty: Vec<usize> = Vec::new();
    let mut tokens = 0u64;
    loop {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Ok(());
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let t = conns.len();
                            poll.registry().register(
                                &mut stream,
                                Token(t),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.push(Some(Conn {
                                stream,
                                open: false,
                                pending: Vec::new(),
                                out: Vec::new(),
                                dirty: false,
                            }));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("rocket-bench ceiling: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let t = event.token().0;
            let mut alive = true;
            // Read everything available, then handle whole frames.
            loop {
                let Some(Some(c)) = conns.get_mut(t) else {
                    alive = false;
                    break;
                };
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        alive = false;
                        break;
                    }
                    Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        alive = false;
                        break;
                    }
                }
            }
            if alive {
                alive = handle_input(
                    t,
                    &mut conns,
                    &mut channels,
                    &mut body,
                    &mut dirty,
                    &mut tokens,
                );
            }
            match conns.get_mut(t) {
                Some(Some(c)) if alive && !c.dirty => {
                    c.dirty = true;
                    dirty.push(t);
                }
                Some(slot @ Some(_)) if !alive => {
                    if let Some(mut c) = slot.take() {
                        let _ = poll.registry().deregister(&mut c.stream);
                    }
                }
                _ => {}
            }
        }
        // One write per connection that has output.
        for t in dirty.drain(..) {
            let Some(Some(c)) = conns.get_mut(t) else {
                continue;
            };
            c.dirty = false;
            let mut written = 0;
            let mut dead = false;
            while written < c.out.len() {
                match c.stream.write(&c.out[written..]) {
                    Ok(0) => {
                        dead = true;
                        break;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
            c.out.drain(..written);
            if (dead || c.out.len() > MAX_OUT)
                && let Some(mut c) = conns[t].take()
            {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
}

/// Handles the bytes a connection sent; false when it must be closed.
fn handle_input(
    t: usize,
    conns: &mut [Option<Conn>],
    channels: &mut HashMap<Vec<u8>, Vec<usize>>,
    body: &mut Vec<u8>,
    dirty: &mut Vec<usize>,
    tokens: &mut u64,
) -> bool {
    let Some(Some(c)) = conns.get_mut(t) else {
        return false;
    };
    let mut pending = std::mem::take(&mut c.pending);
    let mut at = 0;
    if !c.open {
        match handshake::parse_request(&pending) {
            Ok(None) => {
                c.pending = pending;
                return true;
            }
            Ok(Some((len, key))) => {
                at = len;
                c.open = true;
                c.out.extend_from_slice(
                    handshake::response(&handshake::accept_for(&key)).as_bytes(),
                );
                *tokens += 1;
                let token = format!("{:032x}", *tokens);
                reply(&mut c.out, "connected", token.as_bytes());
            }
            Err(_) => return false,
        }
    }
    loop {
        let h = match frame::parse_header(&pending[at..], Sender::Client, 1 << 20) {
            Ok(Some(h)) if pending.len() - at >= h.frame_len() => h,
            Ok(_) => break,
            Err(_) => return false,
        };
        body.clear();
        body.extend_from_slice(&pending[at + h.header_len..at + h.frame_len()]);
        frame::apply_mask(body, h.mask.unwrap_or_default());
        at += h.frame_len();
        let Some(Some(c)) = conns.get_mut(t) else {
            return false;
        };
        match h.opcode {
            OP_CLOSE => return false,
            OP_PING => frame::encode_unmasked(&mut c.out, OP_PONG, body),
            OP_TEXT => {
                let text = body.as_slice();
                if text.starts_with(br#"{"authenticate""#) {
                    let user = field(text, b"user").unwrap_or_default().to_vec();
                    reply(&mut c.out, "authenticated", &user);
                } else if text.starts_with(br#"{"subscribe""#) {
                    let ch = field(text, b"channel").unwrap_or_default().to_vec();
                    reply(&mut c.out, "subscribed", &ch);
                    channels.entry(ch).or_default().push(t);
                } else if text.starts_with(br#"{"broadcast":"#) && text.ends_with(b"}") {
                    let ch = field(text, b"channel").unwrap_or_default().to_vec();
                    reply(&mut c.out, "broadcasted", &ch);
                    let event = &text[13..text.len() - 1];
                    let mut framed = Vec::with_capacity(event.len() + 10);
                    frame::encode_unmasked(&mut framed, OP_TEXT, event);
                    if let Some(subs) = channels.get_mut(&ch) {
                        subs.retain(|&s| {
                            let Some(Some(sc)) = conns.get_mut(s) else {
                                return false;
                            };
                            sc.out.extend_from_slice(&framed);
                            if !sc.dirty {
                                sc.dirty = true;
                                dirty.push(s);
                            }
                            true
                        });
                    }
                } else {
                    reply(&mut c.out, "err", b"INVALID_PAYLOAD");
                }
            }
            _ => {}
        }
    }
    pending.drain(..at);
    if let Some(Some(c)) = conns.get_mut(t) {
        c.pending = pending;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_out_of_the_request() {
        let text = br#"{"broadcast":{"event":"b","channel":"c12","data":"1.2.3.xx"}}"#;
        assert_eq!(field(text, b"channel"), Some(&b"c12"[..]));
        assert_eq!(field(text, b"user"), None);
        assert_eq!(
            &text[13..text.len() - 1],
            br#"{"event":"b","channel":"c12","data":"1.2.3.xx"}"#
        );
    }
}
