//! The cluster, end to end: three `rocket-cli` nodes (one per runtime: tokio, async-std,
//! smol) and one real `redis-server`, each started by the test on free loopback ports
//! (`docs/PROTOCOL.md`, "Cluster"). Every action of the protocol across nodes, each
//! publisher's order seen on every node, Redis killed mid-stream and restarted, and a node
//! killed without warning; and on a hub with History, Presence and JoinLeave, all three
//! cluster-wide: recovery on another node with a publisher flat out, presence and
//! join/leave across nodes, a killed node's leaves, and a new epoch after a Redis restart.
//!
//! Needs `redis-server` (Debian package `redis-server`; `scripts/test` installs it): a test
//! fails, saying so, when it is missing.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, Ws, connect, http_get, next_json, next_json_within, scratch_file, send};
use tokio_tungstenite::tungstenite::Message;

/// The protocol's bound for a subscribe, unsubscribe, connect or departure to be visible
/// on every node.
const PROPAGATION: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on a loopback port, without persistence; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Self {
        let port = free_port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            child: None,
            port,
            dir,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the cluster tests need it. Install it with \
                 `sudo apt-get install -y redis-server` (scripts/test does so)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// Closes the connection of the node that connected first (Redis numbers connections
    /// in order; nodes name theirs `rocket-…`), as a network fault would: Redis and its
    /// data stay.
    fn cut_first_node(&self) {
        let mut redis = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis).unwrap();
        let first = list
            .lines()
            .filter(|l| l.contains(" name=rocket-"))
            .filter_map(|l| {
                l.strip_prefix("id=")?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .min()
            .expect("a node's connection");
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(first)
            .query(&mut redis)
            .unwrap();
        assert_eq!(killed, 1);
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const CONFIG: &str = r#"{
    "Host": "127.0.0.1",
    "Hubs": [{
        "Path": "/echo",
        "Users": {
            "backend": {"Secret": "secret", "Permission": 7},
            "frontend": {"Secret": "", "Permission": 3}
        }
    }, {
        "Path": "/live",
        "Users": {
            "backend": {"Secret": "secret", "Permission": 7},
            "frontend": {"Secret": "", "Permission": 3}
        },
        "History": {"Size": 20000, "TtlMs": 60000},
        "Presence": true,
        "JoinLeave": true
    }],
    "Limits": {"SendQueueMessages": 100000, "SendQueueBytes": 104857600}
}"#;

/// A node: `rocket-cli` on `runtime`, joined to `redis`.
struct Node {
    server: Server,
    address: String,
}

impl Node {
    fn start(redis: &Redis, runtime: &str) -> Self {
        // Written once: tests run in parallel, and a file being rewritten reads as empty.
        static CONFIG_FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let config = CONFIG_FILE.get_or_init(|| {
            scratch_file("cluster.json", CONFIG)
                .to_string_lossy()
                .into_owned()
        });
        let url = redis.url();
        let mut server = Server::start(&[
            "--port",
            "0",
            "--redis",
            &url,
            "--runtime",
            runtime,
            "--log-level",
            "info",
            config,
        ]);
        let address = server.address();
        let node = Self { server, address };
        node.wait_ready(true);
        node
    }

    fn ready(&self) -> bool {
        http_get(&self.address, "GET", "/ready").starts_with("HTTP/1.1 200")
    }

    /// Waits (at most 5 s) until `/ready` says `up`.
    fn wait_ready(&self, up: bool) -> Duration {
        let start = Instant::now();
        while self.ready() != up {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "/ready of {} did not become {up}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }

    /// The value of a metric series without labels.
    fn metric(&self, name: &str) -> f64 {
        let text = http_get(&self.address, "GET", "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    async fn client(&self) -> Client {
        self.client_on("/echo").await
    }

    async fn client_on(&self, hub: &str) -> Client {
        let mut ws = connect(&self.address, hub).await;
        let greeting = next_json(&mut ws).await;
        let token = greeting["connected"].as_str().unwrap().to_owned();
        send(
            &mut ws,
            json!({"authenticate": {"user": "backend", "secret": "secret"}}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await,
            json!({"authenticated": "backend"})
        );
        Client { ws, token }
    }
}

struct Client {
    ws: Ws,
    token: String,
}

impl Client {
    async fn request(&mut self, request: Value) -> Value {
        send(&mut self.ws, request).await;
        next_json(&mut self.ws).await
    }

    async fn subscribe(&mut self, channel: &str) {
        let reply = self
            .request(json!({"subscribe": {"channel": channel}}))
            .await;
        assert_eq!(reply, json!({"subscribed": channel}));
    }

    async fn broadcast(&mut self, channel: &str, data: Value) -> Value {
        self.request(json!({"broadcast": {"event": "e", "channel": channel, "data": data}}))
            .await
    }

    async fn direct(&mut self, token: &str, data: Value) -> Value {
        self.request(json!({"direct": {"event": "d", "client": token, "data": data}}))
            .await
    }

    async fn next(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    /// Asserts that nothing arrives within `quiet`.
    async fn nothing(&mut self, quiet: Duration) {
        if let Ok(message) = tokio::time::timeout(quiet, self.ws.next()).await {
            panic!("expected nothing, got {message:?}");
        }
    }
}

/// Lets subscriptions and departures reach every node: the protocol's bound.
async fn propagate() {
    tokio::time::sleep(PROPAGATION).await;
}

fn event(channel: &str, data: Value) -> Value {
    json!({"event": "e", "channel": channel, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_works_across_three_nodes_on_three_runtimes() {
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
        Node::start(&redis, "smol"),
    ];
    let mut a = nodes[0].client().await;
    let mut b = nodes[1].client().await;
    let mut c = nodes[2].client().await;
    assert_ne!(a.token, b.token);
    b.subscribe("news").await;
    c.subscribe("news").await;
    propagate().await;

    // A broadcast from a node without subscribers reaches those of the other nodes.
    assert_eq!(
        a.broadcast("news", json!(1)).await,
        json!({"broadcasted": "news"})
    );
    assert_eq!(b.next().await, event("news", json!(1)));
    assert_eq!(c.next().await, event("news", json!(1)));
    // One from a node with a subscriber: the sender's own copy once, the others' once.
    send(
        &mut c.ws,
        json!({"broadcast": {"event": "e", "channel": "news", "data": 2}}),
    )
    .await;
    let mut got = vec![c.next().await, c.next().await];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        [json!({"broadcasted": "news"}), event("news", json!(2))]
    );
    assert_eq!(b.next().await, event("news", json!(2)));

    // Direct messages reach a client on any node; the reply names the token.
    let reply = a.direct(&b.token.clone(), json!("hi b")).await;
    assert_eq!(reply, json!({"directSent": b.token}));
    assert_eq!(
        b.next().await,
        json!({"event": "d", "from": a.token, "data": "hi b"})
    );
    let reply = c.direct(&a.token.clone(), json!("hi a")).await;
    assert_eq!(reply, json!({"directSent": a.token}));
    assert_eq!(
        a.next().await,
        json!({"event": "d", "from": c.token, "data": "hi a"})
    );

    // Targets no node holds.
    assert_eq!(
        a.broadcast("nobody", json!(0)).await,
        json!({"err": "INVALID_CHANNEL"})
    );
    let stranger = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        a.direct(stranger, json!(0)).await,
        json!({"err": "INVALID_CLIENT"})
    );

    // The publish API of a node without subscribers reaches the other nodes' ones.
    let body = r#"{"hub":"/echo","channel":"news","event":"e","data":"api"}"#;
    let response = post(&nodes[0].address, "/api/broadcast", body);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(b.next().await, event("news", json!("api")));
    assert_eq!(c.next().await, event("news", json!("api")));
    let body = format!(r#"{{"hub":"/echo","client":"{}","event":"d"}}"#, c.token);
    let response = post(&nodes[1].address, "/api/direct", &body);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(c.next().await, json!({"event": "d"}));
    let body = format!(r#"{{"hub":"/echo","client":"{stranger}","event":"d"}}"#);
    let response = post(&nodes[1].address, "/api/direct", &body);
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("INVALID_CLIENT"), "{response}");

    // Unsubscribe: c hears no more of the channel (its next message is something else).
    let reply = c.request(json!({"unsubscribe": {"channel": "news"}})).await;
    assert_eq!(reply, json!({"unsubscribed": "news"}));
    propagate().await;
    assert_eq!(
        a.broadcast("news", json!(3)).await,
        json!({"broadcasted": "news"})
    );
    assert_eq!(b.next().await, event("news", json!(3)));
    a.direct(&c.token.clone(), json!("after")).await;
    assert_eq!(
        c.next().await,
        json!({"event": "d", "from": a.token, "data": "after"})
    );

    // Logout: the channel's last subscriber anywhere is gone.
    assert_eq!(
        b.request(json!({"logout": true})).await,
        json!({"loggedOut": true})
    );
    propagate().await;
    assert_eq!(
        a.broadcast("news", json!(4)).await,
        json!({"err": "INVALID_CHANNEL"})
    );

    // Disconnect: the token is no one's any more, on every node.
    send(&mut c.ws, json!({"disconnect": true})).await;
    while let Some(Ok(message)) = c.ws.next().await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
    propagate().await;
    assert_eq!(
        a.direct(&c.token.clone(), json!(0)).await,
        json!({"err": "INVALID_CLIENT"})
    );
    let reply = b
        .request(json!({"authenticate": {"user": "backend", "secret": "secret"}}))
        .await;
    assert_eq!(reply, json!({"authenticated": "backend"}));
    assert_eq!(
        b.direct(&c.token.clone(), json!(0)).await,
        json!({"err": "INVALID_CLIENT"})
    );

    // What the nodes counted.
    assert!(nodes[0].metric("rocket_cluster_published_total") >= 5.0);
    assert!(nodes[1].metric("rocket_cluster_received_total") >= 4.0);
    assert_eq!(nodes[2].metric("rocket_cluster_up"), 1.0);
    assert_eq!(nodes[2].metric("rocket_cluster_reconnects_total"), 0.0);
}

/// `POST path` with a JSON body as `backend`; the whole response.
fn post(address: &str, path: &str, body: &str) -> String {
    let mut tcp = TcpStream::connect(address).unwrap();
    // "backend:secret" in base64.
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Basic YmFja2VuZDpzZWNyZXQ=\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
}

/// Reads `n` events of `channel` and checks each publisher's numbers come in order,
/// 0, 1, 2, … with no gap and no repeat.
async fn read_in_order(client: &mut Client, publishers: &[&str], per_publisher: u64) {
    let mut next: HashMap<String, u64> = publishers.iter().map(|p| (p.to_string(), 0)).collect();
    for _ in 0..per_publisher * publishers.len() as u64 {
        let message = client.next().await;
        let data = &message["data"];
        let (from, n) = (data["p"].as_str().unwrap(), data["n"].as_u64().unwrap());
        let expected = next.get_mut(from).expect("a known publisher");
        assert_eq!(n, *expected, "publisher {from}: out of order");
        *expected += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publishers_order_holds_on_every_node() {
    const N: u64 = 1000;
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
        Node::start(&redis, "tokio"),
    ];
    let mut subscribers = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            let mut s = node.client().await;
            s.subscribe("ordered").await;
            subscribers.push(s);
        }
    }
    propagate().await;
    // Two publishers on different nodes, each sending its numbers without waiting for
    // replies (pipelined), at the same time.
    let mut publishers = Vec::new();
    for (i, node) in nodes[..2].iter().enumerate() {
        let mut p = node.client().await;
        publishers.push(tokio::spawn(async move {
            let name = format!("p{i}");
            for n in 0..N {
                let request = json!({"broadcast": {"event": "e", "channel": "ordered",
                                                   "data": {"p": name, "n": n}}});
                p.ws.feed(Message::text(request.to_string())).await.unwrap();
            }
            p.ws.flush().await.unwrap();
            for _ in 0..N {
                assert_eq!(p.next().await, json!({"broadcasted": "ordered"}));
            }
        }));
    }
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_in_order(&mut s, &["p0", "p1"], N).await }))
        .collect();
    for task in publishers.into_iter().chain(readers) {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("done in time")
            .unwrap();
    }
}

/// Publishes `{"p": name, "n": 0, 1, …}` to `channel` every 5 ms until stopped; returns
/// the numbers answered `broadcasted`.
fn ticker(
    mut client: Client,
    name: &'static str,
    channel: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        for n in 0.. {
            if *stop.borrow() {
                break;
            }
            let reply = client.broadcast(channel, json!({"p": name, "n": n})).await;
            if reply == json!({"broadcasted": channel}) {
                accepted.push(n);
            }
            // A subscriber on this node may see its copy before or after the reply.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        accepted
    })
}

/// Reads until the event whose data is "end"; returns each event's data with the instant
/// it arrived.
fn recorder(mut client: Client) -> tokio::task::JoinHandle<(Client, Vec<(Instant, Value)>)> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let message = client.next().await;
            if message["data"] == json!("end") {
                return (client, seen);
            }
            seen.push((Instant::now(), message["data"].clone()));
        }
    })
}

/// The numbers of publisher `p` in recorded events, in arrival order.
fn numbers(seen: &[(Instant, Value)]) -> Vec<u64> {
    seen.iter().filter_map(|(_, d)| d["n"].as_u64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_and_restarted() {
    let mut redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
    ];
    // A subscriber beside the publisher (local delivery) and one on the other node.
    let mut local = nodes[0].client().await;
    let mut remote = nodes[1].client().await;
    local.subscribe("live").await;
    remote.subscribe("live").await;
    propagate().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ticks = ticker(nodes[0].client().await, "p", "live", stopped);
    let (local, remote) = (recorder(local), recorder(remote));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Redis dies: within 1 s each node says it is not ready, and its gauge drops.
    redis.kill();
    let killed = Instant::now();
    for node in &nodes {
        let down_after = tokio::task::block_in_place(|| node.wait_ready(false));
        assert!(killed.elapsed() < Duration::from_secs(1), "{down_after:?}");
    }
    assert_eq!(nodes[0].metric("rocket_cluster_up"), 0.0);
    assert!(http_get(&nodes[0].address, "GET", "/ready").contains("degraded"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Redis is back: the nodes reconnect and subscribe again by themselves.
    tokio::task::block_in_place(|| redis.restart());
    let back = Instant::now();
    tokio::time::sleep(PROPAGATION + Duration::from_millis(500)).await;
    for node in &nodes {
        assert!(
            node.ready(),
            "{} not ready after Redis came back",
            node.address
        );
    }
    assert_eq!(nodes[0].metric("rocket_cluster_up"), 1.0);
    assert!(nodes[0].metric("rocket_cluster_reconnects_total") >= 1.0);
    // Both directions: the other node's publishes reach this node's subscribers again.
    let mut other = nodes[1].client().await;
    assert_eq!(
        other.broadcast("live", json!("from n2")).await,
        json!({"broadcasted": "live"})
    );

    stop.send(true).unwrap();
    let accepted = ticks.await.unwrap();
    other.broadcast("live", json!("end")).await;
    let (mut local, local_seen) = local.await.unwrap();
    let (mut remote, remote_seen) = remote.await.unwrap();

    // Local delivery never stopped: every accepted broadcast, in order, through the outage.
    assert_eq!(
        numbers(&local_seen),
        accepted,
        "local delivery lost or reordered"
    );
    assert!(
        accepted.len() > 200,
        "the publisher ran throughout: {}",
        accepted.len()
    );
    assert!(local_seen.iter().any(|(_, d)| d == "from n2"));
    // Across nodes: in order (a gap only for the outage), and back within 2 s of Redis.
    let remote_numbers = numbers(&remote_seen);
    assert!(remote_numbers.windows(2).all(|w| w[0] < w[1]), "reordered");
    let (resumed, _) = remote_seen
        .iter()
        .find(|(at, _)| *at > back)
        .expect("cross-node delivery resumed");
    let after = resumed.duration_since(back);
    assert!(
        after < PROPAGATION,
        "cross-node delivery resumed {after:?} after Redis"
    );
    let during: Vec<_> = remote_seen
        .iter()
        .filter(|(at, _)| *at > killed + Duration::from_millis(100) && *at < back)
        .collect();
    assert!(
        during.is_empty(),
        "delivered across nodes without Redis? {during:?}"
    );
    // No client was disconnected for it.
    let reply = json!({"loggedOut": true});
    assert_eq!(remote.request(json!({"logout": true})).await, reply);
    assert_eq!(local.request(json!({"logout": true})).await, reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_and_the_others_carry_on() {
    let redis = Redis::start();
    let mut nodes = vec![
        Node::start(&redis, "tokio"),
        Node::start(&redis, "smol"),
        Node::start(&redis, "async-std"),
    ];
    let mut a = nodes[0].client().await;
    let mut b = nodes[1].client().await;
    let mut doomed = nodes[2].client().await;
    b.subscribe("room").await;
    doomed.subscribe("only-there").await;
    propagate().await;
    assert_eq!(
        a.direct(&doomed.token.clone(), json!(0)).await,
        json!({"directSent": doomed.token})
    );
    assert_eq!(
        a.broadcast("only-there", json!(0)).await,
        json!({"broadcasted": "only-there"})
    );

    // SIGKILL: no goodbye. Its clients' tokens and channels vanish within 5 s.
    let mut node = nodes.pop().unwrap();
    node.server.child.kill().unwrap();
    node.server.child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let reply = a.direct(&doomed.token.clone(), json!(1)).await;
        if reply == json!({"err": "INVALID_CLIENT"}) {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.broadcast("only-there", json!(1)).await,
        json!({"err": "INVALID_CHANNEL"})
    );
    // The others carry on.
    assert_eq!(
        a.broadcast("room", json!(2)).await,
        json!({"broadcasted": "room"})
    );
    assert_eq!(b.next().await, event("room", json!(2)));
    assert!(nodes.iter().all(Node::ready));
    b.nothing(Duration::from_millis(200)).await;
}

#[test]
fn a_node_starts_without_redis_and_joins_when_it_comes() {
    let port = free_port();
    let config = scratch_file("cluster-late.json", CONFIG);
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut server = Server::start(&["--port", "0", "--redis", &url, &config.to_string_lossy()]);
    let address = server.address();
    server.wait_for("cannot reach Redis");
    let node = Node { server, address };
    assert!(!node.ready(), "not ready without its backplane");
    assert!(http_get(&node.address, "GET", "/health").starts_with("HTTP/1.1 200"));
    let mut redis = Redis {
        child: None,
        port,
        dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{port}")),
    };
    std::fs::create_dir_all(&redis.dir).unwrap();
    redis.restart();
    let took = node.wait_ready(true);
    assert!(took < PROPAGATION, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_churn_across_nodes_loses_nothing_for_steady_subscribers() {
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "smol"),
        Node::start(&redis, "async-std"),
    ];
    let mut steady = nodes[2].client().await;
    steady.subscribe("churn").await;
    propagate().await;
    // Clients on the publisher's node and another come and go on the channel (some
    // unsubscribe, some log out, some disconnect) while the publisher sends numbers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ticks = ticker(nodes[0].client().await, "p", "churn", stopped);
    let steady = recorder(steady);
    for round in 0..30 {
        let node = &nodes[round % 2];
        let mut c = node.client().await;
        c.subscribe("churn").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        match round % 3 {
            0 => {
                let reply = c
                    .request(json!({"unsubscribe": {"channel": "churn"}}))
                    .await;
                // It may have received broadcasts first: read until the reply.
                let mut reply = reply;
                while reply.get("unsubscribed").is_none() {
                    reply = c.next().await;
                }
            }
            1 => {
                send(&mut c.ws, json!({"logout": true})).await;
                while c.next().await.get("loggedOut").is_none() {}
            }
            _ => drop(c),
        }
    }
    stop.send(true).unwrap();
    let accepted = ticks.await.unwrap();
    let mut closer = nodes[1].client().await;
    assert_eq!(
        closer.broadcast("churn", json!("end")).await,
        json!({"broadcasted": "churn"})
    );
    let (mut steady, seen) = steady.await.unwrap();
    assert_eq!(
        numbers(&seen),
        accepted,
        "a steady subscriber lost or reordered"
    );
    assert!(accepted.len() > 50, "{}", accepted.len());
    // Everyone else is gone: after the propagation bound only the steady one holds it.
    steady
        .request(json!({"unsubscribe": {"channel": "churn"}}))
        .await;
    propagate().await;
    for node in &nodes[..2] {
        let mut c = node.client().await;
        assert_eq!(
            c.broadcast("churn", json!(0)).await,
            json!({"err": "INVALID_CHANNEL"}),
            "a node still believes in a subscriber"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_within_a_second_and_survived() {
    // SIGSTOP: the connection stays open but nothing answers, which only the node's own
    // heartbeat can notice.
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
    ];
    let mut a = nodes[0].client().await;
    let mut b = nodes[1].client().await;
    b.subscribe("frozen").await;
    propagate().await;
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let frozen = Instant::now();
    for node in &nodes {
        tokio::task::block_in_place(|| node.wait_ready(false));
    }
    let noticed = frozen.elapsed();
    assert!(
        noticed < Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    // Meanwhile the nodes serve their own clients, and other nodes' targets are unknown.
    let mut local = nodes[1].client().await;
    assert_eq!(
        local.broadcast("frozen", json!("local")).await,
        json!({"broadcasted": "frozen"})
    );
    assert_eq!(b.next().await, event("frozen", json!("local")));
    assert_eq!(
        a.broadcast("frozen", json!("lost")).await,
        json!({"err": "INVALID_CHANNEL"})
    );
    signal("-CONT");
    let thawed = Instant::now();
    for node in &nodes {
        tokio::task::block_in_place(|| node.wait_ready(true));
    }
    assert!(thawed.elapsed() < PROPAGATION, "{:?}", thawed.elapsed());
    assert_eq!(
        a.broadcast("frozen", json!("back")).await,
        json!({"broadcasted": "frozen"})
    );
    assert_eq!(b.next().await, event("frozen", json!("back")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_of_redis_mid_stream_never_duplicate_or_reorder() {
    // Redis frozen twice (once shorter than the nodes' silence bound, once longer) while a
    // publisher streams: a remote subscriber may miss what an outage swallowed, but never
    // gets a message twice or out of order, and local delivery misses nothing.
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
    ];
    let mut local = nodes[0].client().await;
    let mut remote = nodes[1].client().await;
    local.subscribe("paused").await;
    remote.subscribe("paused").await;
    propagate().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ticks = ticker(nodes[0].client().await, "p", "paused", stopped);
    let (local, remote) = (recorder(local), recorder(remote));
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    for pause in [Duration::from_millis(300), Duration::from_millis(1200)] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        signal("-STOP");
        tokio::time::sleep(pause).await;
        signal("-CONT");
        tokio::time::sleep(PROPAGATION).await;
    }
    stop.send(true).unwrap();
    let accepted = ticks.await.unwrap();
    let mut closer = nodes[1].client().await;
    closer.broadcast("paused", json!("end")).await;
    let (_, local_seen) = local.await.unwrap();
    let (_, remote_seen) = remote.await.unwrap();
    assert_eq!(
        numbers(&local_seen),
        accepted,
        "local delivery lost or reordered"
    );
    let remote_numbers = numbers(&remote_seen);
    assert!(
        remote_numbers.windows(2).all(|w| w[0] < w[1]),
        "duplicated or reordered across nodes: {remote_numbers:?}"
    );
    assert!(
        remote_numbers.last() == accepted.last(),
        "cross-node delivery resumed after the pauses"
    );
}

/// A delivery on the shared hub `/live`, as JSON.
fn live_event(channel: &str, data: Value, offset: u64, epoch: &str) -> Value {
    json!({"event": "e", "channel": channel, "data": data, "offset": offset, "epoch": epoch})
}

fn presence_tokens(reply: &Value) -> Vec<String> {
    let mut tokens: Vec<String> = reply["presence"]["clients"]
        .as_object()
        .unwrap_or_else(|| panic!("a presence reply: {reply}"))
        .keys()
        .cloned()
        .collect();
    tokens.sort();
    tokens
}

fn sorted(mut tokens: Vec<String>) -> Vec<String> {
    tokens.sort();
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_presence_and_join_leave_are_cluster_wide() {
    let redis = Redis::start();
    let mut nodes = vec![
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
        Node::start(&redis, "smol"),
    ];
    let mut a = nodes[0].client_on("/live").await;
    let mut b = nodes[1].client_on("/live").await;
    let mut c = nodes[2].client_on("/live").await;

    let reply = a.request(json!({"subscribe": {"channel": "room"}})).await;
    let epoch = reply["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        reply,
        json!({"subscribed": "room", "offset": 0, "epoch": epoch})
    );
    let reply = b.request(json!({"subscribe": {"channel": "room"}})).await;
    assert_eq!(
        reply,
        json!({"subscribed": "room", "offset": 0, "epoch": epoch}),
        "one epoch"
    );
    let join_b = json!({"join": {"channel": "room", "client": b.token, "user": "backend"}});
    assert_eq!(a.next().await, join_b, "a hears of b, on another node");

    // Presence lists both, asked from a third node.
    let reply = c.request(json!({"presence": {"channel": "room"}})).await;
    assert_eq!(
        presence_tokens(&reply),
        sorted(vec![a.token.clone(), b.token.clone()])
    );
    assert_eq!(
        reply["presence"]["clients"][&a.token],
        json!({"user": "backend"})
    );

    // Offsets are the cluster's: the same on every node, from any publisher.
    for i in 1..=3 {
        assert_eq!(
            c.broadcast("room", json!(i)).await,
            json!({"broadcasted": "room"})
        );
    }
    for i in 1..=3 {
        assert_eq!(a.next().await, live_event("room", json!(i), i, &epoch));
        assert_eq!(b.next().await, live_event("room", json!(i), i, &epoch));
    }
    for i in 4..=5 {
        send(
            &mut a.ws,
            json!({"broadcast": {"event": "e", "channel": "room", "data": i}}),
        )
        .await;
        let mut got = vec![a.next().await, a.next().await];
        got.sort_by_key(|v| v.to_string());
        assert_eq!(
            got,
            [
                json!({"broadcasted": "room"}),
                live_event("room", json!(i), i, &epoch)
            ],
            "the reply and the sender's own copy, in either order"
        );
        assert_eq!(b.next().await, live_event("room", json!(i), i, &epoch));
    }
    let reply = c
        .request(json!({"history": {"channel": "room", "limit": 2}}))
        .await;
    assert_eq!(
        reply,
        json!({"history": {"channel": "room", "offset": 5, "epoch": epoch, "events": [
            live_event("room", json!(4), 4, &epoch), live_event("room", json!(5), 5, &epoch)]}})
    );

    // A client recovers on another node than the one it read from.
    let mut d = nodes[2].client_on("/live").await;
    let reply = d
        .request(json!({"subscribe": {"channel": "room", "since": {"offset": 2, "epoch": epoch}}}))
        .await;
    let missed: Vec<Value> = (3..=5)
        .map(|i| live_event("room", json!(i), i, &epoch))
        .collect();
    assert_eq!(
        reply,
        json!({"subscribed": "room", "offset": 5, "epoch": epoch, "recovered": true, "events": missed})
    );
    let reply = c
        .request(
            json!({"subscribe": {"channel": "room", "since": {"offset": 2, "epoch": "other"}}}),
        )
        .await;
    assert_eq!(
        reply,
        json!({"subscribed": "room", "offset": 5, "epoch": epoch, "recovered": false})
    );
    let join_d = json!({"join": {"channel": "room", "client": d.token, "user": "backend"}});
    let join_c = json!({"join": {"channel": "room", "client": c.token, "user": "backend"}});
    for x in [&mut a, &mut b] {
        assert_eq!(x.next().await, join_d);
        assert_eq!(x.next().await, join_c);
    }
    assert_eq!(d.next().await, join_c, "d hears of c, which came after it");

    // Leaves on every path: unsubscribe, logout, a closed connection.
    assert_eq!(
        c.request(json!({"unsubscribe": {"channel": "room"}})).await,
        json!({"unsubscribed": "room"})
    );
    let leave =
        |x: &Client| json!({"leave": {"channel": "room", "client": x.token, "user": "backend"}});
    for x in [&mut a, &mut b, &mut d] {
        assert_eq!(x.next().await, leave(&c));
    }
    assert_eq!(
        d.request(json!({"logout": true})).await,
        json!({"loggedOut": true})
    );
    for x in [&mut a, &mut b] {
        assert_eq!(x.next().await, leave(&d));
    }
    let gone_b = leave(&b);
    drop(b);
    assert_eq!(a.next().await, gone_b);

    // A node killed without warning: its subscribers leave within 5 s, told by the store.
    let mut e = nodes[1].client_on("/live").await;
    assert_eq!(
        e.request(json!({"subscribe": {"channel": "room"}})).await,
        json!({"subscribed": "room", "offset": 5, "epoch": epoch})
    );
    assert_eq!(
        a.next().await,
        json!({"join": {"channel": "room", "client": e.token, "user": "backend"}})
    );
    // Channel names may hold any character: the store's bookkeeping is not fooled by a NUL.
    let odd = "room\u{0}x";
    assert_eq!(
        a.request(json!({"subscribe": {"channel": odd}})).await["subscribed"],
        json!(odd)
    );
    assert_eq!(
        e.request(json!({"subscribe": {"channel": odd}})).await["subscribed"],
        json!(odd)
    );
    assert_eq!(
        a.next().await,
        json!({"join": {"channel": odd, "client": e.token, "user": "backend"}})
    );
    let mut node = nodes.remove(1);
    node.server.child.kill().unwrap();
    node.server.child.wait().unwrap();
    let killed = Instant::now();
    let mut got = vec![
        next_json_within(&mut a.ws, Duration::from_secs(6)).await,
        next_json_within(&mut a.ws, Duration::from_secs(6)).await,
    ];
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    got.sort_by_key(|v| v.to_string());
    let mut want = vec![
        json!({"leave": {"channel": "room", "client": e.token, "user": "backend"}}),
        json!({"leave": {"channel": odd, "client": e.token, "user": "backend"}}),
    ];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    let reply = c.request(json!({"presence": {"channel": "room"}})).await;
    assert_eq!(presence_tokens(&reply), vec![a.token.clone()]);
    drop(e);
    a.nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_recovers_on_another_node_with_a_publisher_flat_out() {
    const MESSAGES: u64 = 10_000;
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
        Node::start(&redis, "smol"),
    ];
    // A steady subscriber keeps the channel alive while the other one is away (a channel
    // without subscribers refuses broadcasts: nothing is kept for nobody).
    let mut steady = nodes[0].client_on("/live").await;
    let reply = steady
        .request(json!({"subscribe": {"channel": "flat"}}))
        .await;
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let mut first = nodes[1].client_on("/live").await;
    let reply = first
        .request(json!({"subscribe": {"channel": "flat"}}))
        .await;
    assert_eq!(reply["epoch"], json!(epoch));
    assert_eq!(steady.next().await["join"]["client"], json!(first.token));

    // The publisher runs flat out on node 0 throughout: each broadcast as soon as the
    // last was answered.
    let mut publisher = nodes[0].client_on("/live").await;
    let publishing = tokio::spawn(async move {
        for i in 1..=MESSAGES {
            let reply = publisher.broadcast("flat", json!(i)).await;
            assert_eq!(reply, json!({"broadcasted": "flat"}), "message {i}");
        }
    });

    let mut seen: Vec<u64> = Vec::new();
    let read = |v: Value, seen: &mut Vec<u64>| {
        assert_eq!(v["epoch"], json!(epoch), "{v}");
        assert_eq!(v["data"], v["offset"], "{v}");
        seen.push(v["offset"].as_u64().unwrap());
    };
    // Read a while on node 1, then lose the connection mid-stream ...
    while seen.len() < 2_000 {
        let v = first.next().await;
        read(v, &mut seen);
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... and recover on node 2, where the stream goes on with no gap and no duplicate.
    let mut second = nodes[2].client_on("/live").await;
    let last = *seen.last().unwrap();
    let reply = second
        .request(
            json!({"subscribe": {"channel": "flat", "since": {"offset": last, "epoch": epoch}}}),
        )
        .await;
    assert_eq!(reply["recovered"], json!(true), "{}", reply["offset"]);
    for v in reply["events"].as_array().unwrap().clone() {
        read(v, &mut seen);
    }
    assert_eq!(reply["offset"].as_u64(), seen.last().copied());
    while seen.last() != Some(&MESSAGES) {
        let v = next_json_within(&mut second.ws, Duration::from_secs(20)).await;
        read(v, &mut seen);
    }
    publishing.await.unwrap();
    assert_eq!(
        seen,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    second.nothing(Duration::from_millis(200)).await;
    // The steady subscriber saw every message once, in order, and the comings and goings.
    let mut offsets = Vec::new();
    while offsets.last() != Some(&MESSAGES) {
        let v = next_json_within(&mut steady.ws, Duration::from_secs(20)).await;
        if let Some(offset) = v["offset"].as_u64() {
            offsets.push(offset);
        }
    }
    assert_eq!(offsets, (1..=MESSAGES).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_epoch_changes_and_presence_comes_back() {
    let mut redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
    ];
    let mut a = nodes[0].client_on("/live").await;
    let mut b = nodes[1].client_on("/live").await;
    let reply = a.request(json!({"subscribe": {"channel": "r"}})).await;
    let old = reply["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        assert_eq!(
            b.broadcast("r", json!(i)).await,
            json!({"broadcasted": "r"})
        );
        assert_eq!(a.next().await, live_event("r", json!(i), i, &old));
    }

    redis.kill();
    for node in &nodes {
        node.wait_ready(false);
    }
    // While the store is down, what needs it says so; nothing is half done.
    assert_eq!(
        b.broadcast("r", json!(0)).await,
        json!({"err": "UNAVAILABLE"})
    );
    assert_eq!(
        b.request(json!({"presence": {"channel": "r"}})).await,
        json!({"err": "UNAVAILABLE"})
    );
    assert_eq!(
        b.request(json!({"subscribe": {"channel": "r"}})).await,
        json!({"err": "UNAVAILABLE"})
    );
    redis.restart();
    for node in &nodes {
        node.wait_ready(true);
    }

    // The history is gone: a new epoch, offsets from 1, and no recovery across it.
    assert_eq!(
        b.broadcast("r", json!(4)).await,
        json!({"broadcasted": "r"})
    );
    let got = a.next().await;
    let new = got["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(got, live_event("r", json!(4), 1, &new));
    let reply = b
        .request(json!({"subscribe": {"channel": "r", "since": {"offset": 3, "epoch": old}}}))
        .await;
    assert_eq!(
        reply,
        json!({"subscribed": "r", "offset": 1, "epoch": new, "recovered": false})
    );
    // The nodes wrote their subscribers' presence again (within a heartbeat).
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let reply = b.request(json!({"presence": {"channel": "r"}})).await;
        if presence_tokens(&reply) == sorted(vec![a.token.clone(), b.token.clone()]) {
            break;
        }
        assert!(Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_redis_for_a_moment_gives_its_subscribers_what_they_missed() {
    const MESSAGES: u64 = 6_000;
    let redis = Redis::start();
    let first = Node::start(&redis, "tokio");
    let second = Node::start(&redis, "async-std");
    let mut s = first.client_on("/live").await;
    let epoch = s.request(json!({"subscribe": {"channel": "gap"}})).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut keeper = second.client_on("/live").await;
    keeper
        .request(json!({"subscribe": {"channel": "gap"}}))
        .await;
    let mut publisher = second.client_on("/live").await;
    let publishing = tokio::spawn(async move {
        for i in 1..=MESSAGES {
            let reply = publisher.broadcast("gap", json!(i)).await;
            assert_eq!(reply, json!({"broadcasted": "gap"}), "message {i}");
        }
        publisher
    });
    let mut seen = Vec::new();
    while seen.len() < 1_000 {
        let v = s.next().await;
        if let Some(offset) = v["offset"].as_u64() {
            seen.push(offset);
        }
    }
    // The first node's link to Redis breaks; the publisher, on the other, goes on.
    redis.cut_first_node();
    while seen.last() != Some(&MESSAGES) {
        let v = next_json_within(&mut s.ws, Duration::from_secs(20)).await;
        assert_eq!(v["epoch"], json!(epoch), "{v}");
        seen.push(v["offset"].as_u64().unwrap());
    }
    publishing.await.unwrap();
    assert!(
        first.metric("rocket_cluster_reconnects_total") >= 1.0,
        "the link was cut"
    );
    let out_of_place: Vec<(usize, u64)> = (1..)
        .zip(&seen)
        .filter(|&(i, offset)| i != *offset)
        .map(|(i, &offset)| (i as usize, offset))
        .take(5)
        .collect();
    assert!(
        out_of_place.is_empty() && seen.len() as u64 == MESSAGES,
        "a gap, a duplicate or disorder: (place, offset) {out_of_place:?} of {}",
        seen.len()
    );
    s.nothing(Duration::from_millis(200)).await;
    drop(keeper);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_asked_for_while_redis_was_away_are_sent_when_it_is_back() {
    let redis = Redis::start();
    let nodes = [Node::start(&redis, "tokio"), Node::start(&redis, "smol")];
    let mut stay = nodes[0].client_on("/live").await;
    let mut go = nodes[1].client_on("/live").await;
    let mut drop_out = nodes[1].client_on("/live").await;
    stay.request(json!({"subscribe": {"channel": "p"}})).await;
    for x in [&mut go, &mut drop_out] {
        x.request(json!({"subscribe": {"channel": "p"}})).await;
        assert_eq!(stay.next().await["join"]["client"], json!(x.token));
    }
    assert_eq!(go.next().await["join"]["client"], json!(drop_out.token));

    // Redis freezes; meanwhile one subscriber unsubscribes and another's connection ends.
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    tokio::task::block_in_place(|| nodes[1].wait_ready(false));
    assert_eq!(
        go.request(json!({"unsubscribe": {"channel": "p"}})).await,
        json!({"unsubscribed": "p"})
    );
    let (go_token, drop_token) = (go.token.clone(), drop_out.token.clone());
    drop(drop_out);
    // Long enough for the node to give up a connection attempt and drop what it could not
    // send (over 3 s in all: no node is taken for dead, every node's heartbeat is as late).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    signal("-CONT");
    for node in &nodes {
        tokio::task::block_in_place(|| node.wait_ready(true));
    }

    // Back: the leaves reach the other node, once each, and presence says so.
    let mut got = vec![
        next_json_within(&mut stay.ws, PROPAGATION).await,
        next_json_within(&mut stay.ws, PROPAGATION).await,
    ];
    got.sort_by_key(|v| v.to_string());
    let mut want = vec![
        json!({"leave": {"channel": "p", "client": go_token, "user": "backend"}}),
        json!({"leave": {"channel": "p", "client": drop_token, "user": "backend"}}),
    ];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    let reply = stay.request(json!({"presence": {"channel": "p"}})).await;
    assert_eq!(presence_tokens(&reply), vec![stay.token.clone()]);
    stay.nothing(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_announces_its_subscribers_again_when_it_is_back() {
    let redis = Redis::start();
    let nodes = [
        Node::start(&redis, "tokio"),
        Node::start(&redis, "async-std"),
    ];
    let mut watcher = nodes[0].client_on("/live").await;
    let mut sleeper = nodes[1].client_on("/live").await;
    watcher
        .request(json!({"subscribe": {"channel": "t"}}))
        .await;
    sleeper
        .request(json!({"subscribe": {"channel": "t"}}))
        .await;
    let joined = json!({"join": {"channel": "t", "client": sleeper.token, "user": "backend"}});
    assert_eq!(watcher.next().await, joined);

    // The second node stops for a while (SIGSTOP): it is taken for dead.
    let pid = nodes[1].server.child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let left = json!({"leave": {"channel": "t", "client": sleeper.token, "user": "backend"}});
    assert_eq!(
        next_json_within(&mut watcher.ws, Duration::from_secs(6)).await,
        left
    );
    let reply = watcher.request(json!({"presence": {"channel": "t"}})).await;
    assert_eq!(presence_tokens(&reply), vec![watcher.token.clone()]);

    // Back: its subscriber joins again, and presence lists it.
    signal("-CONT");
    assert_eq!(
        next_json_within(&mut watcher.ws, Duration::from_secs(3)).await,
        joined
    );
    let reply = watcher.request(json!({"presence": {"channel": "t"}})).await;
    assert_eq!(
        presence_tokens(&reply),
        sorted(vec![watcher.token.clone(), sleeper.token.clone()])
    );
    // The reply and the sender's own copy come in either order.
    send(
        &mut watcher.ws,
        json!({"broadcast": {"event": "e", "channel": "t", "data": 1}}),
    )
    .await;
    let mut got = vec![watcher.next().await, watcher.next().await];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got[0], json!({"broadcasted": "t"}), "{got:?}");
    assert_eq!(sleeper.next().await["data"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_accepted_by_a_node_whose_link_breaks_are_delivered_once_it_is_back() {
    const MESSAGES: u64 = 6_000;
    let redis = Redis::start();
    let first = Node::start(&redis, "tokio");
    let second = Node::start(&redis, "smol");
    // The publisher's node holds the channel: its broadcasts are accepted at once.
    let mut local = first.client_on("/live").await;
    local
        .request(json!({"subscribe": {"channel": "kept"}}))
        .await;
    let mut s = second.client_on("/live").await;
    s.request(json!({"subscribe": {"channel": "kept"}})).await;
    let mut publisher = first.client_on("/live").await;
    let publishing = tokio::spawn(async move {
        for i in 1..=MESSAGES {
            let reply = publisher.broadcast("kept", json!(i)).await;
            assert_eq!(reply, json!({"broadcasted": "kept"}), "message {i}");
        }
    });
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    let mut cut = false;
    while data.last() != Some(&MESSAGES) {
        let v = next_json_within(&mut s.ws, Duration::from_secs(20)).await;
        let Some(d) = v["data"].as_u64() else {
            continue; // the local subscriber's join
        };
        data.push(d);
        offsets.push(v["offset"].as_u64().unwrap());
        if !cut && data.len() == 1_000 {
            // The publisher's node loses its link mid-stream.
            redis.cut_first_node();
            cut = true;
        }
    }
    publishing.await.unwrap();
    assert!(
        first.metric("rocket_cluster_reconnects_total") >= 1.0,
        "the link was cut"
    );
    let first_offset = offsets[0];
    fn misplaced(xs: &[u64], from: u64) -> Vec<(u64, u64)> {
        (from..)
            .zip(xs.iter().copied())
            .filter(|&(want, got)| want != got)
            .take(5)
            .collect()
    }
    assert_eq!(
        misplaced(&data, 1),
        [],
        "every accepted broadcast, once, in order"
    );
    assert_eq!(
        misplaced(&offsets, first_offset),
        [],
        "offsets without gaps"
    );
    assert_eq!(data.len() as u64, MESSAGES);
    s.nothing(Duration::from_millis(300)).await;
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_publisher_is_paced_and_nothing_it_was_told_is_lost() {
    // (A release build floods Redis faster than this debug one can: scripts/
    // bench-history-memory.sh with CLUSTER=1 sends 1,000,000 so and loses none.)
    const MESSAGES: u64 = 30_000;
    let redis = Redis::start();
    let node = Node::start(&redis, "tokio");
    let mut c = node.client_on("/live").await;
    c.request(json!({"subscribe": {"channel": "flood"}})).await;
    // Every broadcast sent at once, none awaited: Redis cannot keep up with the node.
    for i in 1..=MESSAGES {
        let frame = json!({"broadcast": {"event": "e", "channel": "flood", "data": i}});
        c.ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    let (mut replies, mut data) = (0, Vec::new());
    while replies < MESSAGES || (data.len() as u64) < MESSAGES {
        let v = next_json_within(&mut c.ws, Duration::from_secs(20)).await;
        if v == json!({"broadcasted": "flood"}) {
            replies += 1;
        } else {
            assert_eq!(v["offset"], v["data"], "{v}");
            data.push(v["data"].as_u64().unwrap());
        }
    }
    assert_eq!(data, (1..=MESSAGES).collect::<Vec<_>>());
    assert_eq!(node.metric("rocket_cluster_dropped_total"), 0.0);
    c.nothing(Duration::from_millis(200)).await;
}
