//! A small fan-out load generator for any Rocket server: N subscribers on one channel, one
//! publisher sending M broadcasts as fast as the server accepts them (at most `window`
//! unanswered). Reports deliveries received per second, checks that every subscriber got
//! every message exactly once and in order, and, given the server's PID, the server CPU
//! time and deliveries per server CPU-second (from `/proc/PID/stat`).
//!
//! ```text
//! cargo run --release -p rocket-tokio --example fanout_load -- \
//!     ws://127.0.0.1:9772/echo 1000 2000 $(pgrep -f 'rocket-cli')
//! ```
//! Arguments: URL, subscribers (1000), messages (2000), server PID (optional). Users
//! `backend`/`secret` of the example config are used for both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn login(url: &str) -> Ws {
    let authority = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("ws://host:port/path");
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("handshake");
    ws.next().await.expect("greeting").expect("greeting");
    let auth = r#"{"authenticate":{"user":"backend","secret":"secret"}}"#;
    ws.send(Message::text(auth)).await.expect("send");
    ws.next().await.expect("auth reply").expect("auth reply");
    ws
}

fn server_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9772/echo".into());
    let subscribers: usize = args
        .next()
        .map_or(1000, |s| s.parse().expect("subscribers"));
    let messages: u64 = args.next().map_or(2000, |s| s.parse().expect("messages"));
    let pid: Option<u32> = args.next().map(|s| s.parse().expect("pid"));
    let window = 256;

    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut ws = login(&url).await;
        ws.send(Message::text(r#"{"subscribe":{"channel":"bench"}}"#))
            .await
            .expect("send");
        ws.next().await.expect("subscribed").expect("subscribed");
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let mut next = 0u64;
            while next < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                        assert_eq!(v["data"]["seq"], next, "lost, duplicated or out of order");
                        next += 1;
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    other => panic!("subscriber ended early: {other:?}"),
                }
            }
        }));
    }
    let pad = "x".repeat(80);
    let mut publisher = login(&url).await;
    let cpu0 = server_cpu_seconds(pid);
    let start = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < messages {
        while sent < messages && sent - acked < window {
            let m = format!(
                r#"{{"broadcast":{{"event":"b","channel":"bench","data":{{"seq":{sent},"pad":"{pad}"}}}}}}"#
            );
            publisher.feed(Message::text(m)).await.expect("send");
            sent += 1;
        }
        publisher.flush().await.expect("flush");
        match publisher.next().await {
            Some(Ok(Message::Text(t))) if t.contains("broadcasted") => acked += 1,
            Some(Ok(_)) => {}
            other => panic!("publisher ended: {other:?}"),
        }
    }
    let accepted_at = start.elapsed();
    for r in readers {
        tokio::time::timeout(Duration::from_secs(120), r)
            .await
            .expect("deliveries in time")
            .expect("reader");
    }
    let elapsed = start.elapsed();
    let cpu = cpu0.and_then(|c0| Some(server_cpu_seconds(pid)? - c0));
    let deliveries = received.load(Ordering::Relaxed);
    println!(
        "subscribers {subscribers}, messages {messages}, deliveries received {deliveries} (expected {})",
        messages * subscribers as u64
    );
    println!(
        "publishes accepted/s {:.0}",
        messages as f64 / accepted_at.as_secs_f64()
    );
    println!(
        "deliveries received/s {:.0}",
        deliveries as f64 / elapsed.as_secs_f64()
    );
    if let Some(cpu) = cpu {
        println!(
            "server CPU {cpu:.2} s, deliveries per server CPU-second {:.0}",
            deliveries as f64 / cpu
        );
    }
}
