//! The shared end-to-end suite (`e2e/suite.rs`) against the async-std frontend.

#[macro_use]
#[path = "../../e2e/suite.rs"]
mod suite;

use std::sync::Arc;

use rocket_server::{ServerState, rustls};
use suite::{Frontend, Started};

struct AsyncStd;

impl Frontend for AsyncStd {
    fn start(service: ServerState, tls: Option<Arc<rustls::ServerConfig>>) -> Started {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut server = rocket_async_std::Server::from_state(service);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        let running = rocket_async_std::serve(server, listener).unwrap();
        Started {
            addr: running.local_addr(),
            service: Arc::clone(running.state()),
            stop: Box::new(move |grace| Box::pin(running.shutdown(grace))),
        }
    }
}

e2e_tests!(AsyncStd);
