//! Writer threads that write through what a dispatch queued, beside or instead of the
//! thread that dispatched it.
//!
//! A broadcast to a large channel leaves one outbox per subscriber to write through
//! (`hub::Cork`), one non-blocking system call each; on loopback, where the kernel runs the
//! receiver's side inline, each costs several microseconds. One thread writing a thousand
//! of them makes the last subscriber wait for the other 999, while the other cores may be
//! idle. So a cork of [`SHARE_MIN`] outboxes or more becomes a [`Batch`] that the
//! dispatching thread offers to the process's writer threads, then works on itself
//! ([`Writers::share`]): whoever is free takes the next [`CHUNK`] outboxes, until none is
//! left. The dispatching thread never waits for a writer: when every core is busy it simply
//! writes the whole batch itself, as it would without writers.
//!
//! A *long burst* (a connection's task read many messages in a row, each queueing about
//! one message per recipient: publishers on many small channels faster than the server
//! writes, `hub::Cork`) is left to the writers alone ([`Writers::defer`]), and the
//! dispatching thread goes back to reading. While the writers are behind, the messages of
//! the next bursts pile up in the outboxes they have not reached yet, and each of their
//! writes carries all of them: the busier the publishers, the fewer system calls per
//! delivery. Writing each burst at once instead kept every write to about one delivery,
//! and the system calls, not the reading, capped the server. Quiet inputs and short bursts
//! are written at once, as above: there is little to gather by waiting, and the writer
//! threads alone would be a bottleneck of their own.
//!
//! There is one writer thread per core beyond the first (at most [`MAX_WRITERS`]), started
//! with the first batch offered to them and kept for the life of the process; on a single
//! core there is none. A writer only ever makes the same non-blocking writes, under the
//! same outbox locks, as the dispatching thread would ([`Outbox::flush`]), so what it
//! writes and in which order is exactly the same.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::outbox::Outbox;

/// The fewest outboxes worth sharing: below this, waking a writer costs more than it saves.
pub(crate) const SHARE_MIN: usize = 32;
/// Outboxes taken at a time from a batch: few enough to balance, enough to keep the shared
/// counter off the hot path.
pub(crate) const CHUNK: usize = 8;
/// Writer threads at most, whatever the core count.
pub(crate) const MAX_WRITERS: usize = 7;
/// Batches waiting for a writer at most when a batch is shared: past this, every writer is
/// busy and behind, and the dispatching thread writes its batch alone.
const MAX_WAITING: usize = 16;
/// Batches waiting for a writer at most when a burst is deferred. An outbox joins a batch
/// only when a push finds its queue empty (`Outbox::push_by`), and the messages pushed
/// while it waits ride along, so what waits is bounded by the connections and their send
/// queues anyway; past this many batches the writers are far behind, and the dispatching
/// thread writes its burst itself, which also slows its reading of more.
const MAX_DEFERRED: usize = 1024;

/// Outboxes to write through, taken [`CHUNK`] at a time by whoever is free.
#[derive(Debug)]
pub(crate) struct Batch {
    outboxes: Vec<Arc<Outbox>>,
    next: AtomicUsize,
}

impl Batch {
    pub(crate) fn new(outboxes: Vec<Arc<Outbox>>) -> Self {
        Self {
            outboxes,
            next: AtomicUsize::new(0),
        }
    }

    /// Writes through the outboxes nobody has taken yet, a chunk at a time; returns once
    /// every chunk is taken (another thread may still be writing its last one).
    pub(crate) fn work(&self) {
        let len = self.outboxes.len();
        loop {
            let start = self.next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= len {
                return;
            }
            for outbox in &self.outboxes[start..len.min(start + CHUNK)] {
                outbox.flush();
            }
        }
    }

    /// Every chunk is taken (some may still be being written).
    fn is_taken(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.outboxes.len()
    }

    /// The outboxes, for reuse once nobody else holds the batch.
    pub(crate) fn into_outboxes(self) -> Vec<Arc<Outbox>> {
        self.outboxes
    }
}

/// The process's writer threads and the batches offered to them.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    queue: Mutex<Queue>,
    offered: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// Offered, oldest first; a batch stays while chunks of it are left, so that every
    /// writer woken for it finds it.
    batches: VecDeque<Arc<Batch>>,
    /// Writers waiting for a batch.
    idle: usize,
}

impl Queue {
    /// Forgets the batches whose every chunk is taken.
    fn prune(&mut self) {
        while self.batches.front().is_some_and(|b| b.is_taken()) {
            self.batches.pop_front();
        }
    }
}

impl Writers {
    /// The process's writers, started on first use; `None` on a single core.
    pub(crate) fn get() -> Option<&'static Arc<Writers>> {
        static WRITERS: OnceLock<Option<Arc<Writers>>> = OnceLock::new();
        WRITERS
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Writers::start(cores.saturating_sub(1).min(MAX_WRITERS))
            })
            .as_ref()
    }

    /// `count` writer threads (none: `None`). A thread that cannot be started is logged
    /// and done without: the dispatching threads write everything themselves.
    fn start(count: usize) -> Option<Arc<Writers>> {
        if count == 0 {
            return None;
        }
        let writers = Arc::new(Writers::default());
        let mut started = 0;
        for i in 0..count {
            let w = Arc::clone(&writers);
            match std::thread::Builder::new()
                .name(format!("rocket-writer-{i}"))
                .spawn(move || w.run())
            {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!("cannot start a writer thread: {e}"),
            }
        }
        (started > 0).then_some(writers)
    }

    /// Offers `batch` to the writers, waking one waiting writer per [`SHARE_MIN`] of its
    /// outboxes; the caller then works on it too.
    pub(crate) fn share(&self, batch: &Arc<Batch>) {
        self.offer(batch, MAX_WAITING);
    }

    /// Leaves `batch` to the writers, waking one waiting writer per [`SHARE_MIN`] of its
    /// outboxes (at least one); the caller does not work on it. Returns `false`, leaving
    /// nothing, when the writers are far behind: the caller then writes it itself.
    #[must_use = "a batch not deferred is the caller's to write"]
    pub(crate) fn defer(&self, batch: &Arc<Batch>) -> bool {
        self.offer(batch, MAX_DEFERRED)
    }

    /// Queues `batch` unless `limit` batches wait already; returns whether it was queued.
    fn offer(&self, batch: &Arc<Batch>, limit: usize) -> bool {
        let mut q = self.lock();
        q.prune();
        if q.batches.len() >= limit {
            return false;
        }
        q.batches.push_back(Arc::clone(batch));
        for _ in 0..q.idle.min(batch.outboxes.len().div_ceil(SHARE_MIN)) {
            self.offered.notify_one();
        }
        true
    }

    /// Forgets the batches whose every chunk is taken (the caller's, once it has worked on
    /// it), so that the queue holds none of their outboxes.
    pub(crate) fn forget_taken(&self) {
        self.lock().prune();
    }

    /// A writer thread: works on the oldest batch with chunks left, until none is left,
    /// then waits for the next offer. A panic while writing (a bug) is logged and the
    /// thread goes on: deferred batches have nobody else to write them.
    fn run(&self) {
        let mut q = self.lock();
        loop {
            q.prune();
            let Some(batch) = q.batches.front().cloned() else {
                q.idle += 1;
                q = self.offered.wait(q).unwrap_or_else(PoisonError::into_inner);
                q.idle -= 1;
                continue;
            };
            drop(q);
            // The outboxes' state is consistent between their locks (see `outbox.rs`).
            let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.work()));
            if worked.is_err() {
                tracing::error!("a writer thread panicked while writing a batch; it goes on");
            }
            drop(batch);
            q = self.lock();
        }
    }

    /// Works on every waiting batch on this thread, as a writer would; returns how many
    /// there were.
    #[cfg(test)]
    pub(crate) fn work_waiting(&self) -> usize {
        let batches = std::mem::take(&mut self.lock().batches);
        for batch in &batches {
            batch.work();
        }
        batches.len()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::tests::{direct_with, read_all, read_eventually};
    use crate::wire::{Frame, Queued};

    fn frame(i: usize) -> Frame {
        Frame::text(format!("to {i}"))
    }

    fn bytes(i: usize) -> Vec<u8> {
        Queued::frame(frame(i)).bytes.to_vec()
    }

    fn idle_outboxes(n: usize) -> (Vec<Arc<Outbox>>, Vec<std::os::unix::net::UnixStream>) {
        (0..n)
            .map(|i| {
                let (outbox, peer) = direct_with(16, 1 << 20);
                outbox.push(frame(i)).expect("room");
                (Arc::new(outbox), peer)
            })
            .unzip()
    }

    #[test]
    fn every_outbox_of_a_batch_is_written_once_whoever_takes_it() {
        let (outboxes, mut peers) = idle_outboxes(3 * CHUNK + 5);
        let batch = Arc::new(Batch::new(outboxes));
        let other = {
            let batch = Arc::clone(&batch);
            std::thread::spawn(move || batch.work())
        };
        batch.work();
        other.join().expect("worked");
        for (i, peer) in peers.iter_mut().enumerate() {
            assert_eq!(read_all(peer), bytes(i), "outbox {i}");
        }
    }

    /// Offered batches are written by the writers alone (not worked on here), every
    /// outbox once, by one writer or several, one batch after the other.
    #[test]
    fn writer_threads_write_the_batches_offered_to_them() {
        for count in [1, 3] {
            let writers = Writers::start(count).expect("writers started");
            for round in 0..3 {
                let (outboxes, mut peers) = idle_outboxes(4 * SHARE_MIN + 1);
                let batch = Arc::new(Batch::new(outboxes));
                assert!(writers.defer(&batch), "room for it");
                for (i, peer) in peers.iter_mut().enumerate() {
                    let case = format!("{count} writer(s), batch {round}, outbox {i}");
                    let got = read_eventually(peer, bytes(i).len(), &case);
                    assert_eq!(got, bytes(i), "{case}");
                }
                assert!(batch.is_taken());
            }
        }
    }
}
