//! Mounting Rocket inside an async-std program: serve the example config for the number of
//! seconds given (default: until killed).
//!
//! ```text
//! cargo run -p rocket-async-std --example embed_async_std -- 127.0.0.1:9772 60
//! ```

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        let mut args = std::env::args().skip(1);
        let addr = args.next().unwrap_or_else(|| "127.0.0.1:9772".into());
        let seconds: u64 = args.next().map_or(Ok(u64::MAX), |s| s.parse())?;
        let config = rocket_server::Config::from_json(include_str!("../../example.json"))?;
        let listener = std::net::TcpListener::bind(&addr)?;
        let running = rocket_async_std::serve(rocket_async_std::Server::new(config), listener)?;
        println!("Rocket hub /echo on ws://{}/echo", running.local_addr());
        async_std::task::sleep(Duration::from_secs(seconds)).await;
        running.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
