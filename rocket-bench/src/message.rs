//! The benchmark's messages: what a publisher sends and how a subscriber reads the stamp
//! back out of the delivered event without a JSON parser.
//!
//! A publish is `{"broadcast":{"event":"b","channel":"c7","data":"P.S.T.xxx…"}}` where
//! `data` is a JSON string holding the publisher id `P`, its sequence number `S` on that
//! channel and the send time `T` (microseconds since the Unix epoch), padded with `x` to
//! the payload size. The server delivers `{"event":"b","channel":"c7","data":"P.S.T.xxx…"}`
//! (or the same with other spacing or key order: the subscriber only looks for `"data":"`).

use std::time::{SystemTime, UNIX_EPOCH};

/// What a publisher put in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's id.
    pub publisher: u32,
    /// The publisher's sequence number on the message's channel, from 0.
    pub seq: u64,
    /// When the publisher wrote the message, in microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Microseconds since the Unix epoch. Publishers and subscribers live in different
/// processes on one machine, so they share this clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The name of channel number `index`.
pub fn channel_name(index: u32) -> String {
    format!("c{index}")
}

/// Writes the text of a broadcast request whose `data` string is `size` bytes long (or
/// longer when the stamp itself needs more).
pub fn write_publish(out: &mut Vec<u8>, channel: &str, stamp: Stamp, size: usize) {
    out.extend_from_slice(br#"{"broadcast":{"event":"b","channel":""#);
    out.extend_from_slice(channel.as_bytes());
    write_stamped_data(out, stamp, size);
    out.extend_from_slice(b"}}");
}

/// The body of a publish API broadcast (`POST /api/broadcast`) on hub `hub`, carrying the
/// same data as [`write_publish`], so subscribers read the same deliveries.
pub fn write_api_publish(out: &mut Vec<u8>, hub: &str, channel: &str, stamp: Stamp, size: usize) {
    out.extend_from_slice(br#"{"hub":""#);
    out.extend_from_slice(hub.as_bytes());
    out.extend_from_slice(br#"","event":"b","channel":""#);
    out.extend_from_slice(channel.as_bytes());
    write_stamped_data(out, stamp, size);
    out.push(b'}');
}

/// `","data":"<stamp>xxx…"`: the stamp padded to `size` bytes.
fn write_stamped_data(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    use std::io::Write as _;
    out.extend_from_slice(br#"","data":""#);
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}.{}.{}.", stamp.publisher, stamp.seq, stamp.sent_us);
    let written = out.len() - start;
    out.resize(out.len() + size.saturating_sub(written), b'x');
    out.push(b'"');
}

/// Finds `"data":"` in delivered events.
#[derive(Debug, Clone)]
pub struct StampReader {
    finder: memchr::memmem::Finder<'static>,
}

impl Default for StampReader {
    fn default() -> Self {
        Self {
            finder: memchr::memmem::Finder::new(br#""data":""#),
        }
    }
}

impl StampReader {
    /// Reads the stamp of a delivered event, `None` if `text` carries none.
    pub fn read(&self, text: &[u8]) -> Option<Stamp> {
        let at = self.finder.find(text)? + 8;
        let mut rest = &text[at..];
        let publisher = take_number(&mut rest)?;
        let seq = take_number(&mut rest)?;
        let sent_us = take_number(&mut rest)?;
        Some(Stamp {
            publisher: u32::try_from(publisher).ok()?,
            seq,
            sent_us,
        })
    }
}

/// Parses decimal digits up to a `.` and steps past it.
fn take_number(rest: &mut &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?,
            b'.' if i > 0 => {
                *rest = &rest[i + 1..];
                return Some(n);
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_is_json_of_the_requested_size_and_its_stamp_reads_back() {
        let stamp = Stamp {
            publisher: 3,
            seq: 123_456,
            sent_us: 1_700_000_000_123_456,
        };
        let mut out = Vec::new();
        write_publish(&mut out, "c9", stamp, 100);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let data = v["broadcast"]["data"].as_str().unwrap();
        assert_eq!(data.len(), 100);
        assert_eq!(v["broadcast"]["channel"], "c9");
        // What the server delivers: the inner object, maybe re-encoded.
        let event = serde_json::to_vec(&v["broadcast"]).unwrap();
        assert_eq!(StampReader::default().read(&event), Some(stamp));
        let inner = &out[13..out.len() - 1];
        assert_eq!(StampReader::default().read(inner), Some(stamp));
    }

    #[test]
    fn a_stamp_longer_than_the_size_is_not_cut() {
        let stamp = Stamp {
            publisher: 0,
            seq: 0,
            sent_us: 5,
        };
        let mut out = Vec::new();
        write_publish(&mut out, "c0", stamp, 2);
        assert!(out.ends_with(br#""data":"0.0.5."}}"#));
        assert_eq!(StampReader::default().read(&out), Some(stamp));
    }

    #[test]
    fn events_without_a_stamp_are_ignored() {
        let r = StampReader::default();
        assert_eq!(r.read(br#"{"subscribed":"c0"}"#), None);
        assert_eq!(
            r.read(br#"{"event":"b","channel":"c","data":"hello"}"#),
            None
        );
        assert_eq!(r.read(br#"{"event":"b","channel":"c","data":"1.2"}"#), None);
        assert_eq!(
            r.read(br#"{"event":"b","channel":"c","data":".1.2.3"}"#),
            None
        );
        assert_eq!(
            r.read(br#"{"data":"99999999999999999999999.1.1."}"#),
            None,
            "overflow"
        );
    }
}
