//! Runs the built `rocket-cli` binary: serving `example.json`, graceful shutdown on a
//! signal, and a one-line error with a non-zero exit for each way startup can fail.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn serves_example_json_on_tokio_and_shuts_down_on_sigterm() {
    serves_example_json_and_shuts_down_on_sigterm("tokio").await;
}

#[tokio::test]
async fn serves_example_json_on_async_std_and_shuts_down_on_sigterm() {
    serves_example_json_and_shuts_down_on_sigterm("async-std").await;
}

#[tokio::test]
async fn serves_example_json_on_smol_and_shuts_down_on_sigterm() {
    serves_example_json_and_shuts_down_on_sigterm("smol").await;
}

async fn serves_example_json_and_shuts_down_on_sigterm(runtime: &str) {
    let mut server = Server::start(&["example.json", "--port", "0", "--runtime", runtime]);
    let address = server.address();
    server.wait_for("user \"frontend\" has an empty Secret");
    server.wait_for("user \"backend\" has a plain-text Secret");
    server.wait_for(&format!("runtime: {runtime}"));

    let mut ws = connect(&address, "/echo").await;
    let greeting = next_json(&mut ws).await;
    let token = greeting["connected"].as_str().expect("a greeting");
    assert_eq!(token.len(), 32);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    login_and_subscribe(&mut ws, "news").await;

    server.signal("TERM");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    let status = server.exit_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
    server.wait_for("SIGTERM received");
    assert!(
        server.seen.iter().all(|l| !l.contains("\"secret\"")),
        "a secret was logged:\n{}",
        server.seen.join("\n")
    );
}

#[tokio::test]
async fn serves_the_demo_without_a_config_and_stops_on_sigint() {
    let mut server = Server::start(&["--port", "0", "--host", "127.0.0.1"]);
    server.wait_for("built-in demo config");
    let address = server.address();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let mut ws = connect(&address, "/echo").await;
    assert!(next_json(&mut ws).await["connected"].is_string());
    server.signal("INT");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
}

/// One HTTP/1.1 request with `Connection: close`; the whole response as text.
#[tokio::test]
async fn demo_flag_serves_the_demo_page_beside_the_hubs() {
    let mut server = Server::start(&["--demo", "--port", "0", "--host", "127.0.0.1"]);
    let address = server.address();
    server.wait_for(&format!("demo page: http://{address}/demo/"));
    let page = http_get(&address, "GET", "/demo/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    assert!(
        page.contains("<script type=\"module\" src=\"demo.js\">"),
        "{page}"
    );
    let client = http_get(&address, "HEAD", "/demo/rocket.js");
    assert!(
        client.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
        "{client}"
    );
    let length = include_str!("../../clients/js/rocket.js").len();
    assert!(
        client.contains(&format!("Content-Length: {length}\r\n")),
        "{client}"
    );
    assert!(client.ends_with("\r\n\r\n"), "HEAD has no body: {client}");
    assert!(http_get(&address, "GET", "/demo/nope").starts_with("HTTP/1.1 404"));
    // The hub is still served beside it.
    let mut ws = connect(&address, "/echo").await;
    assert!(next_json(&mut ws).await["connected"].is_string());
    // Without --demo, there is no page.
    let mut plain = Server::start(&["--port", "0", "--host", "127.0.0.1"]);
    let plain_address = plain.address();
    assert!(http_get(&plain_address, "GET", "/demo/").starts_with("HTTP/1.1 404"));
}

#[test]
fn demo_flag_refuses_a_hub_under_demo() {
    let config = config_with("demo-hub.json", r#"{"Hubs":[{"Path":"/demo/chat"}]}"#);
    assert_fails(
        &[&config, "--demo", "--port", "0"],
        &["--demo: ", "\"/demo/chat\"", "collides", "/demo/"],
    );
    let config = config_with("demo-bare.json", r#"{"Hubs":[{"Path":"/demo"}]}"#);
    assert_fails(
        &[&config, "--demo", "--port", "0"],
        &["\"/demo\"", "collides"],
    );
}

/// The `client=#N` field of a log line.
fn client_field(line: &str) -> &str {
    let start = line
        .find("client=#")
        .unwrap_or_else(|| panic!("no client in {line:?}"));
    line[start..].split_whitespace().next().unwrap()
}

#[tokio::test]
async fn the_close_log_line_says_who_ended_the_connection() {
    let mut server = Server::start(&["--port", "0", "--host", "127.0.0.1"]);
    let address = server.address();

    // `{"disconnect":true}`: the client asks, the server sends the close.
    let mut asking = connect(&address, "/echo").await;
    assert!(next_json(&mut asking).await["connected"].is_string());
    let client = client_field(&server.wait_for("connection open")).to_owned();
    send(&mut asking, serde_json::json!({"disconnect": true})).await;
    assert_eq!(close_code(&mut asking).await, CloseCode::Normal);
    let line = server.wait_for("connection closed");
    assert_eq!(client_field(&line), client, "{line}");
    assert!(
        line.contains(
            "connection closed: the client asked to disconnect; closed by the server with 1000"
        ),
        "{line}"
    );

    // The client sends the close itself.
    let mut leaving = connect(&address, "/echo").await;
    assert!(next_json(&mut leaving).await["connected"].is_string());
    leaving.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), leaving.next()).await {
    }
    let line = server.wait_for("connection closed: closed by the client");
    assert_ne!(client_field(&line), client, "{line}");
}

#[tokio::test]
async fn hash_secret_makes_a_phc_secret_that_authenticates() {
    let mut child = rocket(&["hash-secret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"open sesame\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$"), "{phc}");

    let config = serde_json::json!({
        "Hubs": [{"Path": "/vault", "Users": {"alice": {"Secret": phc, "Permission": 3}}}]
    });
    let path = config_with("phc.json", &config.to_string());
    let mut server = Server::start(&[&path, "--port", "0"]);
    let address = server.address();
    let mut ws = connect(&address, "/vault").await;
    assert!(next_json(&mut ws).await["connected"].is_string());
    let auth =
        |secret: &str| serde_json::json!({"authenticate": {"user": "alice", "secret": secret}});
    send(&mut ws, auth("open barley")).await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"err": "INVALID_CREDENTIALS"})
    );
    send(&mut ws, auth("open sesame")).await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"authenticated": "alice"})
    );
    server.wait_for("connection open");
    let failed = server.wait_for("authentication failed");
    assert!(failed.contains("alice"), "{failed}");
    server.signal("TERM");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
    server.wait_for("connection closed");
    let log = server.seen.join("\n");
    assert!(
        !log.contains("open barley") && !log.contains("open sesame"),
        "a secret was logged:\n{log}"
    );
}

#[test]
fn hash_secret_refuses_an_empty_secret() {
    let out = rocket(&["hash-secret"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("rocket-cli: hash-secret: no secret"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file() {
    assert_fails(
        &["no-such-config.json"],
        &["no-such-config.json: cannot read the config file"],
    );
}

#[test]
fn bad_json_names_line_and_column() {
    let path = config_with("bad.json", "{\n  \"Host\": \"localhost\",\n  oops\n}\n");
    assert_fails(&[&path], &["bad.json: invalid JSON at line 3 column 3"]);
}

#[test]
fn invalid_configs_name_the_key() {
    let hub = |extra: &str| format!(r#"{{"Hubs":[{{"Path":"/echo"{extra}}}]}}"#);
    let cases = [
        (
            "codec.json",
            hub(r#","Codec":"XML""#),
            vec!["codec.json: invalid config: Hubs[0].Codec", "\"XML\""],
        ),
        (
            "permission.json",
            hub(r#","Users":{"u":{"Name":"u","Permission":9}}"#),
            vec![
                "permission.json: invalid config",
                "Permission 9 is out of range",
            ],
        ),
        (
            "duplicate.json",
            r#"{"Hubs":[{"Path":"/echo"},{"Path":"/echo"}]}"#.to_owned(),
            vec!["duplicate.json: invalid config: Hubs[1].Path: duplicate hub path \"/echo\""],
        ),
        (
            "name.json",
            hub(r#","Users":{"alice":{"Name":"bob","Permission":1}}"#),
            vec![
                "name.json: invalid config: Hubs[0].Users.alice.Name",
                "\"bob\"",
            ],
        ),
        (
            "redis.json",
            r#"{"Hubs":[{"Path":"/echo"}],"Cluster":{"Redis":"http://nope"}}"#.to_owned(),
            vec!["redis.json: invalid config: Cluster.Redis", "\"http://nope\""],
        ),
        (
            "clustered-history.json",
            r#"{"Hubs":[{"Path":"/echo","History":{"Size":0,"TtlMs":1}}],"Cluster":{"Redis":"redis://127.0.0.1/0"}}"#
                .to_owned(),
            vec![
                "clustered-history.json: invalid config: Hubs[0].History.Size",
                "must be at least 1",
            ],
        ),
    ];
    for (name, text, needles) in cases {
        let path = config_with(name, &text);
        assert_fails(&[&path], &needles);
    }
}

#[test]
fn a_bad_redis_flag_is_refused() {
    assert_fails(
        &["example.json", "--redis", "redis//missing-colon"],
        &["Cluster.Redis", "\"redis//missing-colon\""],
    );
}

#[test]
fn address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_fails(
        &["example.json", "--host", "127.0.0.1", "--port", &port],
        &[&format!("cannot listen on 127.0.0.1:{port}"), "in use"],
    );
}

#[test]
fn unreadable_tls_files() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-no-such-cert.pem");
    let missing = missing.to_string_lossy();
    assert_fails(
        &[
            "example.json",
            "--port",
            "0",
            "--tls-cert",
            &missing,
            "--tls-key",
            &missing,
        ],
        &["cannot read certificate", "cli-no-such-cert.pem"],
    );
    let garbage = config_with("garbage.pem", "not a certificate\n");
    assert_fails(
        &[
            "example.json",
            "--port",
            "0",
            "--tls-cert",
            &garbage,
            "--tls-key",
            &garbage,
        ],
        &["no certificate found", "cli-garbage.pem"],
    );
    assert_fails(
        &["example.json", "--tls-cert", &garbage],
        &["command-line flags: invalid config: TLSKeyFile"],
    );
}

#[test]
fn an_unknown_runtime_is_refused() {
    let out = run(&["example.json", "--runtime", "node"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("possible values: tokio, smol, async-std"),
        "{stderr}"
    );
}

/// Connects, reads the greeting, authenticates as `backend` and subscribes to `channel`.
async fn subscriber(address: &str, channel: &str) -> Ws {
    let mut ws = connect(address, "/echo").await;
    next_json(&mut ws).await; // greeting
    login_and_subscribe(&mut ws, channel).await;
    ws
}

/// Authenticates as `backend` and subscribes to `channel`.
async fn login_and_subscribe(ws: &mut Ws, channel: &str) {
    send(
        ws,
        serde_json::json!({"authenticate": {"user": "backend", "secret": "secret"}}),
    )
    .await;
    assert_eq!(
        next_json(ws).await,
        serde_json::json!({"authenticated": "backend"})
    );
    send(ws, serde_json::json!({"subscribe": {"channel": channel}})).await;
    assert_eq!(
        next_json(ws).await,
        serde_json::json!({"subscribed": channel})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_clients_on_tokio() {
    sigterm_with_a_thousand_clients("tokio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_clients_on_smol() {
    sigterm_with_a_thousand_clients("smol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_clients_on_async_std() {
    sigterm_with_a_thousand_clients("async-std").await;
}

/// Every one of 1,000 connected clients gets close 1001, and the process exits 0 promptly.
async fn sigterm_with_a_thousand_clients(runtime: &str) {
    // 1,000 sockets here and 1,000 in the server (which inherits this limit): more than the
    // 1,024 descriptors many systems allow by default.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut server = Server::start(&[
        "example.json",
        "--port",
        "0",
        "--runtime",
        runtime,
        "--log-level",
        "warn,rocket_cli=info",
    ]);
    let address = server.address();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(subscriber(&address, "all").await);
    }
    let started = Instant::now();
    server.signal("TERM");
    let closes: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { close_code(&mut ws).await }))
        .collect();
    for close in closes {
        assert_eq!(close.await.unwrap(), CloseCode::Away);
    }
    let status = server.exit_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_keeps_server_memory_bounded_on_tokio() {
    stalled_subscriber_keeps_server_memory_bounded("tokio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_keeps_server_memory_bounded_on_async_std() {
    stalled_subscriber_keeps_server_memory_bounded("async-std").await;
}

/// The server's resident memory, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// 10,000 broadcasts of 4 KB (40 MB) to a subscriber that never reads: the server closes
/// it as a slow consumer, its RSS stays far below what buffering them would take, and a
/// healthy subscriber receives everything in order.
async fn stalled_subscriber_keeps_server_memory_bounded(runtime: &str) {
    let mut server = Server::start(&[
        "example.json",
        "--port",
        "0",
        "--runtime",
        runtime,
        "--log-level",
        "warn,rocket_cli=info",
    ]);
    let address = server.address();
    let pid = server.child.id();
    let mut healthy = subscriber(&address, "flood").await;
    let _stalled = subscriber(&address, "flood").await; // never reads again
    let mut publisher = subscriber(&address, "publisher-own").await;
    let before = rss_kib(pid);
    let mut peak = before;
    let pad = "p".repeat(4000);
    for batch in 0..100u64 {
        for i in batch * 100..(batch + 1) * 100 {
            let data = serde_json::json!({"seq": i, "pad": pad});
            send(
                &mut publisher,
                serde_json::json!({"broadcast": {"event": "f", "channel": "flood", "data": data}}),
            )
            .await;
        }
        for i in batch * 100..(batch + 1) * 100 {
            assert_eq!(
                next_json(&mut publisher).await,
                serde_json::json!({"broadcasted": "flood"})
            );
            assert_eq!(
                next_json(&mut healthy).await["data"]["seq"],
                serde_json::json!(i)
            );
        }
        peak = peak.max(rss_kib(pid));
    }
    server.wait_for("slow consumer");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("{runtime}: server RSS {before} KiB before, {peak} KiB at peak");
    assert!(
        growth_mib < 24,
        "server RSS grew by {growth_mib} MiB while 40 MB went to a stalled client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_memory_freed_on_tokio() {
    non_reading_client_is_dropped_by_the_write_timeout("tokio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_memory_freed_on_async_std() {
    non_reading_client_is_dropped_by_the_write_timeout("async-std").await;
}

/// The case that once held a connection for seven minutes: a subscriber stops reading and
/// 40 × 500 KB (fewer messages than `SendQueueMessages`, and under `SendQueueBytes` here)
/// are broadcast to it. Its write stalls; it is dropped within `WriteTimeoutMs` plus a
/// tick, the server's RSS comes back down to near its baseline, and a healthy subscriber
/// receives everything.
async fn non_reading_client_is_dropped_by_the_write_timeout(runtime: &str) {
    let config = config_with(
        &format!("write-timeout-{runtime}.json"),
        r#"{"Host":"127.0.0.1","Port":0,
            "Hubs":[{"Path":"/echo","Users":{"backend":{"Secret":"secret","Permission":7}}}],
            "Limits":{"PingIntervalMs":500,"IdleTimeoutMs":60000,"WriteTimeoutMs":1000,
                      "MaxMessageBytes":600000,"SendQueueBytes":67108864}}"#,
    );
    // glibc keeps freed memory for reuse after it raised its mmap threshold to the size of
    // these messages; with the threshold fixed, what the server frees goes back to the OS
    // at once, so RSS shows whether the server let go of everything (see the README).
    let mut server = Server::start_with_env(
        &[
            &config,
            "--runtime",
            runtime,
            "--log-level",
            "warn,rocket_cli=info",
        ],
        &[("MALLOC_MMAP_THRESHOLD_", "131072")],
    );
    let address = server.address();
    let pid = server.child.id();
    let mut healthy = subscriber(&address, "big").await;
    let _stalled = subscriber(&address, "big").await; // never reads again
    let mut publisher = subscriber(&address, "publisher-own").await;
    let before = rss_kib(pid);
    let mut peak = before;
    let pad = "q".repeat(500_000);
    for i in 0..40u64 {
        let data = serde_json::json!({"seq": i, "pad": pad});
        send(
            &mut publisher,
            serde_json::json!({"broadcast": {"event": "b", "channel": "big", "data": data}}),
        )
        .await;
        assert_eq!(
            next_json(&mut publisher).await,
            serde_json::json!({"broadcasted": "big"})
        );
        assert_eq!(
            next_json(&mut healthy).await["data"]["seq"],
            serde_json::json!(i)
        );
        peak = peak.max(rss_kib(pid));
    }
    let sent = Instant::now();
    let line = server.wait_for("write timeout");
    let took = sent.elapsed();
    assert!(line.contains("WARN"), "{line}");
    // 1 s of no progress, noticed at the next 500 ms tick; the stall may start before the
    // last broadcast, so this is an upper bound with room for a loaded machine.
    assert!(
        took < Duration::from_secs(4),
        "dropped {took:?} after the last broadcast"
    );
    // Freed memory goes back to the allocator at once; give the OS a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    eprintln!("{runtime}: server RSS {before} KiB before, {peak} KiB at peak, {after} KiB after");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "server RSS stayed {} MiB above its baseline after the stalled client was dropped",
        after.saturating_sub(before) / 1024
    );
    // The healthy subscriber is still served.
    send(&mut healthy, serde_json::json!({"logout": true})).await;
    assert_eq!(
        next_json(&mut healthy).await,
        serde_json::json!({"loggedOut": true})
    );
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("rocket-cli {}", env!("CARGO_PKG_VERSION"))
    );

    let out = run(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--tls-cert",
        "--tls-key",
        "--log",
        "--log-level",
        "--runtime",
        "--version",
        "[CONFIG]",
        "hash-secret",
    ] {
        assert!(stdout.contains(flag), "{flag} not in --help:\n{stdout}");
    }
    assert!(
        stdout.contains("async-std is discontinued upstream") && stdout.contains("prefer smol"),
        "--help says async-std is discontinued and recommends smol:\n{stdout}"
    );
}

#[test]
fn logs_go_to_the_log_file() {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-server.log");
    let _ = std::fs::remove_file(&log);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let log_arg = log.to_string_lossy();
    // Fails to bind, so it exits; the warning and the error are in the file.
    assert_fails(
        &[
            "example.json",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--log",
            &log_arg,
        ],
        &["cannot listen on"],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("user \"frontend\" has an empty Secret"),
        "{text}"
    );
    assert!(text.contains("cannot listen on"), "{text}");
}

// ---------------------------------------------------------------------------------------
// SIGHUP: reload the config file and reopen the log file (PROTOCOL.md, "Reload (SIGHUP)").

/// The reload tests' config: hub `/echo` with `users` (name, secret, permission).
fn reload_config(users: &[(&str, &str, u8)]) -> String {
    let users: serde_json::Map<String, serde_json::Value> = users
        .iter()
        .map(|(name, secret, permission)| {
            let user = serde_json::json!({"Secret": secret, "Permission": permission});
            ((*name).to_owned(), user)
        })
        .collect();
    serde_json::json!({"Host": "127.0.0.1", "Port": 0, "Hubs": [{"Path": "/echo", "Users": users}]})
        .to_string()
}

/// Connects to `/echo`, reads the greeting and authenticates as `user`.
async fn logged_in(address: &str, user: &str, secret: &str) -> Ws {
    let mut ws = connect(address, "/echo").await;
    next_json(&mut ws).await; // greeting
    send(
        &mut ws,
        serde_json::json!({"authenticate": {"user": user, "secret": secret}}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"authenticated": user})
    );
    ws
}

async fn request(ws: &mut Ws, json: serde_json::Value) -> serde_json::Value {
    send(ws, json).await;
    next_json(ws).await
}

fn news(data: i64) -> serde_json::Value {
    serde_json::json!({"broadcast": {"event": "e", "channel": "news", "data": data}})
}

fn delivery(data: i64) -> serde_json::Value {
    serde_json::json!({"event": "e", "channel": "news", "data": data})
}

fn auth(user: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({"authenticate": {"user": user, "secret": secret}})
}

#[tokio::test]
async fn sighup_reloads_users_with_clients_connected_on_tokio() {
    sighup_reloads_users_with_clients_connected("tokio").await;
}

#[tokio::test]
async fn sighup_reloads_users_with_clients_connected_on_async_std() {
    sighup_reloads_users_with_clients_connected("async-std").await;
}

#[tokio::test]
async fn sighup_reloads_users_with_clients_connected_on_smol() {
    sighup_reloads_users_with_clients_connected("smol").await;
}

/// Four sessions across a reload that changes alice's secret, removes bob, takes WRITE
/// from carl and adds dave: every connection stays open; alice's and carl's sessions go on
/// (carl denied WRITE from his next request); bob is anonymous and unsubscribed; new
/// logins need the new secret.
async fn sighup_reloads_users_with_clients_connected(runtime: &str) {
    let path = config_with(
        &format!("reload-users-{runtime}.json"),
        &reload_config(&[
            ("admin", "a", 7),
            ("alice", "old", 3),
            ("bob", "b", 3),
            ("carl", "c", 3),
        ]),
    );
    let mut server = Server::start(&[&path, "--runtime", runtime]);
    let address = server.address();
    let subscribe = serde_json::json!({"subscribe": {"channel": "news"}});
    let subscribed = serde_json::json!({"subscribed": "news"});
    let mut clients = Vec::new();
    for (user, secret) in [
        ("admin", "a"),
        ("alice", "old"),
        ("bob", "b"),
        ("carl", "c"),
    ] {
        let mut ws = logged_in(&address, user, secret).await;
        assert_eq!(request(&mut ws, subscribe.clone()).await, subscribed);
        clients.push(ws);
    }
    let [admin, alice, bob, carl] = &mut clients[..] else {
        unreachable!("four clients")
    };

    std::fs::write(
        &path,
        reload_config(&[
            ("admin", "a", 7),
            ("alice", "new", 3),
            ("carl", "c", 1),
            ("dave", "d", 3),
        ]),
    )
    .unwrap();
    server.signal("HUP");
    let line = server.wait_for("reloaded: hub \"/echo\"");
    for change in [
        "users added: dave",
        "users removed: bob (1 session(s) ended)",
        "secret changed: alice",
        "permission changed: carl",
    ] {
        assert!(line.contains(change), "{change:?} not in {line:?}");
    }
    // The startup warning about plain secrets, again for the secrets the reload brought in
    // (logged in user order, so admin's and alice's would come before dave's).
    server.wait_for("user \"dave\" has a plain-text Secret");
    let warnings = |user: &str| {
        let needle = format!("user \"{user}\" has a plain-text Secret");
        server.seen.iter().filter(|l| l.contains(&needle)).count()
    };
    assert_eq!((warnings("admin"), warnings("alice")), (1, 2));

    // Everyone is still connected. The admin's broadcast reaches alice and carl, not bob.
    send(admin, news(1)).await;
    let mut got = [next_json(admin).await, next_json(admin).await];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        [serde_json::json!({"broadcasted": "news"}), delivery(1)]
    );
    assert_eq!(next_json(alice).await, delivery(1));
    assert_eq!(next_json(carl).await, delivery(1));
    // Bob's next message is the answer to his request, not the broadcast: he is anonymous.
    let denied = serde_json::json!({"err": "ACCESS_DENIED"});
    assert_eq!(request(bob, news(2)).await, denied);
    assert_eq!(request(bob, subscribe.clone()).await, denied);
    // Carl lost WRITE from his next request on; alice's session goes on.
    assert_eq!(request(carl, news(3)).await, denied);
    send(alice, news(4)).await;
    assert_eq!(next_json(admin).await, delivery(4));
    assert_eq!(next_json(carl).await, delivery(4));

    // New logins use the new users.
    let mut fresh = connect(&address, "/echo").await;
    next_json(&mut fresh).await;
    assert_eq!(
        request(&mut fresh, auth("alice", "old")).await,
        serde_json::json!({"err": "INVALID_CREDENTIALS"})
    );
    assert_eq!(
        request(&mut fresh, auth("bob", "b")).await,
        serde_json::json!({"err": "INVALID_USER"})
    );
    for (user, secret) in [("alice", "new"), ("dave", "d")] {
        assert_eq!(
            request(&mut fresh, auth(user, secret)).await,
            serde_json::json!({"authenticated": user})
        );
    }

    server.signal("TERM");
    for ws in clients.iter_mut() {
        assert_eq!(close_code(ws).await, CloseCode::Away);
    }
    assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
}

/// Waits for a line containing `needle` in the file at `path` and returns it.
fn wait_for_in_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sighup_keeps_the_running_config_when_the_file_is_invalid_and_reopens_the_log_on_tokio() {
    sighup_keeps_the_running_config_and_reopens_the_log("tokio").await;
}

#[tokio::test]
async fn sighup_keeps_the_running_config_when_the_file_is_invalid_and_reopens_the_log_on_async_std()
{
    sighup_keeps_the_running_config_and_reopens_the_log("async-std").await;
}

#[tokio::test]
async fn sighup_keeps_the_running_config_when_the_file_is_invalid_and_reopens_the_log_on_smol() {
    sighup_keeps_the_running_config_and_reopens_the_log("smol").await;
}

/// logrotate moves the log file away and sends SIGHUP: the server writes to a new file at
/// the path. The config file now has a syntax error: reported there, and the running
/// config keeps serving. Fixed and signalled again, it applies.
async fn sighup_keeps_the_running_config_and_reopens_the_log(runtime: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let log = dir.join(format!("cli-reload-{runtime}.log"));
    let rotated = dir.join(format!("cli-reload-{runtime}.log.1"));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
    let path = config_with(
        &format!("reload-invalid-{runtime}.json"),
        &reload_config(&[("alice", "old", 3)]),
    );
    let log_arg = log.to_string_lossy().into_owned();
    let mut server = Server::start(&[&path, "--runtime", runtime, "--log", &log_arg]);
    let line = wait_for_in_file(&log, "listening on ws://");
    let address = line[line.find("ws://").unwrap() + "ws://".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut ws = logged_in(&address, "alice", "old").await;

    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&path, "{\n  \"Hubs\": oops\n}\n").unwrap();
    server.signal("HUP");
    let reopened = wait_for_in_file(&log, "reopened");
    assert!(reopened.contains(&log_arg), "{reopened}");
    let refused = wait_for_in_file(&log, "config not reloaded");
    assert!(
        refused.contains("ERROR")
            && refused.contains("the running config is kept")
            && refused.contains("invalid JSON at line 2 column 11"),
        "{refused}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("listening on") && !old.contains("SIGHUP"),
        "{old}"
    );

    // The connection and the old users still serve.
    assert_eq!(
        request(
            &mut ws,
            serde_json::json!({"subscribe": {"channel": "news"}})
        )
        .await,
        serde_json::json!({"subscribed": "news"})
    );
    let mut fresh = logged_in(&address, "alice", "old").await;

    // Fixed: the next SIGHUP applies it.
    std::fs::write(&path, reload_config(&[("alice", "new", 3)])).unwrap();
    server.signal("HUP");
    wait_for_in_file(&log, "secret changed: alice");
    assert_eq!(
        request(&mut fresh, auth("alice", "old")).await,
        serde_json::json!({"err": "INVALID_CREDENTIALS"})
    );
    assert_eq!(
        request(&mut fresh, auth("alice", "new")).await,
        serde_json::json!({"authenticated": "alice"})
    );

    server.signal("TERM");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
    wait_for_in_file(&log, "shut down cleanly");
}

#[tokio::test]
async fn sighup_with_the_demo_config_only_reopens_the_log() {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-reload-demo.log");
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_string_lossy().into_owned();
    let mut server = Server::start(&["--host", "127.0.0.1", "--port", "0", "--log", &log_arg]);
    let line = wait_for_in_file(&log, "listening on ws://");
    let address = line[line.find("ws://").unwrap() + "ws://".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut ws = logged_in(&address, "backend", "secret").await;
    std::fs::remove_file(&log).unwrap();
    server.signal("HUP");
    wait_for_in_file(&log, "no config file to reload");
    assert_eq!(
        request(
            &mut ws,
            serde_json::json!({"subscribe": {"channel": "news"}})
        )
        .await,
        serde_json::json!({"subscribed": "news"})
    );
    server.signal("INT");
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
}

/// Every stderr line the server printed until it exited.
fn all_lines(server: &mut Server) -> String {
    while let Ok(line) = server.lines.recv_timeout(Duration::from_secs(5)) {
        server.seen.push(line);
    }
    server.seen.join("\n")
}

/// No secret reaches the log at any level, not even when the filter asks for the WebSocket
/// library's own trace output (which prints every message it reads).
#[tokio::test]
async fn no_secret_is_logged_at_any_level() {
    const PLAIN: &str = "plain-Secret-7Qx";
    const PHC_SECRET: &str = "open sesame";
    const PHC: &str = "$argon2id$v=19$m=64,t=1,p=1$snHI5xhcATsqfFl8Nsex7g$qeXptikvCfHrC4Sg2gDsZIRKbcf5Y+3c2iq36mmT21E";
    const GUESS: &str = "wrong-Guess-4Zk";
    let config = serde_json::json!({
        "Hubs": [{"Path": "/echo", "Users": {
            "plain": {"Secret": PLAIN, "Permission": 3},
            "hashed": {"Secret": PHC, "Permission": 3}
        }}]
    });
    let path = config_with("secrets-in-logs.json", &config.to_string());
    let flag = |filter: &'static str| (Some(filter), None);
    let runs: [(Option<&str>, Option<&str>); 8] = [
        flag("error"),
        flag("warn"),
        flag("info"),
        flag("debug"),
        flag("trace"),
        flag("trace,tungstenite=trace,tokio_tungstenite=trace"),
        flag("trace,tungstenite::protocol=trace"),
        (None, Some("trace")),
    ];
    for (level, env) in runs {
        // The startup line is info, so at error and warn it never shows: choose the port.
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port().to_string();
        drop(free);
        let mut args = vec![path.as_str(), "--port", &port, "--host", "127.0.0.1"];
        if let Some(level) = level {
            args.extend(["--log-level", level]);
        }
        let vars: Vec<_> = env.map(|e| ("RUST_LOG", e)).into_iter().collect();
        let mut server = Server::start_with_env(&args, &vars);
        let address = format!("127.0.0.1:{port}");
        wait_until_listening(&address).await;
        let mut ws = connect(&address, "/echo").await;
        assert!(next_json(&mut ws).await["connected"].is_string());
        let auth = |user: &str, secret: &str| serde_json::json!({"authenticate": {"user": user, "secret": secret}});
        for (user, secret, reply) in [
            (
                "plain",
                GUESS,
                serde_json::json!({"err": "INVALID_CREDENTIALS"}),
            ),
            (
                "hashed",
                GUESS,
                serde_json::json!({"err": "INVALID_CREDENTIALS"}),
            ),
            (
                "plain",
                PLAIN,
                serde_json::json!({"authenticated": "plain"}),
            ),
            (
                "hashed",
                PHC_SECRET,
                serde_json::json!({"authenticated": "hashed"}),
            ),
        ] {
            send(&mut ws, auth(user, secret)).await;
            assert_eq!(next_json(&mut ws).await, reply, "{level:?} {env:?}");
        }
        server.signal("TERM");
        assert_eq!(close_code(&mut ws).await, CloseCode::Away);
        assert_eq!(server.exit_status(Duration::from_secs(10)).code(), Some(0));
        let log = all_lines(&mut server);
        for secret in [PLAIN, PHC_SECRET, GUESS] {
            assert!(
                !log.contains(secret),
                "{secret:?} logged with --log-level {level:?}, RUST_LOG {env:?}:\n{log}"
            );
        }
        let traced = log.contains(" TRACE ");
        assert_eq!(
            traced,
            level.unwrap_or("trace").starts_with("trace"),
            "trace output with --log-level {level:?}, RUST_LOG {env:?}:\n{log}"
        );
        if traced {
            assert!(log.contains("starting an operation"), "{log}");
        }
    }
}

/// Waits until `address` accepts TCP connections.
async fn wait_until_listening(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(Instant::now() < deadline, "{address} never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket to `address` (on 127.0.0.1) from the loopback address `source`, greeting
/// read, so that one test can play several client addresses.
async fn connect_from(source: [u8; 4], address: &str, path: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let tcp = socket.connect(address.parse().unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{address}{path}"), tcp)
        .await
        .unwrap();
    assert!(next_json(&mut ws).await["connected"].is_string());
    ws
}

/// Argon2 verifications take turns fairly across client addresses: while one address
/// floods the server with 300 pipelined PHC guesses over 30 connections, a login from
/// another address completes within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phc_login_flood_from_one_address_does_not_delay_another() {
    use argon2::password_hash::PasswordHasher;
    const SECRET: &str = "open sesame";
    // Cheaper than the default parameters, so that this debug build verifies in
    // milliseconds rather than a second; the flood still costs seconds of verification.
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let phc = argon2.hash_password(SECRET.as_bytes()).unwrap().to_string();
    let config = serde_json::json!({
        "Hubs": [{"Path": "/vault", "Users": {"hashed": {"Secret": phc, "Permission": 3}}}],
        "Limits": {"MaxFailedAuth": 0}
    });
    let path = config_with("phc-flood.json", &config.to_string());
    let mut server = Server::start(&[&path, "--port", "0", "--host", "127.0.0.1"]);
    let address = server.address();
    let auth =
        |secret: &str| serde_json::json!({"authenticate": {"user": "hashed", "secret": secret}});

    let started = Instant::now();
    let mut flood = Vec::new();
    for c in 0..30 {
        let mut ws = connect_from([127, 0, 0, 1], &address, "/vault").await;
        for g in 0..10 {
            send(&mut ws, auth(&format!("guess {c}.{g}"))).await;
        }
        flood.push(tokio::spawn(async move {
            for _ in 0..10 {
                assert_eq!(
                    next_json_within(&mut ws, Duration::from_secs(60)).await,
                    serde_json::json!({"err": "INVALID_CREDENTIALS"})
                );
            }
            Instant::now()
        }));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut honest = connect_from([127, 0, 0, 2], &address, "/vault").await;
        let asked = Instant::now();
        send(&mut honest, auth(SECRET)).await;
        assert_eq!(
            next_json_within(&mut honest, Duration::from_secs(60)).await,
            serde_json::json!({"authenticated": "hashed"})
        );
        slowest = slowest.max(asked.elapsed());
    }
    let mut flood_done = started;
    for task in flood {
        flood_done = flood_done.max(task.await.unwrap());
    }
    eprintln!(
        "slowest honest PHC login during the flood: {slowest:?}; \
         the flood's 300 answers took {:?}",
        flood_done - started
    );
    assert!(
        slowest < Duration::from_secs(1),
        "an honest login waited {slowest:?} behind another address's flood"
    );
}

/// On a terminal, `hash-secret` reads the secret without echoing it (twice, to catch a
/// typo). The terminal is a pseudo-terminal made by util-linux `script`.
#[test]
fn hash_secret_does_not_echo_the_secret_on_a_terminal() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let mut child = Command::new("script")
        .args(["-qec", &format!("{BIN} hash-secret"), "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // Waits until the terminal shows one of `needles`; returns which.
    let wait_for = |needles: &[&str]| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = seen.lock().unwrap().clone();
            if let Some(n) = needles.iter().find(|n| text.contains(**n)) {
                return (*n).to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {needles:?} on the terminal: {text:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for(&["Secret"]);
    // Type only once the prompt is up, as a person would (and once echo is off).
    thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"open sesame\r").unwrap();
    if wait_for(&["again", "$argon2id$"]) == "again" {
        thread::sleep(Duration::from_millis(300));
        stdin.write_all(b"open sesame\r").unwrap();
    }
    wait_for(&["$argon2id$"]);
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let terminal = seen.lock().unwrap().clone();
    assert!(status.success(), "{status:?}: {terminal:?}");
    assert!(
        !terminal.contains("open sesame"),
        "the secret was echoed: {terminal:?}"
    );
    let phc = terminal
        .split_whitespace()
        .find(|w| w.starts_with("$argon2id$"))
        .unwrap();
    assert!(rocket_server::verify_phc(phc, "open sesame"), "{phc}");
}

// ---------------------------------------------------------------------------------------
// SIGHUP reloads the TLS certificate from its files (certificates are renewed in place).

/// A fresh self-signed certificate for `localhost`: its PEM certificate and key, and its
/// DER certificate (for a client that trusts only it).
fn self_signed() -> (
    String,
    String,
    rocket_server::rustls::pki_types::CertificateDer<'static>,
) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = cert.cert.der().clone();
    (cert.cert.pem(), cert.signing_key.serialize_pem(), der)
}

/// A TLS connection to `address` from a client that trusts only `trusted`, and the
/// answer to `GET /health` over it; `Err` when the handshake fails.
async fn health_over_tls(
    address: &str,
    trusted: &rocket_server::rustls::pki_types::CertificateDer<'static>,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
)> {
    use rocket_server::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let answer = health_on(&mut tls).await;
    Ok((tls, answer))
}

/// `GET /health` on an open (keep-alive) connection: the response's status line.
async fn health_on(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    while !response.ends_with(br#"{"status":"ok"}"#) {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(response).unwrap();
    text.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_keeps_it_when_the_new_pair_is_bad() {
    let (cert_a, key_a, der_a) = self_signed();
    let cert = scratch_file("reload-tls-cert.pem", &cert_a);
    let key = scratch_file("reload-tls-key.pem", &key_a);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let config = config_with(
        "reload-tls.json",
        r#"{"Host":"127.0.0.1","Port":0,"Hubs":[{"Path":"/echo"}]}"#,
    );
    let mut server = Server::start(&[&config, "--tls-cert", cert, "--tls-key", key]);
    let line = server.wait_for("listening on wss://");
    let rest = &line[line.find("wss://").unwrap() + "wss://".len()..];
    let address = rest.split_whitespace().next().unwrap().to_owned();

    let (mut before, status) = health_over_tls(&address, &der_a).await.expect("serves A");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // The certificate is renewed in place, then SIGHUP.
    let (cert_b, key_b, der_b) = self_signed();
    std::fs::write(cert, &cert_b).unwrap();
    std::fs::write(key, &key_b).unwrap();
    server.signal("HUP");
    server.wait_for("TLS certificate reloaded");
    let (_, status) = health_over_tls(&address, &der_b).await.expect("serves B");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        health_over_tls(&address, &der_a).await.is_err(),
        "A is no longer presented"
    );
    assert_eq!(
        health_on(&mut before).await,
        "HTTP/1.1 200 OK",
        "a connection made with A stays open"
    );

    // A key that is not the certificate's: reported, and B stays.
    std::fs::write(key, &key_a).unwrap();
    server.signal("HUP");
    let line = server.wait_for("TLS certificate not reloaded");
    assert!(line.contains("the running one is kept"), "{line}");
    let (_, status) = health_over_tls(&address, &der_b).await.expect("still B");
    assert_eq!(status, "HTTP/1.1 200 OK");
    server.signal("TERM");
    assert!(server.exit_status(Duration::from_secs(10)).success());
}
