//! The end-to-end suite, written once and run against every frontend (as rustls runs one
//! test file per crypto provider). A frontend's test file includes this module, implements
//! [`Frontend`], and instantiates the tests with `e2e_tests!(TheFrontend);`.
//!
//! Each test starts a real server on an ephemeral loopback port and talks to it with a
//! real WebSocket client (tokio-tungstenite).

#![allow(dead_code)]

#[path = "faults.rs"]
pub mod faults;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rocket_server::Config;
use rocket_server::ServerState;
use rocket_server::rustls;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};

/// How long any single expected event may take.
pub const STEP: Duration = Duration::from_secs(10);

/// Graceful shutdown of a started server; resolves to the connections still open after
/// the grace period.
pub type Stop = Box<dyn FnOnce(Duration) -> Pin<Box<dyn Future<Output = usize> + Send>> + Send>;

/// A server started by a frontend for one test.
pub struct Started {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state, to observe connection counts.
    pub service: Arc<ServerState>,
    /// Graceful shutdown.
    pub stop: Stop,
}

/// What a frontend must provide to run the suite.
pub trait Frontend {
    /// Starts serving `service` on 127.0.0.1 with an ephemeral port; `tls` selects `wss://`.
    /// Called inside the test's tokio runtime.
    fn start(service: ServerState, tls: Option<Arc<rustls::ServerConfig>>) -> Started;
}

/// Hubs `/echo`, `/other` and `/web` (which allows one origin), each with users
/// `backend`/`secret` (7), `frontend` with any secret (3), `reader`/`r` (1), `writer`/`w`
/// (2), `none`/`n` (0) and `hashed` (3, an argon2 PHC hash of `open sesame`); `limits` is
/// spliced into `Limits`.
pub fn config(limits: &str) -> Config {
    let users = r#"{
        "backend": {"Name": "backend", "Secret": "secret", "Permission": 7},
        "frontend": {"Name": "frontend", "Secret": "", "Permission": 3},
        "reader": {"Name": "reader", "Secret": "r", "Permission": 1},
        "writer": {"Name": "writer", "Secret": "w", "Permission": 2},
        "none": {"Name": "none", "Secret": "n", "Permission": 0},
        "hashed": {"Name": "hashed", "Permission": 3,
                   "Secret": "$argon2id$v=19$m=64,t=1,p=1$snHI5xhcATsqfFl8Nsex7g$qeXptikvCfHrC4Sg2gDsZIRKbcf5Y+3c2iq36mmT21E"}}"#;
    Config::from_json(&format!(
        r#"{{"Host":"127.0.0.1","Port":0,
            "Hubs":[{{"Path":"/echo","Codec":"JSON","Users":{users}}},
                    {{"Path":"/other","Codec":"JSON","Users":{users}}},
                    {{"Path":"/web","Users":{users},"AllowedOrigins":["HTTPS://App.Example.com:443"]}}],
            "Limits":{{{limits}}}}}"#
    ))
    .expect("test config is valid")
}

/// Tests that hold a thousand sockets (client and server side in one process) need more
/// than the 1,024 descriptors many systems allow by default: raise the soft limit to the
/// hard one.
pub fn allow_many_sockets() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

pub fn start<F: Frontend>(limits: &str) -> Started {
    F::start(ServerState::new(config(limits)), None)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A test client.
pub struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    /// The token from the greeting.
    pub token: String,
}

impl Client {
    /// Connects to `path` and reads the greeting.
    pub async fn connect(addr: SocketAddr, path: &str) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(Box::new(tcp), addr, path)
            .await
            .expect("handshake")
    }

    async fn handshake(
        io: Box<dyn Io>,
        addr: SocketAddr,
        path: &str,
    ) -> Result<Client, tungstenite::Error> {
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio_tungstenite::client_async(url, io).await?;
        let mut client = Client {
            ws,
            token: String::new(),
        };
        let greeting = client.recv().await;
        client.token = greeting["connected"].as_str().expect("greeting").to_owned();
        Ok(client)
    }

    /// Connects and authenticates.
    pub async fn login(addr: SocketAddr, user: &str, secret: &str) -> Client {
        let mut c = Self::connect(addr, "/echo").await;
        c.send(json!({"authenticate": {"user": user, "secret": secret}}))
            .await;
        assert_eq!(c.recv().await, json!({"authenticated": user}));
        c
    }

    /// Connects, authenticates and subscribes.
    pub async fn subscriber(addr: SocketAddr, channel: &str) -> Client {
        let mut c = Self::login(addr, "backend", "secret").await;
        c.subscribe(channel).await;
        c
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.send(json!({"subscribe": {"channel": channel}})).await;
        assert_eq!(self.recv().await, json!({"subscribed": channel}));
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next data message as JSON; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}"))
    }

    /// The next data message's text; panics on close or timeout.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match m {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code (None: no close frame).
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            let m = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match m {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn quiet(&mut self) {
        if let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_millis(150), self.ws.next()).await
        {
            assert!(
                matches!(m, Message::Ping(_) | Message::Pong(_)),
                "unexpected message {m:?}"
            );
        }
    }
}

/// Waits until `f` holds, for at most [`STEP`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hub_connections(s: &Started, path: &str) -> usize {
    s.service.hub(path).expect("hub").connection_count()
}

// ---------------------------------------------------------------------------------------

pub async fn greeting_is_a_fresh_token<F: Frontend>() {
    let s = start::<F>("");
    let a = Client::connect(s.addr, "/echo").await;
    let b = Client::connect(s.addr, "/echo").await;
    for t in [&a.token, &b.token] {
        assert_eq!(t.len(), 32);
        assert!(
            t.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{t}"
        );
    }
    assert_ne!(a.token, b.token);
    let c = Client::connect(s.addr, "/echo?x=1").await;
    assert_eq!(c.token.len(), 32, "query strings are ignored");
}

pub async fn every_action_and_error<F: Frontend>() {
    let s = start::<F>("");
    let mut a = Client::connect(s.addr, "/echo").await;
    // Anonymous: no permission.
    a.send(json!({"subscribe": {"channel": "c"}})).await;
    assert_eq!(a.recv().await, json!({"err": "ACCESS_DENIED"}));
    a.send(json!({"broadcast": {"event": "e", "channel": "c"}}))
        .await;
    assert_eq!(a.recv().await, json!({"err": "ACCESS_DENIED"}));
    a.send(json!({"authenticate": {"user": "nobody", "secret": "x"}}))
        .await;
    assert_eq!(a.recv().await, json!({"err": "INVALID_USER"}));
    a.send(json!({"authenticate": {"user": "backend", "secret": "wrong"}}))
        .await;
    assert_eq!(a.recv().await, json!({"err": "INVALID_CREDENTIALS"}));
    a.send(json!({"authenticate": {"user": "frontend", "secret": "anything"}}))
        .await;
    assert_eq!(a.recv().await, json!({"authenticated": "frontend"}));
    a.send(json!({"broadcast": {"event": "e", "channel": "nobody-here", "data": 1}}))
        .await;
    assert_eq!(a.recv().await, json!({"err": "INVALID_CHANNEL"}));
    a.subscribe("c").await;
    a.subscribe("c").await; // harmless again
    let mut b = Client::login(s.addr, "backend", "secret").await;
    b.send(json!({"broadcast": {"event": "e", "channel": "c", "data": {"x": [1, "two", null]}}}))
        .await;
    assert_eq!(b.recv().await, json!({"broadcasted": "c"}));
    assert_eq!(
        a.recv().await,
        json!({"event": "e", "channel": "c", "data": {"x": [1, "two", null]}})
    );
    a.quiet().await; // exactly once despite the double subscribe
    b.send(json!({"broadcast": {"event": "e", "channel": "c"}}))
        .await;
    assert_eq!(b.recv().await, json!({"broadcasted": "c"}));
    assert_eq!(a.recv().await, json!({"event": "e", "channel": "c"}));
    // direct
    b.send(json!({"direct": {"event": "dm", "client": a.token, "data": "hi"}}))
        .await;
    assert_eq!(b.recv().await, json!({"directSent": a.token}));
    assert_eq!(
        a.recv().await,
        json!({"event": "dm", "from": b.token, "data": "hi"})
    );
    for bad in ["", "0123", &a.token.to_uppercase()] {
        b.send(json!({"direct": {"event": "dm", "client": bad}}))
            .await;
        assert_eq!(b.recv().await, json!({"err": "INVALID_CLIENT"}));
    }
    // unsubscribe, then the channel is gone
    a.send(json!({"unsubscribe": {"channel": "c"}})).await;
    assert_eq!(a.recv().await, json!({"unsubscribed": "c"}));
    a.send(json!({"unsubscribe": {"channel": "never"}})).await;
    assert_eq!(a.recv().await, json!({"unsubscribed": "never"}));
    b.send(json!({"broadcast": {"event": "e", "channel": "c"}}))
        .await;
    assert_eq!(b.recv().await, json!({"err": "INVALID_CHANNEL"}));
    // malformed requests keep the connection usable
    for bad in [
        "nope",
        "{}",
        "[1]",
        r#"{"subscribe":{"channel":""}}"#,
        r#"{"logout":false}"#,
        r#"{"logout":true,"disconnect":true}"#,
        r#"{"shout":{}}"#,
    ] {
        a.send_text(bad).await;
        assert_eq!(a.recv().await, json!({"err": "INVALID_PAYLOAD"}), "{bad}");
    }
    a.send_message(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(a.recv().await, json!({"err": "INVALID_PAYLOAD"}));
    // logout drops the session
    a.send(json!({"logout": true})).await;
    assert_eq!(a.recv().await, json!({"loggedOut": true}));
    a.send(json!({"subscribe": {"channel": "c"}})).await;
    assert_eq!(a.recv().await, json!({"err": "ACCESS_DENIED"}));
    // disconnect: close 1000, and the server forgets the client
    a.send(json!({"disconnect": true})).await;
    assert_eq!(a.closed().await.map(|c| c.0), Some(1000));
    b.send(json!({"direct": {"event": "dm", "client": a.token}}))
        .await;
    assert_eq!(b.recv().await, json!({"err": "INVALID_CLIENT"}));
    eventually("the client is gone", || hub_connections(&s, "/echo") == 1).await;
}

pub async fn permissions_are_enforced<F: Frontend>() {
    let s = start::<F>("");
    let mut target = Client::subscriber(s.addr, "p").await;
    for (user, secret, read, write) in [
        ("reader", "r", true, false),
        ("writer", "w", false, true),
        ("none", "n", false, false),
    ] {
        let mut c = Client::login(s.addr, user, secret).await;
        c.send(json!({"subscribe": {"channel": "p"}})).await;
        let want = if read {
            json!({"subscribed": "p"})
        } else {
            json!({"err": "ACCESS_DENIED"})
        };
        assert_eq!(c.recv().await, want, "{user} subscribe");
        c.send(json!({"direct": {"event": "e", "client": target.token}}))
            .await;
        let want = if write {
            json!({"directSent": target.token})
        } else {
            json!({"err": "ACCESS_DENIED"})
        };
        assert_eq!(c.recv().await, want, "{user} direct");
        if write {
            assert_eq!(target.recv().await["from"], json!(c.token));
        }
    }
}

pub async fn phc_secrets_and_brute_force<F: Frontend>() {
    let s = start::<F>(r#""MaxFailedAuth": 3"#);
    let mut c = Client::connect(s.addr, "/echo").await;
    c.send(json!({"authenticate": {"user": "hashed", "secret": "open sesame"}}))
        .await;
    // Requests sent while the hash is verified are answered after it, in order.
    c.send(json!({"subscribe": {"channel": "vault"}})).await;
    assert_eq!(c.recv().await, json!({"authenticated": "hashed"}));
    assert_eq!(c.recv().await, json!({"subscribed": "vault"}));
    let mut healthy = Client::subscriber(s.addr, "vault").await;
    for guess in ["open sesame!", "Open sesame", ""] {
        c.send(json!({"authenticate": {"user": "hashed", "secret": guess}}))
            .await;
        assert_eq!(c.recv().await, json!({"err": "INVALID_CREDENTIALS"}));
    }
    assert_eq!(
        c.closed().await.map(|c| c.0),
        Some(1008),
        "closed after MaxFailedAuth"
    );
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    publisher
        .send(json!({"broadcast": {"event": "e", "channel": "vault", "data": 1}}))
        .await;
    assert_eq!(publisher.recv().await, json!({"broadcasted": "vault"}));
    assert_eq!(
        healthy.recv().await["data"],
        json!(1),
        "others are unaffected"
    );
}

pub async fn hubs_are_isolated<F: Frontend>() {
    let s = start::<F>("");
    let mut here = Client::subscriber(s.addr, "shared").await;
    let mut there = Client::connect(s.addr, "/other").await;
    there
        .send(json!({"authenticate": {"user": "backend", "secret": "secret"}}))
        .await;
    assert_eq!(there.recv().await, json!({"authenticated": "backend"}));
    there
        .send(json!({"broadcast": {"event": "e", "channel": "shared"}}))
        .await;
    assert_eq!(there.recv().await, json!({"err": "INVALID_CHANNEL"}));
    there
        .send(json!({"direct": {"event": "e", "client": here.token}}))
        .await;
    assert_eq!(there.recv().await, json!({"err": "INVALID_CLIENT"}));
    here.quiet().await;
}

pub async fn unknown_path_is_404<F: Frontend>() {
    let s = start::<F>("");
    for path in ["/nope", "/echo/", "/"] {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        match Client::handshake(Box::new(tcp), s.addr, path).await {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404, "{path}"),
            Err(e) => panic!("{path}: expected HTTP 404, got {e}"),
            Ok(_) => panic!("{path}: expected HTTP 404, got a connection"),
        }
    }
}

pub async fn thousand_broadcasts_arrive_in_order<F: Frontend>() {
    let s = start::<F>("");
    let mut sub = Client::subscriber(s.addr, "seq").await;
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    for i in 0..1000 {
        publisher
            .send(json!({"broadcast": {"event": "n", "channel": "seq", "data": i}}))
            .await;
    }
    for _ in 0..1000 {
        assert_eq!(publisher.recv().await, json!({"broadcasted": "seq"}));
    }
    for i in 0..1000 {
        assert_eq!(sub.recv().await["data"], json!(i));
    }
}

/// The server writes a broadcast straight to an idle subscriber's socket, and the
/// connection's task writes its own frames (pongs here) and takes over what the socket did
/// not take. A subscriber that pings all along while it reads large broadcasts in fits and
/// starts (so that the socket fills, and writes stop mid-frame) gets every broadcast whole
/// and in order, and every pong. (The narrowest case, a pong due while the hub's write
/// stopped mid-frame, is forced by `rocket-server`'s unit test
/// `a_frame_of_its_own_waits_for_the_rest_of_a_broadcast`.)
pub async fn pongs_never_split_a_broadcast<F: Frontend>() {
    let s = start::<F>(r#""SendQueueBytes": 100000000, "MaxMessageBytes": 2000000"#);
    let mut sub = Client::subscriber(s.addr, "mix").await;
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    const COUNT: u64 = 300;
    let pad = "p".repeat(40_000); // 12 MB in all: far more than the socket buffers
    let publishing = tokio::spawn(async move {
        for i in 0..COUNT {
            publisher
                .send(json!({"broadcast": {"event": "n", "channel": "mix", "data": {"i": i, "pad": pad}}}))
                .await;
            assert_eq!(publisher.recv().await, json!({"broadcasted": "mix"}));
        }
    });
    let (mut next, mut pings, mut pongs) = (0u64, 0u32, 0u32);
    while next < COUNT || pongs < pings {
        if next % 10 == 0 && pings < 40 && next < COUNT {
            sub.send_message(Message::Ping(pings.to_be_bytes().to_vec().into()))
                .await;
            pings += 1;
        }
        if next % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await; // the socket fills meanwhile
        }
        let m = tokio::time::timeout(STEP, sub.ws.next())
            .await
            .expect("timed out waiting for a frame");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("a whole broadcast");
                assert_eq!(v["data"]["i"], json!(next), "in order, none missing");
                next += 1;
            }
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(p.as_ref(), pongs.to_be_bytes(), "pongs in order");
                pongs += 1;
            }
            other => panic!("expected a broadcast or a pong, got {other:?}"),
        }
    }
    publishing.await.unwrap();
    assert_eq!((next, pongs), (COUNT, pings));
}

/// A publisher that pipelines a burst of broadcasts (read by its connection in a row,
/// before the hub writes any of them through) does not make a subscriber that reads
/// everything a slow consumer: 64 broadcasts in one write, against a send queue of 8
/// messages, all arrive, to each of three subscribers (the hub joins broadcasts in a row
/// to the same subscribers into one entry of their queues, and a run longer than the queue
/// is queued message by message, written through as the queue fills).
pub async fn a_pipelined_burst_does_not_make_a_reader_slow<F: Frontend>() {
    let s = start::<F>(r#""SendQueueMessages": 8"#);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(Client::subscriber(s.addr, "burst").await);
    }
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    for i in 0..64 {
        let m = json!({"broadcast": {"event": "n", "channel": "burst", "data": i}});
        publisher
            .ws
            .feed(Message::text(m.to_string()))
            .await
            .expect("feed");
    }
    publisher.ws.flush().await.expect("flush"); // one write: the server reads them in a row
    for sub in &mut subs {
        for i in 0..64 {
            assert_eq!(
                sub.recv().await["data"],
                json!(i),
                "every broadcast, in order"
            );
        }
    }
    for _ in 0..64 {
        assert_eq!(publisher.recv().await, json!({"broadcasted": "burst"}));
    }
    for sub in &mut subs {
        sub.quiet().await; // not closed
    }
    assert_eq!(s.service.hub("/echo").unwrap().connection_count(), 4);
}

/// Bursts to many small channels (a publisher's broadcasts read in a row, about one per
/// subscriber each, written through by the hub, with writer threads for the larger ones)
/// while the subscribers do not read yet: every subscriber gets its channel's broadcasts
/// whole, in order, none missing, and none is taken for a slow consumer, though all of
/// them together fill its send queue of 8 messages ten times over.
pub async fn bursts_to_many_channels_arrive_in_order_everywhere<F: Frontend>() {
    const CHANNELS: usize = 24;
    const BURSTS: usize = 10;
    const PER_BURST: usize = 240; // 10 broadcasts to each channel
    let s = start::<F>(r#""SendQueueMessages": 8"#);
    let mut subs = Vec::new();
    for c in 0..CHANNELS {
        for _ in 0..3 {
            subs.push((c, Client::subscriber(s.addr, &format!("room{c}")).await));
        }
    }
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    for burst in 0..BURSTS {
        for i in 0..PER_BURST {
            let (channel, n) = (i % CHANNELS, burst * (PER_BURST / CHANNELS) + i / CHANNELS);
            let m = json!({"broadcast": {"event": "n", "channel": format!("room{channel}"), "data": n}});
            publisher
                .ws
                .feed(Message::text(m.to_string()))
                .await
                .expect("feed");
        }
        publisher.ws.flush().await.expect("flush"); // one write: read in a row
    }
    let per_channel = BURSTS * PER_BURST / CHANNELS;
    let readers = subs.into_iter().map(|(c, mut sub)| {
        tokio::spawn(async move {
            for n in 0..per_channel {
                let m = sub.recv().await;
                assert_eq!(m["channel"], json!(format!("room{c}")), "its own channel");
                assert_eq!(m["data"], json!(n), "in order, none missing, on room{c}");
            }
            sub.quiet().await; // nothing more, and not closed
            sub
        })
    });
    let mut subs = Vec::new();
    for r in readers.collect::<Vec<_>>() {
        subs.push(r.await.unwrap());
    }
    for _ in 0..BURSTS * PER_BURST {
        let answer = publisher.recv().await;
        assert!(answer.get("broadcasted").is_some(), "{answer}");
    }
    assert_eq!(
        s.service.hub("/echo").unwrap().connection_count(),
        3 * CHANNELS + 1,
        "nobody dropped"
    );
}

pub async fn fan_out_to_hundreds<F: Frontend>() {
    let s = start::<F>("");
    let mut subs = Vec::new();
    for _ in 0..300 {
        subs.push(Client::subscriber(s.addr, "wide").await);
    }
    let mut publisher = Client::login(s.addr, "writer", "w").await;
    for i in 0..20 {
        publisher
            .send(json!({"broadcast": {"event": "n", "channel": "wide", "data": i}}))
            .await;
        assert_eq!(publisher.recv().await, json!({"broadcasted": "wide"}));
    }
    let readers = subs.into_iter().map(|mut c| {
        tokio::spawn(async move {
            for i in 0..20 {
                assert_eq!(c.recv().await["data"], json!(i));
            }
        })
    });
    for r in readers.collect::<Vec<_>>() {
        r.await.unwrap();
    }
}

pub async fn a_vanishing_client_hurts_nobody<F: Frontend>() {
    let s = start::<F>("");
    let mut healthy = Client::subscriber(s.addr, "v").await;
    let mut doomed = Some(Client::subscriber(s.addr, "v").await);
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    for i in 0..2000 {
        if i == 500 {
            doomed.take(); // gone without a close handshake
        }
        publisher
            .send(json!({"broadcast": {"event": "n", "channel": "v", "data": i}}))
            .await;
    }
    for i in 0..2000 {
        assert_eq!(healthy.recv().await["data"], json!(i));
    }
    eventually("the vanished client is forgotten", || {
        hub_connections(&s, "/echo") == 2
    })
    .await;
}

pub async fn oversized_message_closes_1009<F: Frontend>() {
    let s = start::<F>(r#""MaxMessageBytes": 1024"#);
    let mut c = Client::login(s.addr, "backend", "secret").await;
    c.send_text(&format!(
        r#"{{"subscribe":{{"channel":"{}"}}}}"#,
        "x".repeat(256)
    ))
    .await;
    assert_eq!(
        c.recv().await,
        json!({"err": "INVALID_PAYLOAD"}),
        "a 256-byte name is invalid, not too big"
    );
    c.send_text(&"x".repeat(2000)).await;
    assert_eq!(c.closed().await.map(|c| c.0), Some(1009));
}

pub async fn invalid_utf8_closes_1007<F: Frontend>() {
    let s = start::<F>("");
    let mut c = Client::connect(s.addr, "/echo").await;
    let frame = tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    c.send_message(Message::Frame(frame)).await;
    assert_eq!(c.closed().await.map(|c| c.0), Some(1007));
}

pub async fn slow_consumer_is_closed_and_others_lose_nothing<F: Frontend>() {
    let s = start::<F>(r#""SendQueueMessages": 256"#);
    let mut healthy = Client::subscriber(s.addr, "fire").await;
    let _slow = Client::subscriber(s.addr, "fire").await; // never reads again
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    let pad = "y".repeat(4000);
    // 20 MB in all: more than the kernel buffers between server and client plus the
    // queue. The healthy subscriber keeps up (at most 100 messages behind).
    // Written and compared as whole texts (the server forwards `data` unchanged): building
    // and parsing 4 KB JSON values per message cost most of this test's time.
    let body = |i: u64| format!(r#"{{"i":{i},"pad":"{pad}"}}"#);
    let mut seq = 0;
    for _ in 0..50 {
        for i in seq..seq + 100 {
            let data = body(i);
            publisher
                .send_text(&format!(
                    r#"{{"broadcast":{{"event":"n","channel":"fire","data":{data}}}}}"#
                ))
                .await;
        }
        for i in seq..seq + 100 {
            let reply = publisher.recv_text().await;
            assert!(reply == r#"{"broadcasted":"fire"}"#, "{reply}");
            let delivery = healthy.recv_text().await;
            let want = format!(r#"{{"event":"n","channel":"fire","data":{}}}"#, body(i));
            assert!(
                delivery == want,
                "message {i} lost, reordered or altered: {delivery:.80}"
            );
        }
        seq += 100;
    }
    eventually("the slow consumer is disconnected", || {
        hub_connections(&s, "/echo") == 2
    })
    .await;
}

pub async fn graceful_shutdown_sends_1001<F: Frontend>() {
    let s = start::<F>("");
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::subscriber(s.addr, "bye").await);
    }
    let stop = tokio::spawn((s.stop)(Duration::from_secs(5)));
    for c in &mut clients {
        assert_eq!(
            c.closed().await,
            Some((1001, "server shutting down".into()))
        );
    }
    assert_eq!(
        stop.await.unwrap(),
        0,
        "every connection ended within the grace period"
    );
    assert!(TcpStream::connect(s.addr).await.is_err() || s.service.is_shutting_down());
}

pub async fn tls_serves_wss<F: Frontend>() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let s = F::start(ServerState::new(config("")), Some(Arc::new(server_tls)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut c = Client::handshake(Box::new(tls), s.addr, "/echo")
        .await
        .expect("wss handshake");
    c.send(json!({"authenticate": {"user": "backend", "secret": "secret"}}))
        .await;
    assert_eq!(c.recv().await, json!({"authenticated": "backend"}));
    // The HTTP front answers over TLS too.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut buf = Vec::new();
    let r = http_exchange(&mut tls, &mut buf, "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ok"}"#));
    let r = http_exchange(&mut tls, &mut buf, "GET /echo HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 426);
    // Plain ws:// to a TLS port fails.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        Client::handshake(Box::new(tcp), s.addr, "/echo")
            .await
            .is_err()
    );
}

pub async fn idle_clients_are_closed_and_live_ones_kept<F: Frontend>() {
    // Generous margins: `live` must never look idle on a loaded machine (its pongs may be
    // late by a few hundred ms), while `idle` is closed well within the test.
    let s = start::<F>(r#""PingIntervalMs": 200, "IdleTimeoutMs": 1200"#);
    let mut live = Client::connect(s.addr, "/echo").await;
    let mut idle = Client::connect(s.addr, "/echo").await;
    // `live` reads (and so answers pings) for 2.5 s; `idle` reads nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(50), live.ws.next()).await;
    }
    assert_eq!(idle.closed().await, Some((1001, "idle timeout".into())));
    live.send(json!({"logout": true})).await;
    assert_eq!(live.recv().await, json!({"loggedOut": true}));
}

pub async fn stalled_handshakes_are_dropped<F: Frontend>() {
    let s = start::<F>(r#""HandshakeTimeoutMs": 300"#);
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut partial = TcpStream::connect(s.addr).await.unwrap();
    partial
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for sock in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(STEP, sock.read(&mut buf))
            .await
            .expect("dropped in time");
        assert!(matches!(n, Ok(0) | Err(_)), "the server closes the socket");
    }
    Client::connect(s.addr, "/echo").await; // still serving
}

/// A TCP connection to `addr` from the loopback address `source` (any `127.x.y.z` works on
/// Linux), so that one test can play several client addresses.
pub async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

/// `MaxConnectionsPerIp` also bounds one address's unfinished handshakes: an address that
/// opens sockets and sends nothing cannot hold every handshake place for
/// `HandshakeTimeoutMs`, and another address still connects.
pub async fn one_address_cannot_hold_every_handshake_place<F: Frontend>() {
    let s =
        start::<F>(r#""MaxConnections": 4, "MaxConnectionsPerIp": 2, "HandshakeTimeoutMs": 60000"#);
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(connect_from([127, 0, 0, 1], s.addr).await);
    }
    eventually("the silent sockets are pending", || {
        s.service.pending_handshakes() == 2
    })
    .await;
    for _ in 0..2 {
        // Over the address's share: dropped at once, not after the (long) timeout.
        let mut extra = connect_from([127, 0, 0, 1], s.addr).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0) | Err(_))),
            "a third unfinished handshake from one address was dropped: {n:?}"
        );
    }
    assert_eq!(s.service.pending_handshakes(), 2);
    let tcp = connect_from([127, 0, 0, 2], s.addr).await;
    let c = tokio::time::timeout(STEP, Client::handshake(Box::new(tcp), s.addr, "/echo"))
        .await
        .expect("another address connects in time")
        .expect("another address completes its handshake");
    assert_eq!(c.token.len(), 32);
    drop(silent);
    eventually("the places are free", || {
        s.service.pending_handshakes() == 0
    })
    .await;
}

pub async fn connection_limit_refuses_with_503<F: Frontend>() {
    let s = start::<F>(r#""MaxConnections": 2"#);
    let a = Client::connect(s.addr, "/echo").await;
    let _b = Client::connect(s.addr, "/echo").await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    match Client::handshake(Box::new(tcp), s.addr, "/echo").await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    drop(a);
    eventually("a place is free", || s.service.active_connections() < 2).await;
    Client::connect(s.addr, "/echo").await;
}

pub async fn plain_http_connections_count_against_max_connections<F: Frontend>() {
    let s = start::<F>(r#""MaxConnections": 2"#);
    // A keep-alive HTTP connection holds a place while open.
    let mut http = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = http_exchange(
        &mut http,
        &mut buf,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let _ws = Client::connect(s.addr, "/echo").await;
    eventually("two places taken", || s.service.active_connections() == 2).await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    match Client::handshake(Box::new(tcp), s.addr, "/echo").await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Each socket still in its HTTP phase also holds one of the MaxConnections places for
    // unfinished handshakes (the keep-alive `http` holds one): wait for the server to be
    // done with a refused one before opening the next, or the next finds no place and is
    // dropped unanswered (seen on a loaded machine).
    eventually("the refused handshake's place is free", || {
        s.service.pending_handshakes() <= 1
    })
    .await;
    let mut other = TcpStream::connect(s.addr).await.unwrap();
    let r = http_exchange(
        &mut other,
        &mut Vec::new(),
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.header("connection")), (503, Some("close")));
    assert!(closed_by_server(&mut other).await, "closed after the 503");
    // The probes and the metrics are still answered, on a connection closed after it.
    for path in ["/health", "/ready", "/metrics"] {
        eventually("the last connection's place is free", || {
            s.service.pending_handshakes() <= 1
        })
        .await;
        let mut probe = TcpStream::connect(s.addr).await.unwrap();
        let r = http_exchange(
            &mut probe,
            &mut Vec::new(),
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await;
        assert_eq!(
            (r.status, r.header("connection")),
            (200, Some("close")),
            "{path}"
        );
        assert!(closed_by_server(&mut probe).await, "{path}: closed");
    }
    // The HTTP connection goes: its place is free again, and a WebSocket takes it.
    drop(http);
    eventually("the HTTP connection's place is free", || {
        s.service.active_connections() < 2
    })
    .await;
    Client::connect(s.addr, "/echo").await;
}

pub async fn disallowed_origin_is_403<F: Frontend>() {
    let s = start::<F>("");
    let attempt = |origin: Option<&'static str>| async move {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/web",
            s.addr
        ))
        .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        tokio_tungstenite::client_async(req, tcp).await.map(|_| ())
    };
    for origin in [
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.example",
        "null",
    ] {
        match attempt(Some(origin)).await {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403, "{origin}"),
            other => panic!("{origin}: expected 403, got {other:?}"),
        }
    }
    // The entry is configured as `HTTPS://App.Example.com:443`: compared as browsers
    // serialise origins, each of these is the same origin.
    for origin in [
        "https://app.example.com",
        "https://APP.example.com",
        "https://app.example.com:443",
    ] {
        attempt(Some(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin}: allowed origin refused: {e}"));
    }
    attempt(None)
        .await
        .expect("no Origin: a non-browser client");
}

/// One HTTP response as read off a raw connection.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` on `io` and reads one response (its body by `Content-Length`); the
/// bytes after it stay in `buf` for the next call.
pub async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    request: &str,
) -> HttpResponse {
    io.write_all(request.as_bytes()).await.unwrap();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(STEP, io.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response; got {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let head_only = request.starts_with("HEAD ");
    let body_len = if head_only { 0 } else { len };
    while buf.len() < head_end + body_len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(STEP, io.read(&mut chunk))
            .await
            .expect("a body in time")
            .expect("read");
        assert!(n > 0, "connection closed inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(buf[head_end..head_end + body_len].to_vec()).unwrap();
    buf.drain(..head_end + body_len);
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Whether the server closed `io` (EOF or reset) within [`STEP`].
pub async fn closed_by_server<S: AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut chunk = [0u8; 64];
    matches!(
        tokio::time::timeout(STEP, io.read(&mut chunk)).await,
        Ok(Ok(0) | Err(_))
    )
}

pub async fn health_and_plain_http_share_the_port<F: Frontend>() {
    let s = start::<F>("");
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    // One keep-alive connection: every answer comes on it, in order.
    let r = http_exchange(
        &mut tcp,
        &mut buf,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = http_exchange(&mut tcp, &mut buf, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 426, "a hub path without Upgrade: {r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let r = http_exchange(&mut tcp, &mut buf, "GET /nope HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 404);
    let r = http_exchange(&mut tcp, &mut buf, "DELETE /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 405);
    // Two pipelined requests, then Connection: close.
    let both = "HEAD /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n";
    let r = http_exchange(&mut tcp, &mut buf, both).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""), "HEAD has no body");
    let r = http_exchange(&mut tcp, &mut buf, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut tcp).await);
    // A garbage head gets 400 and the connection closes.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let r = http_exchange(&mut tcp, &mut Vec::new(), "NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert!(closed_by_server(&mut tcp).await);
    // An upgrade with the first WebSocket frame in the same packet loses nothing.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut c = Client::handshake(Box::new(tcp), s.addr, "/echo")
        .await
        .unwrap();
    c.send(json!({"logout": true})).await;
    assert_eq!(c.recv().await, json!({"loggedOut": true}));
    assert_eq!(s.service.pending_handshakes(), 0);
}

pub async fn hub_paths_cannot_take_the_http_endpoints<F: Frontend>() {
    for path in ["/health", "/ready", "/metrics", "/api/broadcast"] {
        let text = format!(r#"{{"Hubs":[{{"Path":"{path}"}}]}}"#);
        let e = Config::from_json(&text).unwrap_err().to_string();
        assert!(
            e.contains("Hubs[0].Path") && e.contains("reserved"),
            "{path}: {e}"
        );
        let e = ServerState::new(config(""))
            .with_protocol(
                path,
                rocket_proto::Engine::new(&Default::default(), Default::default()),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("reserved"), "{path}: {e}");
    }
    // Near misses are ordinary hubs, and /health still answers beside them.
    let config = Config::from_json(
        r#"{"Hubs":[{"Path":"/healthz","Users":{"u":{"Permission":3}}},{"Path":"/apix"}]}"#,
    )
    .unwrap();
    let s = F::start(ServerState::new(config), None);
    Client::connect(s.addr, "/healthz").await;
    Client::connect(s.addr, "/apix").await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let r = http_exchange(&mut tcp, &mut Vec::new(), "GET /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

/// A subscriber that stops reading while large messages are queued for it: its write
/// stalls, and it must not be held for as long as TCP keeps the socket.
async fn stall_a_subscriber(s: &Started, messages: usize, size: usize) -> (Client, TcpStream) {
    // A small receive buffer, so the stall comes after little data.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    let r = http_exchange(&mut stalled, &mut buf, &upgrade).await;
    assert_eq!(r.status, 101);
    // Masked client frames: authenticate, subscribe (the replies are never read).
    for text in [
        r#"{"authenticate":{"user":"backend","secret":"secret"}}"#,
        r#"{"subscribe":{"channel":"big"}}"#,
    ] {
        stalled.write_all(&masked_text_frame(text)).await.unwrap();
    }
    // Read up to the subscribe reply, then never again.
    while !buf.windows(20).any(|w| w == br#"{"subscribed":"big"}"#) {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(STEP, stalled.read(&mut chunk))
            .await
            .expect("replies in time")
            .unwrap();
        assert!(n > 0, "closed before subscribing");
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut witness = Client::subscriber(s.addr, "big").await;
    let mut publisher = Client::login(s.addr, "backend", "secret").await;
    let pad = "z".repeat(size);
    for i in 0..messages {
        publisher
            .send(json!({"broadcast": {"event": "big", "channel": "big", "data": {"i": i, "pad": pad}}}))
            .await;
        assert_eq!(publisher.recv().await, json!({"broadcasted": "big"}));
        assert_eq!(
            witness.recv().await["data"]["i"],
            json!(i),
            "the witness gets everything"
        );
    }
    drop(publisher);
    (witness, stalled)
}

fn masked_text_frame(text: &str) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    let len = text.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

pub async fn a_client_that_stops_reading_is_dropped_by_the_write_timeout<F: Frontend>() {
    // Idle timeout and the queue bounds out of the way: only the write deadline can act.
    let s = start::<F>(
        r#""WriteTimeoutMs": 1000, "PingIntervalMs": 0, "IdleTimeoutMs": 0,
           "MaxMessageBytes": 2000000, "SendQueueBytes": 100000000"#,
    );
    let (mut witness, _stalled) = stall_a_subscriber(&s, 12, 900_000).await;
    let queued = tokio::time::Instant::now();
    eventually("the stalled client is dropped", || {
        s.service.hub("/echo").unwrap().connection_count() == 1
    })
    .await;
    let took = queued.elapsed();
    // WriteTimeoutMs, plus up to one tick (the period is the write timeout here) and slack.
    assert!(
        took < Duration::from_millis(2000 + 1500),
        "dropped after {took:?}"
    );
    witness.send(json!({"logout": true})).await;
    assert_eq!(witness.recv().await, json!({"loggedOut": true}));
}

pub async fn timers_run_while_a_write_is_stalled<F: Frontend>() {
    // The write deadline far away: the idle timeout must still close the stalled client.
    let s = start::<F>(
        r#""WriteTimeoutMs": 600000, "PingIntervalMs": 500, "IdleTimeoutMs": 2000,
           "MaxMessageBytes": 2000000, "SendQueueBytes": 100000000"#,
    );
    let (mut witness, _stalled) = stall_a_subscriber(&s, 12, 900_000).await;
    let queued = tokio::time::Instant::now();
    // The witness keeps reading (and so answers pings) meanwhile.
    while s.service.hub("/echo").unwrap().connection_count() > 1 {
        assert!(queued.elapsed() < STEP, "the stalled client is still open");
        let _ = tokio::time::timeout(Duration::from_millis(50), witness.ws.next()).await;
    }
    let took = queued.elapsed();
    assert!(
        took < Duration::from_millis(2000 + 500 + 2000 + 1500),
        "closed after {took:?}"
    );
    // The witness answered pings all along (its client does), so it is still here.
    witness.send(json!({"logout": true})).await;
    assert_eq!(witness.recv().await, json!({"loggedOut": true}));
}

pub async fn queued_bytes_over_the_bound_make_a_slow_consumer<F: Frontend>() {
    let s = start::<F>(
        r#""WriteTimeoutMs": 600000, "MaxMessageBytes": 2000000, "SendQueueBytes": 1048576"#,
    );
    // 12 × 900 KB is far past the kernel's buffers plus 1 MiB of queue.
    let (mut witness, _stalled) = stall_a_subscriber(&s, 12, 900_000).await;
    eventually("the stalled client is cut off as a slow consumer", || {
        s.service.hub("/echo").unwrap().connection_count() == 1
    })
    .await;
    let (_, m) = scrape(s.addr, None).await;
    let slow = [("hub", "/echo"), ("reason", "slow_consumer")];
    assert_eq!(
        sample(&m, "rocket_closes_total", &slow),
        1.0,
        "counted in the metrics"
    );
    witness.send(json!({"logout": true})).await;
    assert_eq!(witness.recv().await, json!({"loggedOut": true}));
}

// ---------------------------------------------------------------------------------------
// /ready, /metrics and the publish API

/// `GET /metrics`, parsed with a Prometheus text-format parser.
pub async fn scrape(
    addr: SocketAddr,
    token: Option<&str>,
) -> (HttpResponse, prometheus_parse::Scrape) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let r = http_exchange(
        &mut tcp,
        &mut Vec::new(),
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await;
    let lines = r.body.lines().map(|l| Ok(l.to_owned()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus text exposition");
    (r, scrape)
}

/// The value of the sample `name` whose labels include `labels`; panics when absent.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
        Some(prometheus_parse::Value::Untyped(v)) => *v,
        other => panic!("{name}{labels:?}: {other:?}"),
    }
}

/// A publish API request on `io`: `POST path` with `body` and Basic credentials.
pub async fn api<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    path: &str,
    credentials: Option<&str>,
    body: &str,
) -> HttpResponse {
    use base64::Engine as _;
    let auth = credentials.map_or(String::new(), |c| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(io, buf, &request).await
}

pub async fn ready_answers_and_metrics_count_what_happened<F: Frontend>() {
    let s = start::<F>("");
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = http_exchange(&mut tcp, &mut buf, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ready"}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = http_exchange(
        &mut tcp,
        &mut buf,
        "POST /ready HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    // Before anything happens, every family is declared and the per-hub gauges are 0.
    let (r, first) = scrape(s.addr, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for family in [
        "rocket_connections",
        "rocket_connections_opened_total",
        "rocket_subscriptions",
        "rocket_channels",
        "rocket_frames_received_total",
        "rocket_broadcasts_total",
        "rocket_directs_total",
        "rocket_deliveries_total",
        "rocket_closes_total",
        "rocket_auth_failures_total",
        "rocket_handshakes_refused_total",
        "rocket_http_requests_total",
    ] {
        assert!(
            r.body.contains(&format!("# HELP {family} ")),
            "{family} has HELP"
        );
        assert!(
            r.body.contains(&format!("# TYPE {family} ")),
            "{family} has TYPE"
        );
    }
    for hub in ["/echo", "/other", "/web"] {
        for gauge in [
            "rocket_connections",
            "rocket_subscriptions",
            "rocket_channels",
        ] {
            assert_eq!(sample(&first, gauge, &[("hub", hub)]), 0.0, "{gauge} {hub}");
        }
    }
    assert_eq!(
        sample(
            &first,
            "rocket_http_requests_total",
            &[("path", "/ready"), ("status", "200")]
        ),
        1.0
    );

    // What the test does: 3 connections, 2 subscriptions, 1 broadcast to 2, 1 direct,
    // 1 failed authentication, 1 client close, 1 refused handshake (404), 1 PHC login.
    let mut a = Client::subscriber(s.addr, "news").await;
    let mut b = Client::subscriber(s.addr, "news").await;
    let mut c = Client::connect(s.addr, "/echo").await;
    c.send(json!({"authenticate": {"user": "backend", "secret": "wrong"}}))
        .await;
    assert_eq!(c.recv().await, json!({"err": "INVALID_CREDENTIALS"}));
    c.send(json!({"authenticate": {"user": "backend", "secret": "secret"}}))
        .await;
    assert_eq!(c.recv().await, json!({"authenticated": "backend"}));
    c.send(json!({"broadcast": {"channel": "news", "event": "e"}}))
        .await;
    assert_eq!(c.recv().await, json!({"broadcasted": "news"}));
    c.send(json!({"direct": {"client": a.token, "event": "d"}}))
        .await;
    assert_eq!(c.recv().await, json!({"directSent": a.token}));
    assert_eq!(a.recv().await["event"], "e");
    assert_eq!(a.recv().await["event"], "d");
    assert_eq!(b.recv().await["event"], "e");
    let tcp404 = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        Client::handshake(Box::new(tcp404), s.addr, "/nope")
            .await
            .is_err()
    );
    b.ws.close(None).await.unwrap();
    eventually("b is gone", || hub_connections(&s, "/echo") == 2).await;

    let (_, m) = scrape(s.addr, None).await;
    let echo = [("hub", "/echo")];
    assert_eq!(sample(&m, "rocket_connections", &echo), 2.0);
    assert_eq!(sample(&m, "rocket_connections_opened_total", &echo), 3.0);
    assert_eq!(sample(&m, "rocket_subscriptions", &echo), 1.0);
    assert_eq!(sample(&m, "rocket_channels", &echo), 1.0);
    assert_eq!(sample(&m, "rocket_broadcasts_total", &echo), 1.0);
    assert_eq!(sample(&m, "rocket_directs_total", &echo), 1.0);
    assert_eq!(
        sample(&m, "rocket_deliveries_total", &echo),
        3.0,
        "two broadcast deliveries and one direct"
    );
    assert_eq!(sample(&m, "rocket_auth_failures_total", &echo), 1.0);
    // a, b: auth + subscribe; c: two authenticates, broadcast, direct.
    assert_eq!(sample(&m, "rocket_frames_received_total", &echo), 8.0);
    assert_eq!(
        sample(
            &m,
            "rocket_closes_total",
            &[("hub", "/echo"), ("reason", "client")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "rocket_closes_total",
            &[("hub", "/echo"), ("reason", "slow_consumer")]
        ),
        0.0
    );
    assert_eq!(
        sample(&m, "rocket_handshakes_refused_total", &[("status", "404")]),
        1.0
    );
    assert_eq!(
        sample(&m, "rocket_handshakes_refused_total", &[("status", "403")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "rocket_http_requests_total",
            &[("path", "/metrics"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(sample(&m, "rocket_connections", &[("hub", "/other")]), 0.0);
    drop((a, c));

    // During shutdown /ready answers 503.
    s.service.shutdown();
    let r = http_exchange(&mut tcp, &mut buf, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, r#"{"status":"shutting down"}"#)
    );
}

pub async fn metrics_can_require_a_bearer_token<F: Frontend>() {
    let mut config = config("");
    config.metrics_token = "s3cret-token".into();
    let s = F::start(ServerState::new(config), None);
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token-"),
    ] {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let r = http_exchange(
            &mut tcp,
            &mut Vec::new(),
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
        )
        .await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="rocket""#)
        );
        assert!(!r.body.contains("rocket_"), "no metrics without the token");
    }
    let (r, m) = scrape(s.addr, Some("s3cret-token")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sample(
            &m,
            "rocket_http_requests_total",
            &[("path", "/metrics"), ("status", "401")]
        ),
        4.0
    );
}

pub async fn publish_api_delivers_and_answers_every_error<F: Frontend>() {
    let s = start::<F>(r#""MaxMessageBytes": 4096, "MaxFailedAuth": 3"#);
    let mut sub = Client::subscriber(s.addr, "news").await;
    let mut ws_pub = Client::login(s.addr, "backend", "secret").await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    let body = r#"{"hub":"/echo","channel":"news","event":"e","data":{"n":1}}"#;
    // One keep-alive connection carries every request below.
    let r = api(
        &mut tcp,
        &mut buf,
        "/api/broadcast",
        Some("backend:secret"),
        body,
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"broadcasted":"news"}"#)
    );
    assert_eq!(r.header("connection"), None, "kept alive");
    let over_api = sub.recv_text().await;
    ws_pub
        .send(json!({"broadcast": {"channel": "news", "event": "e", "data": {"n": 1}}}))
        .await;
    assert_eq!(ws_pub.recv().await, json!({"broadcasted": "news"}));
    assert_eq!(
        sub.recv_text().await,
        over_api,
        "exactly what a WebSocket broadcast gives"
    );

    let direct = format!(
        r#"{{"hub":"/echo","client":"{}","event":"d","data":[1]}}"#,
        sub.token
    );
    let r = api(&mut tcp, &mut buf, "/api/direct", Some("writer:w"), &direct).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!(r#"{{"directSent":"{}"}}"#, sub.token));
    assert_eq!(
        sub.recv().await,
        json!({"event": "d", "data": [1]}),
        "no from"
    );

    // A PHC user is verified off the executor.
    let r = api(
        &mut tcp,
        &mut buf,
        "/api/broadcast",
        Some("hashed:open sesame"),
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sub.recv_text().await, over_api);

    let unknown_client =
        r#"{"hub":"/echo","client":"00000000000000000000000000000000","event":"d"}"#;
    for (path, credentials, body, status, err) in [
        (
            "/api/broadcast",
            Some("backend:secret"),
            "{",
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "/api/broadcast",
            Some("backend:secret"),
            r#"{"hub":"/echo","event":"e"}"#,
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "/api/broadcast",
            Some("backend:secret"),
            r#"{"hub":"/nope","channel":"c","event":"e"}"#,
            404,
            "INVALID_HUB",
        ),
        (
            "/api/broadcast",
            Some("reader:r"),
            body,
            403,
            "ACCESS_DENIED",
        ),
        (
            "/api/broadcast",
            Some("backend:secret"),
            r#"{"hub":"/echo","channel":"empty","event":"e"}"#,
            404,
            "INVALID_CHANNEL",
        ),
        (
            "/api/direct",
            Some("backend:secret"),
            unknown_client,
            404,
            "INVALID_CLIENT",
        ),
        // Shape comes before the hub, the hub before credentials.
        ("/api/broadcast", None, "[]", 400, "INVALID_PAYLOAD"),
        (
            "/api/broadcast",
            None,
            r#"{"hub":"/nope","channel":"c","event":"e"}"#,
            404,
            "INVALID_HUB",
        ),
        // Credentials come before the permission and the target.
        (
            "/api/broadcast",
            Some("ghost:x"),
            r#"{"hub":"/echo","channel":"empty","event":"e"}"#,
            401,
            "INVALID_USER",
        ),
    ] {
        let r = api(&mut tcp, &mut buf, path, credentials, body).await;
        assert_eq!(r.status, status, "{path} {body}");
        assert_eq!(r.body, format!(r#"{{"err":"{err}"}}"#), "{path} {body}");
        if status == 401 {
            assert_eq!(
                r.header("www-authenticate"),
                Some(r#"Basic realm="rocket""#)
            );
        }
    }
    // Failed authentications count toward MaxFailedAuth (3) on the connection: the
    // third one closes it.
    let r = api(&mut tcp, &mut buf, "/api/broadcast", None, body).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, r#"{"err":"INVALID_USER"}"#)
    );
    let r = api(
        &mut tcp,
        &mut buf,
        "/api/broadcast",
        Some("backend:wrong"),
        body,
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, r#"{"err":"INVALID_CREDENTIALS"}"#)
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut tcp).await);

    // Size first (413), then the body is never read; other methods get 405.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let big = format!(
        r#"{{"hub":"/echo","channel":"news","event":"e","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let r = api(
        &mut tcp,
        &mut Vec::new(),
        "/api/broadcast",
        Some("backend:secret"),
        &big,
    )
    .await;
    assert_eq!(r.status, 413);
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let r = http_exchange(
        &mut tcp,
        &mut Vec::new(),
        "GET /api/broadcast HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = http_exchange(
        &mut tcp,
        &mut Vec::new(),
        "POST /api/other HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404);

    let (_, m) = scrape(s.addr, None).await;
    let echo = [("hub", "/echo")];
    assert_eq!(
        sample(&m, "rocket_broadcasts_total", &echo),
        3.0,
        "two over the API, one over WebSocket"
    );
    assert_eq!(sample(&m, "rocket_directs_total", &echo), 1.0);
    assert_eq!(
        sample(&m, "rocket_auth_failures_total", &echo),
        3.0,
        "ghost, no credentials, wrong"
    );
    assert_eq!(
        sample(
            &m,
            "rocket_http_requests_total",
            &[("path", "/api/broadcast"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "rocket_http_requests_total",
            &[("path", "/api/broadcast"), ("status", "413")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "rocket_http_requests_total",
            &[("path", "other"), ("status", "404")]
        ),
        1.0
    );
}

pub async fn publish_api_keeps_per_channel_order_beside_websocket_traffic<F: Frontend>() {
    let s = start::<F>("");
    let mut sub = Client::subscriber(s.addr, "seq").await;
    let addr = s.addr;
    // A WebSocket publisher on another channel keeps the hub busy meanwhile.
    let mut noise_sub = Client::subscriber(addr, "noise").await;
    let noise = tokio::spawn(async move {
        let mut p = Client::login(addr, "backend", "secret").await;
        for i in 0..500 {
            p.send(json!({"broadcast": {"channel": "noise", "event": "n", "data": i}}))
                .await;
            assert_eq!(p.recv().await, json!({"broadcasted": "noise"}));
        }
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..500 {
        let body = format!(r#"{{"hub":"/echo","channel":"seq","event":"s","data":{i}}}"#);
        let r = api(
            &mut tcp,
            &mut buf,
            "/api/broadcast",
            Some("backend:secret"),
            &body,
        )
        .await;
        assert_eq!(r.status, 200, "{i}: {}", r.body);
    }
    for i in 0..500 {
        assert_eq!(sub.recv().await["data"], json!(i), "in order, none missing");
    }
    noise.await.unwrap();
    for i in 0..500 {
        assert_eq!(noise_sub.recv().await["data"], json!(i));
    }
}

/// Publishes a client pipelines over HTTP are read in a row and written as one burst: each
/// still gets its answer, in order among the connection's other answers, and every
/// subscriber every message, in order, whether the connection then waits for more or
/// closes.
pub async fn pipelined_publishes_over_http_are_answered_and_delivered_in_order<F: Frontend>() {
    const ROUNDS: usize = 2;
    const PER_ROUND: usize = 60; // alternating between two channels
    // The subscribers' tasks look at their queues only when woken: no tick writes for them
    // within the test's patience (`STEP`).
    let s = start::<F>(r#""WriteTimeoutMs": 30000, "PingIntervalMs": 0, "IdleTimeoutMs": 0"#);
    let mut subs = Vec::new();
    for c in ["pa", "pb"] {
        for _ in 0..20 {
            subs.push((c, Client::subscriber(s.addr, c).await));
        }
    }
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = Vec::new();
    let basic = |credentials: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(credentials)
    };
    let (plain, hashed) = (basic("backend:secret"), basic("hashed:open sesame"));
    for round in 0..ROUNDS {
        let last = round + 1 == ROUNDS;
        // One write: a run of publishes with a malformed one and a probe among them, a few
        // by a user whose PHC secret is verified off the connection's task (the connection
        // waits for that in the middle of the run); the last round ends with
        // `Connection: close`.
        let mut requests = String::new();
        let mut expected = Vec::new();
        for i in 0..PER_ROUND {
            let n = round * PER_ROUND / 2 + i / 2;
            let channel = ["pa", "pb"][i % 2];
            let body = format!(r#"{{"hub":"/echo","channel":"{channel}","event":"e","data":{n}}}"#);
            let close = if last && i + 1 == PER_ROUND {
                "Connection: close\r\n"
            } else {
                ""
            };
            let auth = if i % 7 == 3 { &hashed } else { &plain };
            requests += &format!(
                "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n{close}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            expected.push((200, format!(r#"{{"broadcasted":"{channel}"}}"#)));
            if i == PER_ROUND / 3 {
                requests += "POST /api/broadcast HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]";
                expected.push((400, r#"{"err":"INVALID_PAYLOAD"}"#.to_owned()));
                requests += "GET /health HTTP/1.1\r\n\r\n";
                expected.push((200, r#"{"status":"ok"}"#.to_owned()));
            }
        }
        tcp.write_all(requests.as_bytes()).await.unwrap();
        for (k, (status, body)) in expected.iter().enumerate() {
            let r = http_exchange(&mut tcp, &mut buf, "").await;
            assert_eq!(
                (r.status, &r.body),
                (*status, body),
                "answer {k} of round {round}"
            );
        }
        // The connection now waits (or closes): every delivery of the run is written.
        for (c, sub) in &mut subs {
            for n in round * PER_ROUND / 2..(round + 1) * PER_ROUND / 2 {
                let m = sub.recv().await;
                assert_eq!(m["channel"], json!(*c), "its own channel");
                assert_eq!(m["data"], json!(n), "in order, none missing, on {c}");
            }
        }
    }
    assert!(
        closed_by_server(&mut tcp).await,
        "closed after Connection: close"
    );
    futures_util::future::join_all(subs.iter_mut().map(|(_, sub)| sub.quiet())).await;
}

/// A custom protocol for the timer test, served with `ServerState::with_protocol`: it greets
/// like Rocket, and answers the frame `in N` with `{"later":N}` N ms later, through
/// `poll_timeout` and `handle_timeout`. It notes when a request came from the system clock
/// (a test protocol may; the engine never reads one) and is told the time when its timer
/// fires.
#[derive(Default)]
struct Later {
    due: Vec<(std::time::Instant, rocket_proto::ClientId, u64)>,
    out: std::collections::VecDeque<rocket_proto::Output>,
}

impl rocket_proto::Protocol for Later {
    fn handle_connect(
        &mut self,
        client: rocket_proto::ClientId,
        token: rocket_proto::Token,
    ) -> Result<(), rocket_proto::ConnectError> {
        let payload =
            rocket_proto::Payload::text(json!({ "connected": token.to_string() }).to_string());
        self.out
            .push_back(rocket_proto::Output::Send { client, payload });
        Ok(())
    }

    fn handle_message(&mut self, client: rocket_proto::ClientId, frame: rocket_proto::Message<'_>) {
        let rocket_proto::Message::Text(text) = frame else {
            return;
        };
        if let Some(ms) = text.strip_prefix("in ").and_then(|n| n.parse().ok()) {
            let at = std::time::Instant::now() + Duration::from_millis(ms);
            self.due.push((at, client, ms));
        }
    }

    fn handle_disconnect(&mut self, client: rocket_proto::ClientId) {
        self.due.retain(|d| d.1 != client);
    }

    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.due.sort();
        while self.due.first().is_some_and(|d| d.0 <= now) {
            let (_, client, ms) = self.due.remove(0);
            let payload = rocket_proto::Payload::text(json!({ "later": ms }).to_string());
            self.out
                .push_back(rocket_proto::Output::Send { client, payload });
        }
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.due.iter().map(|d| d.0).min()
    }

    fn poll_output(&mut self) -> Option<rocket_proto::Output> {
        self.out.pop_front()
    }
}

pub async fn a_protocol_timer_fires_on_time<F: Frontend>() {
    let service = ServerState::new(config(""))
        .with_protocol("/later", Later::default())
        .unwrap();
    let s = F::start(service, None);
    let mut c = Client::connect(s.addr, "/later").await;
    let ms = |d: Duration| d.as_millis();
    let sent = std::time::Instant::now();
    c.send_text("in 300").await;
    assert_eq!(c.recv().await, json!({ "later": 300 }));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "delivered after {} ms",
        ms(took)
    );
    // A timeout earlier than the one the hub's timer sleeps on wakes it.
    let sent = std::time::Instant::now();
    c.send_text("in 1000").await;
    c.send_text("in 300").await;
    assert_eq!(c.recv().await, json!({ "later": 300 }));
    let first = sent.elapsed();
    assert_eq!(c.recv().await, json!({ "later": 1000 }));
    let second = sent.elapsed();
    assert!(
        first >= Duration::from_millis(300) && first < Duration::from_millis(1000),
        "the earlier timeout came after {} ms",
        ms(first)
    );
    assert!(
        second >= Duration::from_millis(1000) && second < Duration::from_secs(4),
        "the later timeout came after {} ms",
        ms(second)
    );
    // Shutdown ends the timer with everything else.
    let stop = tokio::spawn((s.stop)(Duration::from_secs(5)));
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(1001));
    assert_eq!(stop.await.unwrap(), 0);
}

pub fn close_code(c: CloseCode) -> u16 {
    c.into()
}

// ---------------------------------------------------------------------------------------
// History, recovery and presence

/// `/echo` as in [`config`], `/live` with `History` (20,000 events, 60 s), `Presence` and
/// `JoinLeave`, and `/short` with a history of 1 s; send queues long enough for a test
/// client to fall 10,000 messages behind without being cut off.
pub fn history_config() -> Config {
    let users = r#"{
        "backend": {"Secret": "secret", "Permission": 7},
        "frontend": {"Secret": "", "Permission": 3},
        "reader": {"Secret": "r", "Permission": 1}}"#;
    Config::from_json(&format!(
        r#"{{"Host":"127.0.0.1","Port":0,
            "Hubs":[{{"Path":"/echo","Users":{users}}},
                    {{"Path":"/live","Users":{users},"History":{{"Size":20000,"TtlMs":60000}},
                      "Presence":true,"JoinLeave":true}},
                    {{"Path":"/short","Users":{users},"History":{{"Size":10,"TtlMs":1000}}}}],
            "Limits":{{"SendQueueMessages":20000,"SendQueueBytes":16777216}}}}"#
    ))
    .expect("test config is valid")
}

impl Client {
    /// Connects to `path` and authenticates as `user`.
    pub async fn login_at(addr: SocketAddr, path: &str, user: &str, secret: &str) -> Client {
        let mut c = Self::connect(addr, path).await;
        c.send(json!({"authenticate": {"user": user, "secret": secret}}))
            .await;
        assert_eq!(c.recv().await, json!({"authenticated": user}));
        c
    }

    /// The next data message as JSON, or `None` once the connection closed (for any
    /// reason: a close frame, an error, the end of the stream).
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match m {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }
}

pub async fn reconnect_and_recover_under_a_flat_out_publisher<F: Frontend>() {
    const TOTAL: u64 = 10_000;
    let s = F::start(ServerState::new(history_config()), None);
    let addr = s.addr;
    let mut sub = Client::login_at(addr, "/live", "frontend", "").await;
    sub.send(json!({"subscribe": {"channel": "feed"}})).await;
    let first = sub.recv().await;
    assert_eq!(first["offset"], 0);
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    // A steady subscriber keeps the channel alive while `sub` is away (a channel without
    // subscribers refuses broadcasts) and sees every message once, in order.
    let mut keeper = Client::login_at(addr, "/live", "reader", "r").await;
    keeper.send(json!({"subscribe": {"channel": "feed"}})).await;
    assert_eq!(keeper.recv().await["subscribed"], "feed");
    let keeper = tokio::spawn(async move {
        for n in 0..TOTAL {
            let mut m = keeper.recv().await;
            while m.get("join").is_some() || m.get("leave").is_some() {
                m = keeper.recv().await;
            }
            assert_eq!(
                (&m["offset"], &m["data"]),
                (&json!(n + 1), &json!(n)),
                "{m}"
            );
        }
    });
    // The publisher pipelines batches of broadcasts as fast as the server answers them.
    let publisher = tokio::spawn(async move {
        let mut p = Client::login_at(addr, "/live", "backend", "secret").await;
        for batch in 0..TOTAL / 100 {
            for i in 0..100 {
                let n = batch * 100 + i;
                p.send(json!({"broadcast": {"event": "n", "channel": "feed", "data": n}}))
                    .await;
            }
            for _ in 0..100 {
                assert_eq!(p.recv().await, json!({"broadcasted": "feed"}));
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let take = |m: &Value, seen: &mut Vec<u64>| {
        assert_eq!(m["epoch"], epoch.as_str(), "{m}");
        let offset = m["offset"].as_u64().expect("an offset");
        assert_eq!(m["data"].as_u64(), Some(offset - 1), "{m}");
        seen.push(offset);
    };
    let mut reconnects = 0;
    while seen.len() < TOTAL as usize {
        // Drop the connection every 1,500 messages; a close by the server (a slow consumer)
        // is a loss like any other.
        let mut next = sub.next_json().await;
        // `sub`'s reconnections come and go on this JoinLeave hub.
        while next
            .as_ref()
            .is_some_and(|m| m.get("join").is_some() || m.get("leave").is_some())
        {
            next = sub.next_json().await;
        }
        let live = match next {
            Some(m) if seen.len() % 1500 != 1499 => {
                take(&m, &mut seen);
                true
            }
            Some(m) => {
                take(&m, &mut seen);
                false
            }
            None => false,
        };
        if live {
            continue;
        }
        reconnects += 1;
        drop(sub);
        sub = Client::login_at(addr, "/live", "frontend", "").await;
        let last = seen.last().copied().unwrap_or(0);
        sub.send(json!({"subscribe": {"channel": "feed",
                                      "since": {"offset": last, "epoch": epoch}}}))
            .await;
        let reply = sub.recv().await;
        assert_eq!(reply["recovered"], true, "{reply}");
        for m in reply["events"].as_array().expect("events") {
            take(m, &mut seen);
        }
    }
    publisher.await.unwrap();
    keeper.await.unwrap();
    assert!(reconnects >= 5, "{reconnects} reconnections");
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
}

pub async fn presence_and_join_leave_with_several_clients<F: Frontend>() {
    let s = F::start(ServerState::new(history_config()), None);
    let subscribe = async |c: &mut Client| {
        c.send(json!({"subscribe": {"channel": "room"}})).await;
        assert_eq!(c.recv().await["subscribed"], "room");
    };
    let event = |kind: &str, c: &Client, user: &str| json!({ kind: {"channel": "room", "client": c.token, "user": user} });
    let mut a = Client::login_at(s.addr, "/live", "backend", "secret").await;
    let mut b = Client::login_at(s.addr, "/live", "frontend", "").await;
    let mut c = Client::login_at(s.addr, "/live", "reader", "r").await;
    subscribe(&mut a).await;
    subscribe(&mut b).await;
    assert_eq!(a.recv().await, event("join", &b, "frontend"));
    subscribe(&mut c).await;
    assert_eq!(a.recv().await, event("join", &c, "reader"));
    assert_eq!(b.recv().await, event("join", &c, "reader"));
    c.send(json!({"presence": {"channel": "room"}})).await;
    assert_eq!(
        c.recv().await,
        json!({"presence": {"channel": "room", "clients": {
            a.token.clone(): {"user": "backend"},
            b.token.clone(): {"user": "frontend"},
            c.token.clone(): {"user": "reader"}}}})
    );
    // Unsubscribe, logout, a lost connection: each is a leave for those who stay.
    b.send(json!({"unsubscribe": {"channel": "room"}})).await;
    assert_eq!(b.recv().await, json!({"unsubscribed": "room"}));
    assert_eq!(a.recv().await, event("leave", &b, "frontend"));
    assert_eq!(c.recv().await, event("leave", &b, "frontend"));
    c.send(json!({"logout": true})).await;
    assert_eq!(c.recv().await, json!({"loggedOut": true}));
    assert_eq!(a.recv().await, event("leave", &c, "reader"));
    let mut d = Client::login_at(s.addr, "/live", "frontend", "").await;
    subscribe(&mut d).await;
    assert_eq!(a.recv().await, event("join", &d, "frontend"));
    let d_token = d.token.clone();
    drop(d);
    assert_eq!(
        a.recv().await,
        json!({"leave": {"channel": "room", "client": d_token, "user": "frontend"}})
    );
    a.send(json!({"presence": {"channel": "room"}})).await;
    assert_eq!(
        a.recv().await,
        json!({"presence": {"channel": "room", "clients": {a.token.clone(): {"user": "backend"}}}})
    );
    // No self-join, nothing else: b and c are quiet, and a plain hub knows no presence.
    b.quiet().await;
    c.quiet().await;
    let mut plain = Client::login(s.addr, "frontend", "").await;
    plain.send(json!({"presence": {"channel": "room"}})).await;
    assert_eq!(plain.recv().await, json!({"err": "INVALID_PAYLOAD"}));
}

pub async fn history_expires_after_its_ttl<F: Frontend>() {
    let s = F::start(ServerState::new(history_config()), None);
    let mut c = Client::login_at(s.addr, "/short", "backend", "secret").await;
    c.send(json!({"subscribe": {"channel": "c"}})).await;
    let epoch = c.recv().await["epoch"].as_str().unwrap().to_owned();
    c.send(json!({"broadcast": {"event": "e", "channel": "c", "data": 1}}))
        .await;
    let delivered = c.recv().await;
    assert_eq!(delivered["offset"], 1);
    assert_eq!(c.recv().await, json!({"broadcasted": "c"}));
    c.send(json!({"unsubscribe": {"channel": "c"}})).await;
    assert_eq!(c.recv().await, json!({"unsubscribed": "c"}));
    // Kept beyond the last subscriber …
    c.send(json!({"history": {"channel": "c"}})).await;
    assert_eq!(
        c.recv().await,
        json!({"history": {"channel": "c", "offset": 1, "epoch": epoch, "events": [delivered]}})
    );
    // … for TtlMs (1 s) after the broadcast, then gone.
    let hub = s.service.hub("/short").expect("hub");
    assert_eq!(hub.history_count(), Some(1));
    let kept = std::time::Instant::now();
    eventually("the history expired", || hub.history_count() == Some(0)).await;
    assert!(kept.elapsed() < Duration::from_secs(5));
    c.send(json!({"history": {"channel": "c"}})).await;
    assert_eq!(
        c.recv().await,
        json!({"history": {"channel": "c", "offset": 0, "epoch": "", "events": []}})
    );
}

/// Instantiates every test of the suite for a [`Frontend`].
#[macro_export]
macro_rules! e2e_tests {
    ($frontend:ty) => {
        $crate::e2e_tests!(@core $frontend;
            greeting_is_a_fresh_token,
            every_action_and_error,
            permissions_are_enforced,
            phc_secrets_and_brute_force,
            hubs_are_isolated,
            unknown_path_is_404,
            thousand_broadcasts_arrive_in_order,
            pongs_never_split_a_broadcast,
            a_pipelined_burst_does_not_make_a_reader_slow,
            fan_out_to_hundreds,
            bursts_to_many_channels_arrive_in_order_everywhere,
            a_vanishing_client_hurts_nobody,
            oversized_message_closes_1009,
            invalid_utf8_closes_1007,
            slow_consumer_is_closed_and_others_lose_nothing,
            graceful_shutdown_sends_1001,
            tls_serves_wss,
            idle_clients_are_closed_and_live_ones_kept,
            stalled_handshakes_are_dropped,
            connection_limit_refuses_with_503,
            plain_http_connections_count_against_max_connections,
            one_address_cannot_hold_every_handshake_place,
            disallowed_origin_is_403,
            health_and_plain_http_share_the_port,
            hub_paths_cannot_take_the_http_endpoints,
            a_client_that_stops_reading_is_dropped_by_the_write_timeout,
            timers_run_while_a_write_is_stalled,
            queued_bytes_over_the_bound_make_a_slow_consumer,
            a_protocol_timer_fires_on_time,
            ready_answers_and_metrics_count_what_happened,
            metrics_can_require_a_bearer_token,
            publish_api_delivers_and_answers_every_error,
            publish_api_keeps_per_channel_order_beside_websocket_traffic,
            pipelined_publishes_over_http_are_answered_and_delivered_in_order,
            reconnect_and_recover_under_a_flat_out_publisher,
            presence_and_join_leave_with_several_clients,
            history_expires_after_its_ttl,
        );
        $crate::e2e_tests!(@faults $frontend;
            slow_consumer_under_10k_messages_is_cut_off,
            a_thousand_connections_reset_mid_stream,
            slowloris_handshakes_are_dropped,
            hostile_frames_get_their_documented_answer,
            plain_secret_brute_force_is_cut_off,
            per_publisher_order_holds_with_concurrent_publishers,
            connection_limit_reached_and_freed_keeps_serving,
            unfinished_handshakes_are_capped,
        );
    };
    (@core $frontend:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                suite::allow_many_sockets();
                suite::$name::<$frontend>().await
            }
        )*
    };
    (@faults $frontend:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                suite::allow_many_sockets();
                suite::faults::$name::<$frontend>().await
            }
        )*
    };
}
