//! Client identities: the frontend's handle ([`ClientId`]) and the public token ([`Token`]).

use std::fmt;

/// A frontend's handle for one connection, unique among the connections it feeds to one
/// engine. The frontend picks it (a counter is fine); the engine never interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A client's public identity, sent in the greeting and used as the target of `direct`:
/// 128 bits, written as 32 lowercase hex characters.
///
/// The engine never generates tokens: the frontend draws 16 bytes from the operating
/// system's secure generator and passes them to [`Token::from_bytes`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token([u8; 16]);

impl Token {
    /// Length of a token's text form.
    pub const TEXT_LEN: usize = 32;

    /// Wraps 16 random bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the 32-lowercase-hex text form; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != Self::TEXT_LEN {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Self(out))
    }

    /// The text form, as an array so that formatting allocates nothing.
    pub fn to_hex(&self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).expect("hex is ASCII"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_text() {
        let t = Token::from_bytes([0xab; 16]);
        assert_eq!(t.to_string(), "ab".repeat(16));
        assert_eq!(Token::parse(&t.to_string()), Some(t));
        assert_eq!(
            Token::parse(&"AB".repeat(16)),
            None,
            "uppercase is not a token"
        );
        assert_eq!(Token::parse(""), None);
        assert_eq!(Token::parse(&"a".repeat(31)), None);
        assert_eq!(Token::parse(&"g".repeat(32)), None);
        assert_eq!(Token::parse(&"é".repeat(16)), None);
    }
}
