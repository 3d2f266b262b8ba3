//! What the tests of the `rocket-cli` binary share: running it, reading its log, and a
//! WebSocket client.

#![allow(dead_code)] // each test crate uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const BIN: &str = env!("CARGO_BIN_EXE_rocket-cli");

/// The repository root, where `example.json` lives.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn rocket(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs to completion and returns status, stdout and stderr.
pub fn run(args: &[&str]) -> Output {
    let mut cmd = rocket(args);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A startup error exits at once; a server that does start would hang the test.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rocket-cli {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A file under the test's scratch directory with `text` in it.
pub fn scratch_file(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts a failed start: non-zero status, and the last line of stderr is one
/// `rocket-cli: ...` line containing every one of `needles`.
pub fn assert_fails(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} succeeded; stderr: {stderr}"
    );
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("rocket-cli: "), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            last.contains(needle),
            "{args:?}: {needle:?} not in {last:?}"
        );
    }
}

pub fn config_with(name: &str, text: &str) -> String {
    scratch_file(name, text).to_string_lossy().into_owned()
}

/// A running server with its stderr lines collected by a thread.
pub struct Server {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = rocket(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no {needle:?} on stderr; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address from the startup line, `listening on ws://ADDR (...)`.
    pub fn address(&mut self) -> String {
        let line = self.wait_for("listening on ws://");
        let rest = &line[line.find("ws://").unwrap() + "ws://".len()..];
        rest.split_whitespace().next().unwrap().to_owned()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the process to exit.
    pub fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rocket-cli did not exit within {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub async fn connect(address: &str, path: &str) -> Ws {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{address}{path}"), tcp)
        .await
        .unwrap();
    ws
}

/// The next text message as JSON (pings, which the client answers itself, are skipped).
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    next_json_within(ws, Duration::from_secs(10)).await
}

/// The next text message as JSON, within `limit`.
pub async fn next_json_within(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(limit, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

pub async fn send(ws: &mut Ws, json: serde_json::Value) {
    ws.send(Message::text(json.to_string())).await.unwrap();
}

/// Reads until the server's close frame and returns its code, then finishes the close
/// handshake.
pub async fn close_code(ws: &mut Ws) -> CloseCode {
    let code = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the close frame in time");
        match message {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code").code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
    code
}

/// One plain HTTP request (no body) on a fresh connection; the whole response.
pub fn http_get(address: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
}
