//! The shared end-to-end suite (`e2e/suite.rs`) against the tokio frontend.

#[macro_use]
#[path = "../../e2e/suite.rs"]
mod suite;

use std::sync::Arc;

use rocket_server::{ServerState, rustls};
use suite::{Frontend, Started};

struct Tokio;

impl Frontend for Tokio {
    fn start(service: ServerState, tls: Option<Arc<rustls::ServerConfig>>) -> Started {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        let mut server = rocket_tokio::Server::from_state(service);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        let running = rocket_tokio::serve(server, listener).unwrap();
        Started {
            addr: running.local_addr(),
            service: Arc::clone(running.state()),
            stop: Box::new(move |grace| Box::pin(running.shutdown(grace))),
        }
    }
}

e2e_tests!(Tokio);
