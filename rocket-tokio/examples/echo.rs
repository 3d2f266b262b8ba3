//! Serving a protocol of your own with the same frontend: an echo protocol that sends every
//! message back to its sender, on `/echo-raw`, next to the configured Rocket hubs. Useful
//! as a WebSocket conformance target (it runs with Rocket's `WebSocketConfig` and limits).
//!
//! ```text
//! cargo run -p rocket-tokio --example echo -- 127.0.0.1:9001
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use rocket_proto::{ClientId, ConnectError, Message, Output, Payload, Protocol, Token};

/// Echoes each message, text or binary, to its sender.
#[derive(Debug, Default)]
struct Echo {
    outputs: VecDeque<Output>,
}

impl Protocol for Echo {
    fn handle_connect(&mut self, _: ClientId, _: Token) -> Result<(), ConnectError> {
        Ok(())
    }

    fn handle_message(&mut self, client: ClientId, frame: Message<'_>) {
        let payload = match frame {
            Message::Text(text) => Payload::text(text),
            Message::Binary(bytes) => Payload::binary(bytes.to_vec()),
        };
        self.outputs.push_back(Output::Send { client, payload });
    }

    fn handle_disconnect(&mut self, _: ClientId) {}

    fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let mut config = rocket_server::Config::demo();
    config.limits.max_message_bytes = 16 << 20; // conformance suites send large messages
    let service =
        rocket_tokio::ServerState::new(config).with_protocol("/echo-raw", Echo::default())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let running = rocket_tokio::serve(rocket_tokio::Server::from_state(service), listener)?;
    println!(
        "echo protocol on ws://{}/echo-raw — Ctrl-C to stop",
        running.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
