//! Memory of 10,000 channels with full history (`Size` 100), engine only: the process's
//! resident set (Linux `/proc/self/status`) before and after filling every channel's history
//! with broadcasts of `DATA` bytes of data. Run with
//! `cargo run -p rocket-proto --release --example history_memory [DATA]` (default 100).

use std::time::Instant;

use rocket_proto::{ClientId, Engine, EngineConfig, HashSeed, Message, Token};

const CHANNELS: usize = 10_000;
const SIZE: usize = 100;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn main() {
    let data_len: usize = std::env::args()
        .nth(1)
        .map_or(100, |a| a.parse().expect("a byte count"));
    let json = format!(
        r#"{{"Users":{{"u":{{"Secret":"","Permission":7}}}},"Limits":{{"MaxSubscriptionsPerClient":0}},
            "History":{{"Size":{SIZE},"TtlMs":600000}}}}"#
    );
    let config = EngineConfig::from_json(&json).expect("a valid config");
    let mut engine = Engine::new(&config, HashSeed([1, 2, 3, 4]));
    engine.handle_timeout(Instant::now());
    let id = ClientId(1);
    engine
        .handle_connect(id, Token::from_bytes([1; 16]))
        .expect("a fresh client");
    engine.handle_message(
        id,
        Message::Text(r#"{"authenticate":{"user":"u","secret":""}}"#),
    );
    let mut out = Vec::new();
    // One subscriber per channel keeps the channels alive; its deliveries are dropped.
    for c in 0..CHANNELS {
        let request = format!(r#"{{"subscribe":{{"channel":"channel-{c}"}}}}"#);
        engine.handle_message(id, Message::Text(&request));
    }
    engine.drain_outputs(&mut out);
    out.clear();
    out.shrink_to_fit();
    let before = rss_kib();
    let data = "x".repeat(data_len);
    for _ in 0..SIZE {
        for c in 0..CHANNELS {
            let request = format!(
                r#"{{"broadcast":{{"event":"e","channel":"channel-{c}","data":"{data}"}}}}"#
            );
            engine.handle_message(id, Message::Text(&request));
            engine.drain_outputs(&mut out);
            out.clear();
        }
    }
    let after = rss_kib();
    let kept = (CHANNELS * SIZE) as u64;
    println!(
        "{CHANNELS} channels × {SIZE} kept broadcasts of {data_len}-byte data: {:.1} MiB more resident ({} bytes per kept broadcast)",
        (after - before) as f64 / 1024.0,
        (after - before) * 1024 / kept
    );
    assert_eq!(engine.history_count(), CHANNELS);
}
