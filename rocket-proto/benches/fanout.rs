//! Fan-out benchmark: one publisher broadcasts to N subscribers of one channel through the
//! [`Engine`], and the outputs are drained into a reused `Vec`, as a frontend would.
//!
//! Run with `cargo bench -p rocket-proto --bench fanout`. It measures one thread on one
//! core and prints routed deliveries per second (one [`Output::Send`] per subscriber and
//! broadcast) and nanoseconds per delivery, for 10, 100 and 1,000 subscribers. Set
//! `FANOUT_SECS` to change the time spent per size (default 3 seconds) and
//! `FANOUT_SUBSCRIBERS` (e.g. `1000` or `10,100`) to measure other sizes, e.g. under a
//! profiler.
//!
//! The goal for 1,000 subscribers is at least 10 million deliveries per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rocket_proto::{ClientId, Engine, EngineConfig, HashSeed, Message, Output, Token};

const CONFIG: &str = r#"{
    "Users": {
        "publisher": { "Secret": "p", "Permission": 3 },
        "subscriber": { "Secret": "s", "Permission": 1 }
    }
}"#;

fn token(n: u64) -> Token {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    Token::from_bytes(bytes)
}

/// An engine with `subscribers` authenticated clients subscribed to `bench`, plus the
/// publisher (client 0), with every setup output drained.
fn setup(subscribers: u64) -> Engine {
    let config = EngineConfig::from_json(CONFIG).expect("valid bench config");
    let mut engine = Engine::new(&config, HashSeed([9, 8, 7, 6]));
    let mut outputs = Vec::new();
    let publisher = ClientId(0);
    engine
        .handle_connect(publisher, token(0))
        .expect("fresh client");
    engine.handle_message(
        publisher,
        Message::Text(r#"{"authenticate":{"user":"publisher","secret":"p"}}"#),
    );
    for n in 1..=subscribers {
        let id = ClientId(n);
        engine.handle_connect(id, token(n)).expect("fresh client");
        engine.handle_message(
            id,
            Message::Text(r#"{"authenticate":{"user":"subscriber","secret":"s"}}"#),
        );
        engine.handle_message(id, Message::Text(r#"{"subscribe":{"channel":"bench"}}"#));
        engine.drain_outputs(&mut outputs);
        outputs.clear();
    }
    engine.drain_outputs(&mut outputs);
    assert_eq!(engine.subscriber_count("bench"), subscribers as usize);
    engine
}

/// Broadcasts for about `time` and returns (broadcasts, elapsed).
fn run(engine: &mut Engine, subscribers: usize, request: &str, time: Duration) -> (u64, Duration) {
    let publisher = ClientId(0);
    let mut outputs: Vec<Output> = Vec::with_capacity(subscribers + 1);
    let mut broadcasts = 0u64;
    // Check the clock every `batch` broadcasts, about every 100,000 deliveries.
    let batch = (100_000 / subscribers).max(1) as u64;
    let start = Instant::now();
    loop {
        for _ in 0..batch {
            engine.handle_message(publisher, Message::Text(black_box(request)));
            engine.drain_outputs(&mut outputs);
            black_box(&mut outputs);
            outputs.clear();
        }
        broadcasts += batch;
        let elapsed = start.elapsed();
        if elapsed >= time {
            return (broadcasts, elapsed);
        }
    }
}

fn main() {
    let secs: f64 = std::env::var("FANOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let time = Duration::from_secs_f64(secs);
    // About 100 bytes of data.
    let data = format!("\"{}\"", "x".repeat(98));
    let request = format!(r#"{{"broadcast":{{"event":"tick","channel":"bench","data":{data}}}}}"#);
    println!(
        "fanout: one broadcast with {}-byte data, {secs} s per size; an Output is {} bytes",
        data.len(),
        std::mem::size_of::<Output>()
    );
    println!(
        "{:>12} {:>14} {:>18} {:>14} {:>16}",
        "subscribers", "broadcasts/s", "deliveries/s", "ns/delivery", "ns/broadcast"
    );
    let sizes: Vec<u64> = match std::env::var("FANOUT_SUBSCRIBERS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("FANOUT_SUBSCRIBERS: numbers like 10,1000")
            })
            .collect(),
        Err(_) => vec![10, 100, 1_000],
    };
    for subscribers in sizes {
        let mut engine = setup(subscribers);
        // One broadcast yields the deliveries and the `broadcasted` reply.
        let mut outputs = Vec::new();
        engine.handle_message(ClientId(0), Message::Text(&request));
        engine.drain_outputs(&mut outputs);
        assert_eq!(outputs.len(), subscribers as usize + 1);
        // Warm up caches and the allocator.
        run(&mut engine, subscribers as usize, &request, time / 10);
        let (broadcasts, elapsed) = run(&mut engine, subscribers as usize, &request, time);
        let deliveries = broadcasts * subscribers;
        let secs = elapsed.as_secs_f64();
        println!(
            "{:>12} {:>14.0} {:>18.0} {:>14.2} {:>16.1}",
            subscribers,
            broadcasts as f64 / secs,
            deliveries as f64 / secs,
            elapsed.as_nanos() as f64 / deliveries as f64,
            elapsed.as_nanos() as f64 / broadcasts as f64,
        );
    }
}
