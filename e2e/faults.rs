//! The fault suite: clients that misbehave, stall, flood or vanish. Every test checks both
//! what the faulty client got and that a healthy subscriber on the same server kept
//! receiving a publisher's stream completely and in order ([`Witness`]).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::{Client, Frontend, STEP, eventually, hub_connections, start};

/// A healthy publisher/subscriber pair streaming numbered messages in the background; the
/// subscriber reads as they come and checks that each arrives once, in order.
pub struct Witness {
    stop: tokio::sync::watch::Sender<bool>,
    publisher: JoinHandle<u64>,
    subscriber: JoinHandle<Client>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Witness {
    /// Starts streaming on channel `witness` of `/echo`, one message every `pause`.
    pub async fn start(addr: std::net::SocketAddr, pause: Duration) -> Witness {
        use std::sync::atomic::Ordering;
        let mut sub = Client::subscriber(addr, "witness").await;
        let mut publisher = Client::login(addr, "writer", "w").await;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let publisher = tokio::spawn(async move {
            let mut seq = 0u64;
            while !*stopped.borrow_and_update() {
                let data = json!({"publisher": "witness", "seq": seq});
                publisher
                    .send(json!({"broadcast": {"event": "w", "channel": "witness", "data": data}}))
                    .await;
                assert_eq!(publisher.recv().await, json!({"broadcasted": "witness"}));
                seq += 1;
                let _ = tokio::time::timeout(pause, stopped.changed()).await;
            }
            seq
        });
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = std::sync::Arc::clone(&received);
        let mut stop_sub = stop.subscribe();
        let subscriber = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    v = sub.recv() => v,
                    _ = stop_sub.changed() => break,
                };
                let seq = count.load(Ordering::Acquire);
                assert_eq!(
                    next["data"]["seq"],
                    json!(seq),
                    "the healthy subscriber lost or reordered a message"
                );
                count.store(seq + 1, Ordering::Release);
            }
            sub
        });
        Witness {
            stop,
            publisher,
            subscriber,
            received,
        }
    }

    /// Stops the stream and checks that every message arrived once, in order.
    pub async fn finish(self) -> u64 {
        use std::sync::atomic::Ordering;
        // On a loaded machine a short fault can be over before the stream's first message
        // went round; let it flow before stopping it.
        eventually("the witness stream flows", || {
            self.received.load(Ordering::Acquire) > 0
        })
        .await;
        let _ = self.stop.send(true);
        let sent = self.publisher.await.expect("witness publisher");
        let mut sub = self.subscriber.await.expect("witness subscriber");
        for seq in self.received.load(Ordering::Acquire)..sent {
            let v = sub.recv().await;
            assert_eq!(
                v["data"]["seq"],
                json!(seq),
                "the healthy subscriber lost or reordered a message"
            );
        }
        sub.quiet().await;
        assert!(sent > 0, "the witness published nothing");
        sent
    }
}

/// A subscriber connection whose socket can be reset.
async fn raw_subscriber(
    addr: std::net::SocketAddr,
    channel: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/echo"), tcp)
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap(); // greeting
    for m in [
        json!({"authenticate": {"user": "backend", "secret": "secret"}}),
        json!({"subscribe": {"channel": channel}}),
    ] {
        ws.send(Message::text(m.to_string())).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    ws
}

pub async fn slow_consumer_under_10k_messages_is_cut_off<F: Frontend>() {
    let s = start::<F>("");
    let mut healthy = Client::subscriber(s.addr, "flood").await;
    let slow = raw_subscriber(s.addr, "flood").await; // never reads again
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    let pad = "z".repeat(4000);
    // 10,000 messages of 4 KB: 40 MB, far more than the socket buffers and the
    // 1,024-message queue can hold for the slow subscriber. Written and compared as whole
    // texts (the server forwards `data` unchanged): building and parsing 4 KB JSON values
    // per message cost most of this test's time.
    let body = |i: u64| format!(r#"{{"seq":{i},"pad":"{pad}"}}"#);
    for batch in 0..100u64 {
        for i in batch * 100..(batch + 1) * 100 {
            let data = body(i);
            publisher
                .send_text(&format!(
                    r#"{{"broadcast":{{"event":"f","channel":"flood","data":{data}}}}}"#
                ))
                .await;
        }
        for i in batch * 100..(batch + 1) * 100 {
            let reply = publisher.recv_text().await;
            assert!(reply == r#"{"broadcasted":"flood"}"#, "{reply}");
            let delivery = healthy.recv_text().await;
            let want = format!(r#"{{"event":"f","channel":"flood","data":{}}}"#, body(i));
            assert!(
                delivery == want,
                "message {i} lost, reordered or altered: {delivery:.80}"
            );
        }
    }
    eventually("the slow consumer is disconnected", || {
        hub_connections(&s, "/echo") == 2
    })
    .await;
    // The server process's own RSS under this load is checked against the real binary by
    // rocket-cli's tests (this test process hosts many tests at once).
    drop(slow);
}

pub async fn a_thousand_connections_reset_mid_stream<F: Frontend>() {
    let s = start::<F>("");
    let witness = Witness::start(s.addr, Duration::from_millis(2)).await;
    // Connected 25 at a time: one by one took up to two minutes, all the while fanning the
    // witness's stream out to a growing crowd, which made this the slowest test.
    let doomed: Vec<_> = futures_util::stream::iter(0..1000)
        .map(|_| raw_subscriber(s.addr, "witness"))
        .buffer_unordered(25)
        .collect()
        .await;
    assert_eq!(doomed.len(), 1000);
    tokio::time::sleep(Duration::from_millis(100)).await; // let deliveries flow to them
    for ws in doomed {
        ws.get_ref().set_zero_linger().unwrap(); // close() now sends RST
    }
    eventually("every reset connection is forgotten", || {
        hub_connections(&s, "/echo") == 2
    })
    .await;
    witness.finish().await;
}

pub async fn slowloris_handshakes_are_dropped<F: Frontend>() {
    let s = start::<F>(r#""HandshakeTimeoutMs": 500"#);
    let witness = Witness::start(s.addr, Duration::from_millis(5)).await;
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n";
    let started = tokio::time::Instant::now();
    let mut dropped = false;
    for byte in request.iter().cycle().take(200) {
        if trickle.write_all(&[*byte]).await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped,
        "a handshake sent byte by byte outlived the handshake timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    witness.finish().await;
}

pub async fn hostile_frames_get_their_documented_answer<F: Frontend>() {
    let s = start::<F>(r#""MaxMessageBytes": 65536"#);
    let witness = Witness::start(s.addr, Duration::from_millis(2)).await;
    let mut c = Client::login(s.addr, "backend", "secret").await;
    let invalid = json!({"err": "INVALID_PAYLOAD"});
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let long = "n".repeat(256);
    let cases: Vec<(String, serde_json::Value)> = vec![
        (
            format!(r#"{{"broadcast":{{"event":"e","channel":"witness","data":{deep}}}}}"#),
            invalid.clone(),
        ),
        (
            format!(r#"{{"subscribe":{{"channel":"{long}"}}}}"#),
            invalid.clone(),
        ),
        (
            format!(r#"{{"broadcast":{{"event":"{long}","channel":"witness"}}}}"#),
            invalid.clone(),
        ),
        (
            "{\"subscribe\":{\"channel\":\"a\u{0}b\"}}".to_owned(),
            invalid.clone(),
        ),
        (
            r#"{"launch":{"channel":"witness"}}"#.to_owned(),
            invalid.clone(),
        ),
        ("\u{0}\u{0}\u{0}".to_owned(), invalid.clone()),
        (
            r#"{"subscribe":{"channel":"nul\u0000ok"}}"#.to_owned(),
            json!({"subscribed": "nul\u{0}ok"}),
        ),
    ];
    for (text, want) in cases {
        c.send_text(&text).await;
        assert_eq!(c.recv().await, want, "for {:.60}", text);
    }
    c.send_message(Message::binary(b"{\"logout\":true}".to_vec()))
        .await;
    assert_eq!(c.recv().await, invalid);
    // A request fragmented into three frames is reassembled and served.
    let request = br#"{"subscribe":{"channel":"frag"}}"#;
    let (a, rest) = request.split_at(5);
    let (b, d) = rest.split_at(10);
    c.send_message(Message::Frame(WsFrame::message(
        a.to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    c.send_message(Message::Frame(WsFrame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await;
    c.send_message(Message::Frame(WsFrame::message(
        d.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    assert_eq!(c.recv().await, json!({"subscribed": "frag"}));
    let mut other = Client::connect(s.addr, "/echo").await;
    other.send_text(&"x".repeat(70_000)).await;
    assert_eq!(other.closed().await.map(|c| c.0), Some(1009));
    witness.finish().await;
}

pub async fn plain_secret_brute_force_is_cut_off<F: Frontend>() {
    let s = start::<F>(r#""MaxFailedAuth": 5"#);
    let witness = Witness::start(s.addr, Duration::from_millis(2)).await;
    let mut attacker = Client::connect(s.addr, "/echo").await;
    for i in 0..5 {
        attacker
            .send(json!({"authenticate": {"user": "backend", "secret": format!("guess{i}")}}))
            .await;
        assert_eq!(attacker.recv().await, json!({"err": "INVALID_CREDENTIALS"}));
    }
    assert_eq!(attacker.closed().await.map(|c| c.0), Some(1008));
    witness.finish().await;
}

pub async fn per_publisher_order_holds_with_concurrent_publishers<F: Frontend>() {
    let s = start::<F>("");
    let mut subscribers = Vec::new();
    for _ in 0..5 {
        subscribers.push(Client::subscriber(s.addr, "multi").await);
    }
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 300;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let mut c = Client::login(s.addr, "writer", "w").await;
        tasks.push(tokio::spawn(async move {
            for seq in 0..EACH {
                let data = json!({"p": p, "seq": seq});
                c.send(json!({"broadcast": {"event": "m", "channel": "multi", "data": data}}))
                    .await;
            }
            for _ in 0..EACH {
                assert_eq!(c.recv().await, json!({"broadcasted": "multi"}));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut first_order = None;
    for mut sub in subscribers {
        let mut next = [0u64; PUBLISHERS as usize];
        let mut order = Vec::new();
        for _ in 0..PUBLISHERS * EACH {
            let v = sub.recv().await;
            let p = v["data"]["p"].as_u64().unwrap() as usize;
            assert_eq!(
                v["data"]["seq"],
                json!(next[p]),
                "publisher {p}: lost, duplicated or reordered"
            );
            next[p] += 1;
            order.push(p);
        }
        sub.quiet().await;
        // Every subscriber sees the channel in the same (acceptance) order.
        match &first_order {
            None => first_order = Some(order),
            Some(first) => assert!(
                first == &order,
                "subscribers disagree on the channel's order"
            ),
        }
    }
}

pub async fn connection_limit_reached_and_freed_keeps_serving<F: Frontend>() {
    let s = start::<F>(r#""MaxConnections": 4"#);
    let witness = Witness::start(s.addr, Duration::from_millis(2)).await; // 2 connections
    let a = Client::connect(s.addr, "/echo").await;
    let _b = Client::connect(s.addr, "/echo").await;
    for _ in 0..3 {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        match tokio_tungstenite::client_async(format!("ws://{}/echo", s.addr), tcp).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
            other => panic!("expected 503, got {:?}", other.map(|_| ())),
        }
    }
    drop(a);
    eventually("a place is free", || s.service.active_connections() < 4).await;
    let _c = tokio::time::timeout(STEP, Client::connect(s.addr, "/echo"))
        .await
        .unwrap();
    witness.finish().await;
}

pub async fn unfinished_handshakes_are_capped<F: Frontend>() {
    use tokio::io::AsyncReadExt;
    let s = start::<F>(r#""MaxConnections": 3, "HandshakeTimeoutMs": 60000"#);
    let witness = Witness::start(s.addr, Duration::from_millis(2)).await; // 2 of 3 places
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    eventually("the silent sockets are pending", || {
        s.service.pending_handshakes() == 3
    })
    .await;
    // Past MaxConnections unfinished handshakes, a new socket is dropped at once instead of
    // waiting for the (long) handshake timeout.
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0) | Err(_))),
        "the surplus socket was dropped: {n:?}"
    );
    drop(silent);
    eventually("the places are free", || {
        s.service.pending_handshakes() == 0
    })
    .await;
    witness.finish().await;
}
