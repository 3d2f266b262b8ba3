//! The engine-side cost of offsets: broadcasts to one channel of 1,000 subscribers on a plain
//! hub and on a History hub (`Size` 100), engine only (no sockets, no JSON parsing by
//! clients). Run with `cargo run -p rocket-proto --release --example history_cost`.
//!
//! This measures the engine's share only (encoding, keeping, fanning out the outputs); the
//! server's socket work, which dominates a real fan-out, is the same on both hubs.

use std::time::{Duration, Instant};

use rocket_proto::{ClientId, Engine, EngineConfig, HashSeed, Message, Output, Token};

const SUBSCRIBERS: u64 = 1000;
const BROADCASTS: u32 = 2000;

fn engine(history: bool) -> Engine {
    let mut json = String::from(r#"{"Users":{"u":{"Secret":"","Permission":7}}"#);
    if history {
        json.push_str(r#","History":{"Size":100,"TtlMs":600000}"#);
    }
    json.push('}');
    let config = EngineConfig::from_json(&json).expect("a valid config");
    let mut engine = Engine::new(&config, HashSeed([1, 2, 3, 4]));
    engine.handle_timeout(Instant::now());
    let mut out = Vec::new();
    for n in 0..=SUBSCRIBERS {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        engine
            .handle_connect(ClientId(n), Token::from_bytes(bytes))
            .expect("fresh ids");
        engine.handle_message(
            ClientId(n),
            Message::Text(r#"{"authenticate":{"user":"u","secret":""}}"#),
        );
        if n > 0 {
            engine.handle_message(
                ClientId(n),
                Message::Text(r#"{"subscribe":{"channel":"c"}}"#),
            );
        }
    }
    engine.drain_outputs(&mut out);
    engine
}

/// Time per broadcast (1,000 deliveries each), best of five runs.
fn measure(history: bool) -> (Duration, usize) {
    let data = format!(
        r#"{{"broadcast":{{"event":"e","channel":"c","data":"{}"}}}}"#,
        "x".repeat(100)
    );
    let mut best = Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let mut engine = engine(history);
        let mut out: Vec<Output> = Vec::with_capacity(SUBSCRIBERS as usize + 1);
        let start = Instant::now();
        for _ in 0..BROADCASTS {
            engine.handle_message(ClientId(0), Message::Text(&data));
            engine.drain_outputs(&mut out);
            if let Some(Output::Send { payload, .. }) = out.first() {
                size = payload.as_bytes().len();
            }
            out.clear();
        }
        best = best.min(start.elapsed() / BROADCASTS);
    }
    (best, size)
}

fn main() {
    let (plain, plain_size) = measure(false);
    let (history, history_size) = measure(true);
    let per = |d: Duration| d.as_nanos() as f64 / SUBSCRIBERS as f64;
    println!(
        "plain hub:   {:>8.1} µs per broadcast to {SUBSCRIBERS} ({:.1} ns per delivery, {plain_size}-byte delivery)",
        plain.as_nanos() as f64 / 1000.0,
        per(plain)
    );
    println!(
        "History hub: {:>8.1} µs per broadcast to {SUBSCRIBERS} ({:.1} ns per delivery, {history_size}-byte delivery)",
        history.as_nanos() as f64 / 1000.0,
        per(history)
    );
    println!(
        "History / plain: {:.3}",
        history.as_secs_f64() / plain.as_secs_f64()
    );
}
