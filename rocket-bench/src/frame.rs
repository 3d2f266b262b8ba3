//! WebSocket framing (RFC 6455, section 5), just what a load generator and a trivial
//! server need: a header parser that checks the masking rule of its direction, and
//! encoders for masked (client to server) and unmasked (server to client) frames.
//!
//! The parser never copies: it reads a header from the front of a buffer and says how long
//! the whole frame is, so the caller can take the payload as a slice of its own buffer.

use std::fmt;

/// Continuation frame opcode.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Which side sent the frames being parsed: it decides whether a mask is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Frames from a server: never masked.
    Server,
    /// Frames from a client: always masked.
    Client,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The FIN bit: this frame ends its message.
    pub fin: bool,
    /// The opcode (`OP_*`).
    pub opcode: u8,
    /// The masking key of a client frame.
    pub mask: Option<[u8; 4]>,
    /// Bytes of header before the payload.
    pub header_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl Header {
    /// The length of the whole frame, header and payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// A frame that breaks RFC 6455 (or a limit of ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1..3 set without a negotiated extension.
    ReservedBits,
    /// An opcode that RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A server frame with a mask, or a client frame without one.
    Masking,
    /// A control frame longer than 125 bytes or fragmented.
    BadControlFrame,
    /// A payload longer than the limit the caller set.
    TooLong(u64),
    /// A 16- or 64-bit length that a shorter form could have held, or a 64-bit length
    /// with the top bit set.
    BadLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => write!(f, "reserved bits set"),
            Self::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Self::Masking => write!(f, "wrong masking for the frame's direction"),
            Self::BadControlFrame => write!(f, "control frame fragmented or over 125 bytes"),
            Self::TooLong(n) => write!(f, "frame payload of {n} bytes is over the limit"),
            Self::BadLength => write!(f, "payload length not in its minimal form"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses the header at the front of `buf`. `Ok(None)` means more bytes are needed for
/// the header; the payload may still be incomplete (compare [`Header::frame_len`] with
/// `buf.len()`).
pub fn parse_header(
    buf: &[u8],
    from: Sender,
    max_payload: usize,
) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        other => return Err(FrameError::UnknownOpcode(other)),
    };
    let masked = b1 & 0x80 != 0;
    if masked != (from == Sender::Client) {
        return Err(FrameError::Masking);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if len < 126 {
                return Err(FrameError::BadLength);
            }
            (len, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            let len = u64::from_be_bytes(be);
            if len <= 0xFFFF || len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    if control && (len > 125 || !fin) {
        return Err(FrameError::BadControlFrame);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLong(len));
    }
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: at,
        // `len <= max_payload`, a usize, so this cannot truncate.
        payload_len: len as usize,
    }))
}

/// XORs `data` with the masking key, as both masking and unmasking do.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask_bit: u8) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends one final, masked frame (client to server) to `out`.
pub fn encode_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_header(out, opcode, payload.len(), 0x80);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends one final, unmasked frame (server to client) to `out`.
pub fn encode_unmasked(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len(), 0);
    out.extend_from_slice(payload);
}

/// A small xorshift generator for masking keys. RFC 6455 asks browsers for unpredictable
/// keys so that a page's script cannot steer the bytes on the wire; a load generator has
/// no such adversary, and this keeps masking cheap.
#[derive(Debug, Clone)]
pub struct MaskGen(u64);

impl MaskGen {
    /// A generator seeded with `seed` (zero is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next masking key.
    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_unmasked(&mut v, opcode, payload);
        v
    }

    #[test]
    fn parses_short_medium_and_long_server_frames() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![b'a'; len];
            let f = server_frame(OP_TEXT, &payload);
            let h = parse_header(&f, Sender::Server, MAX).unwrap().unwrap();
            assert!(h.fin);
            assert_eq!(h.opcode, OP_TEXT);
            assert_eq!(h.payload_len, len);
            assert_eq!(h.frame_len(), f.len());
            assert_eq!(&f[h.header_len..], &payload[..]);
            let expected_header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(h.header_len, expected_header);
        }
    }

    #[test]
    fn needs_more_bytes_at_every_cut_of_the_header() {
        let f = server_frame(OP_TEXT, &[b'x'; 300]);
        for cut in 0..4 {
            assert_eq!(parse_header(&f[..cut], Sender::Server, MAX), Ok(None));
        }
        let f = server_frame(OP_BINARY, &[b'x'; 70000]);
        for cut in 0..10 {
            assert_eq!(parse_header(&f[..cut], Sender::Server, MAX), Ok(None));
        }
        assert!(
            parse_header(&f[..10], Sender::Server, MAX)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_stream_of_frames_split_anywhere_reassembles() {
        let mut stream = Vec::new();
        let msgs: Vec<Vec<u8>> = (0..50)
            .map(|i| vec![b'0' + (i % 10) as u8; i * 7])
            .collect();
        for m in &msgs {
            encode_unmasked(&mut stream, OP_TEXT, m);
        }
        for chunk in [1usize, 2, 3, 7, 64, 1000] {
            let mut pending = Vec::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                pending.extend_from_slice(piece);
                let mut at = 0;
                while let Some(h) = parse_header(&pending[at..], Sender::Server, MAX).unwrap() {
                    if pending.len() - at < h.frame_len() {
                        break;
                    }
                    got.push(pending[at + h.header_len..at + h.frame_len()].to_vec());
                    at += h.frame_len();
                }
                pending.drain(..at);
            }
            assert_eq!(got, msgs, "chunk {chunk}");
            assert!(pending.is_empty());
        }
    }

    #[test]
    fn masked_frames_round_trip_and_direction_is_enforced() {
        let mut masks = MaskGen::new(42);
        for len in [0usize, 3, 4, 5, 125, 126, 1000, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = Vec::new();
            let mask = masks.next_mask();
            encode_masked(&mut f, OP_TEXT, &payload, mask);
            assert_eq!(
                parse_header(&f, Sender::Server, MAX),
                Err(FrameError::Masking)
            );
            let h = parse_header(&f, Sender::Client, MAX).unwrap().unwrap();
            assert_eq!(h.mask, Some(mask));
            let mut body = f[h.header_len..h.frame_len()].to_vec();
            if len >= 4 {
                assert_ne!(body, payload, "masked on the wire");
            }
            apply_mask(&mut body, mask);
            assert_eq!(body, payload);
        }
        let f = server_frame(OP_TEXT, b"hi");
        assert_eq!(
            parse_header(&f, Sender::Client, MAX),
            Err(FrameError::Masking)
        );
    }

    #[test]
    fn rejects_protocol_violations() {
        assert_eq!(
            parse_header(&[0xC1, 0x00], Sender::Server, MAX),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x83, 0x00], Sender::Server, MAX),
            Err(FrameError::UnknownOpcode(3))
        );
        // A fragmented ping, and a ping of 126 bytes.
        assert_eq!(
            parse_header(&[0x09, 0x00], Sender::Server, MAX),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 126, 0, 126], Sender::Server, MAX),
            Err(FrameError::BadControlFrame)
        );
        // 16-bit form for a length that fits 7 bits; 64-bit form for one that fits 16.
        assert_eq!(
            parse_header(&[0x81, 126, 0, 5], Sender::Server, MAX),
            Err(FrameError::BadLength)
        );
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&1000u64.to_be_bytes());
        assert_eq!(
            parse_header(&long, Sender::Server, MAX),
            Err(FrameError::BadLength)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(
            parse_header(&huge, Sender::Server, MAX),
            Err(FrameError::TooLong(1 << 40))
        );
    }

    #[test]
    fn fragments_and_control_frames_parse() {
        let h = parse_header(&[0x01, 0x03, b'a', b'b', b'c'], Sender::Server, MAX)
            .unwrap()
            .unwrap();
        assert!(!h.fin);
        assert_eq!(h.opcode, OP_TEXT);
        let h = parse_header(&[0x80, 0x01, b'd'], Sender::Server, MAX)
            .unwrap()
            .unwrap();
        assert!(h.fin);
        assert_eq!(h.opcode, OP_CONTINUATION);
        let close = server_frame(OP_CLOSE, &1008u16.to_be_bytes());
        let h = parse_header(&close, Sender::Server, MAX).unwrap().unwrap();
        assert_eq!(h.opcode, OP_CLOSE);
        assert_eq!(h.payload_len, 2);
    }
}
