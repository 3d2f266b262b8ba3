//! The one seam between the server and an async runtime. Everything else in this crate
//! runs on any executor; an adapter supplies its listener, TLS acceptor and WebSocket
//! stream constructor, and one [`Runtime`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A task for an executor.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the server needs from an async runtime: an executor, a clock, a timer, and a pool
/// for blocking work.
///
/// The server reads time only through [`now`](Self::now) (connection timers, handshake
/// deadlines, the hubs' protocol timers), so a runtime whose clock a test controls
/// controls every timer.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` to completion in the background (the accept loop, each connection,
    /// each hub's timer).
    fn spawn(&self, task: Task);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// The runtime's clock (a test runtime may pause or advance it).
    fn now(&self) -> Instant;

    /// Runs `job` on a thread where blocking is allowed (argon2 verification).
    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>>;
}

/// A shared runtime is a runtime (an adapter whose runtime holds state hands each
/// connection a clone).
impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn spawn(&self, task: Task) {
        (**self).spawn(task)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (**self).sleep(duration)
    }

    fn now(&self) -> Instant {
        (**self).now()
    }

    fn unblock(
        &self,
        job: Box<dyn FnOnce() -> bool + Send>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        (**self).unblock(job)
    }
}
