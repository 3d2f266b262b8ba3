//! The shared end-to-end suite (`e2e/suite.rs`) against this crate's server running on
//! smol's executor and sockets, proving the adapter is not tied to async-std.

#[macro_use]
#[path = "../../e2e/suite.rs"]
mod suite;

use std::sync::Arc;

use rocket_server::{ServerState, rustls};
use suite::{Frontend, Started};

struct Smol;

impl Frontend for Smol {
    fn start(service: ServerState, tls: Option<Arc<rustls::ServerConfig>>) -> Started {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = smol::net::TcpListener::try_from(std_listener).unwrap();
        let local_addr = listener.local_addr().unwrap();
        let incoming =
            futures_util::stream::unfold(listener, |l| async move { Some((l.accept().await, l)) });
        let mut server = rocket_async_std::Server::from_state(service);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        let running = rocket_async_std::serve_incoming(server, local_addr, incoming, |task| {
            smol::spawn(task).detach()
        });
        Started {
            addr: running.local_addr(),
            service: Arc::clone(running.state()),
            stop: Box::new(move |grace| Box::pin(running.shutdown(grace))),
        }
    }
}

e2e_tests!(Smol);
