//! Memory of a whole server holding 10,000 channels with full history: fills every
//! channel's history of a running Rocket server (a History hub with `Size` 100, e.g.
//! `scripts/bench-history.json`) over WebSocket, then reads the server's resident set from
//! `/proc/PID/status` before and after. One client subscribes to every channel (so they
//! exist), sends `Size` broadcasts of `DATA` bytes to each (at most 256 unanswered), checks
//! every delivery's offset, then unsubscribes from all: the histories stay, kept for `TtlMs`.
//!
//! ```text
//! target/release/rocket-cli --port 9772 scripts/bench-history.json &
//! cargo run --release -p rocket-tokio --example history_memory -- \
//!     ws://127.0.0.1:9772/bench $(pgrep -f 'rocket-cli --port 9772') [CHANNELS] [DATA]
//! ```
//! (`scripts/bench-history-memory.sh` does both.) Users `bench`/`bench`; the hub's
//! `MaxSubscriptionsPerClient` must allow CHANNELS (0: no limit).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Broadcasts per channel: the hub's `History.Size`.
const SIZE: u64 = 100;
/// Requests sent and not yet answered, at most.
const WINDOW: usize = 256;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server answers within 30 s")
            .expect("the connection stays open")
            .expect("a message");
        match message {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends `requests` with at most [`WINDOW`] unanswered; `check` sees every message that
/// comes back and says whether it was a reply (as opposed to a delivery).
async fn pipelined(
    ws: &mut Ws,
    requests: impl Iterator<Item = String>,
    mut check: impl FnMut(&serde_json::Value) -> bool,
) {
    let mut unanswered = 0;
    for request in requests {
        ws.feed(Message::text(request)).await.expect("send");
        unanswered += 1;
        if unanswered == WINDOW {
            ws.flush().await.expect("send");
            while unanswered > WINDOW / 2 {
                if check(&next_json(ws).await) {
                    unanswered -= 1;
                }
            }
        }
    }
    ws.flush().await.expect("send");
    while unanswered > 0 {
        if check(&next_json(ws).await) {
            unanswered -= 1;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9772/bench".into());
    let pid: u32 = args
        .next()
        .expect("usage: history_memory URL SERVER_PID [CHANNELS] [DATA]")
        .parse()
        .expect("a PID");
    let channels: u64 = args.next().map_or(10_000, |s| s.parse().expect("CHANNELS"));
    let data_len: usize = args.next().map_or(100, |s| s.parse().expect("DATA"));
    let authority = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("ws://host:port/path");
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (mut ws, _) = tokio_tungstenite::client_async(&url, tcp)
        .await
        .expect("handshake");
    next_json(&mut ws).await; // greeting
    ws.send(Message::text(
        r#"{"authenticate":{"user":"bench","secret":"bench"}}"#,
    ))
    .await
    .expect("send");
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"authenticated": "bench"})
    );
    let before = rss_kib(pid);
    let started = Instant::now();

    let name = |c: u64| format!("history-{c}");
    let subscribes =
        (0..channels).map(|c| format!(r#"{{"subscribe":{{"channel":"{}"}}}}"#, name(c)));
    pipelined(&mut ws, subscribes, |reply| {
        assert!(reply.get("subscribed").is_some(), "{reply}");
        true
    })
    .await;

    let data = "x".repeat(data_len);
    let broadcasts = (0..SIZE).flat_map(|_| {
        let data = &data;
        (0..channels).map(move |c| {
            format!(
                r#"{{"broadcast":{{"event":"e","channel":"{}","data":"{data}"}}}}"#,
                name(c)
            )
        })
    });
    let mut delivered = 0u64;
    let mut delivery_bytes = 0usize;
    pipelined(&mut ws, broadcasts, |message| {
        if message.get("broadcasted").is_some() {
            return true;
        }
        assert!(
            message.get("offset").is_some(),
            "a delivery has an offset: {message}"
        );
        delivered += 1;
        delivery_bytes = message.to_string().len();
        false
    })
    .await;
    // Deliveries may trail the last reply.
    while delivered < channels * SIZE {
        let message = next_json(&mut ws).await;
        assert!(message.get("offset").is_some(), "{message}");
        delivered += 1;
    }
    let unsubscribes =
        (0..channels).map(|c| format!(r#"{{"unsubscribe":{{"channel":"{}"}}}}"#, name(c)));
    pipelined(&mut ws, unsubscribes, |reply| {
        assert!(reply.get("unsubscribed").is_some(), "{reply}");
        true
    })
    .await;
    // A last check that the histories are kept: the last channel's.
    ws.send(Message::text(format!(
        r#"{{"history":{{"channel":"{}","limit":1}}}}"#,
        name(channels - 1)
    )))
    .await
    .expect("send");
    let history = next_json(&mut ws).await;
    assert_eq!(history["history"]["offset"], SIZE, "{history}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    let kept = channels * SIZE;
    println!(
        "{channels} channels x {SIZE} broadcasts of {data_len} bytes of data \
         ({delivery_bytes} bytes per kept delivery), filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "server resident set: {before} KiB before, {after} KiB after: {:.0} MiB for the \
         histories, {:.0} bytes per kept broadcast",
        growth as f64 / 1024.0,
        growth as f64 * 1024.0 / kept as f64
    );
}
