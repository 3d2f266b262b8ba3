//! Mounting Rocket inside your own tokio program: serve the example config on a listener
//! you bind, and shut down gracefully on Ctrl-C.
//!
//! ```text
//! cargo run -p rocket-tokio --example embed -- 127.0.0.1:9772
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9772".into());
    let config = rocket_server::Config::from_json(include_str!("../../example.json"))?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let running = rocket_tokio::serve(rocket_tokio::Server::new(config), listener)?;
    println!(
        "Rocket hub /echo on ws://{}/echo — Ctrl-C to stop",
        running.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    let left = running.shutdown(Duration::from_secs(5)).await;
    println!("stopped ({left} connections did not close in time)");
    Ok(())
}
