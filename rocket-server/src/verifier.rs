//! The argon2 verification queue: a few verifications run at once, server-wide, and the
//! clients waiting for a turn are served fairly across peer addresses.
//!
//! Each address has a FIFO queue of its waiting verifications, at most
//! [`MAX_WAITING_PER_ADDRESS`] long; when a verification ends, its place goes to the next
//! address in round-robin order, not to whoever asked first. An address that floods the
//! server with PHC logins therefore waits behind itself: a login from another address
//! waits for at most one turn per address with waiters, whatever the flood's size. An
//! attempt over its address's share is not queued at all: it fails at once, as a wrong
//! secret does (and counts towards `MaxFailedAuth`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How many argon2 verifications may run at once, server-wide. Each one takes tens of
/// milliseconds and (with the default parameters) 19 MiB, so this bounds what a flood of
/// authentication attempts can cost.
pub(crate) const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// How many verifications from one address may wait for a turn. More fail at once.
pub(crate) const MAX_WAITING_PER_ADDRESS: usize = 4;

/// Hands out the places among the verifications that may run at once (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct Verifier {
    max_running: usize,
    max_waiting_per_address: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Places taken, by running verifications and by waiters handed a place that they
    /// have not picked up yet.
    running: usize,
    /// The waiters of each address with any, oldest first.
    waiting: HashMap<IpAddr, VecDeque<Waiter>>,
    /// Addresses with waiters, in the order they get their next turn.
    turns: VecDeque<IpAddr>,
    /// Numbers waiters, so that one that gives up can find itself in its queue.
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    /// Receives the place when it is this waiter's turn.
    wake: async_channel::Sender<()>,
}

/// A place among the running verifications; dropping it passes the place on.
#[derive(Debug)]
pub(crate) struct Slot<'a>(&'a Verifier);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release(&mut self.0.lock());
    }
}

/// What [`Verifier::claim`] decided.
enum Claim<'a> {
    /// A place, or `None`: refused.
    Now(Option<Slot<'a>>),
    /// Queued.
    Wait(Waiting<'a>),
}

/// A waiter's claim on its queue entry: if the wait is abandoned (its connection closed),
/// the entry is removed, or a place already handed to it is passed on.
struct Waiting<'a> {
    verifier: &'a Verifier,
    ip: IpAddr,
    id: u64,
    place: async_channel::Receiver<()>,
    taken: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        // Under the lock, as `release` hands places out under it: either the place was
        // handed over before (and is passed on here), or the entry is removed first.
        let mut inner = self.verifier.lock();
        if self.place.try_recv().is_ok() {
            self.verifier.release(&mut inner);
        } else if let Some(queue) = inner.waiting.get_mut(&self.ip) {
            queue.retain(|w| w.id != self.id);
            if queue.is_empty() {
                inner.waiting.remove(&self.ip);
                inner.turns.retain(|ip| *ip != self.ip);
            }
        }
    }
}

impl Verifier {
    /// A queue running at most `max_running` verifications at once and letting at most
    /// `max_waiting_per_address` wait per address.
    pub(crate) fn new(max_running: usize, max_waiting_per_address: usize) -> Self {
        Self {
            max_running,
            max_waiting_per_address,
            inner: Mutex::default(),
        }
    }

    /// Waits for a place for a verification asked for by `ip`. Resolves to `None` at once
    /// when `ip` already has its share of waiters.
    pub(crate) fn slot(&self, ip: IpAddr) -> impl Future<Output = Option<Slot<'_>>> + Send {
        let claim = self.claim(ip);
        async move {
            match claim {
                Claim::Now(slot) => slot,
                Claim::Wait(mut waiting) => match waiting.place.recv().await {
                    Ok(()) => {
                        waiting.taken = true;
                        Some(Slot(self))
                    }
                    // The sender stays in the queue until it hands the place over: a
                    // closed channel cannot happen, and would hold no place.
                    Err(_) => None,
                },
            }
        }
    }

    /// A place now, a refusal now, or a place in `ip`'s queue.
    fn claim(&self, ip: IpAddr) -> Claim<'_> {
        let mut inner = self.lock();
        if inner.running < self.max_running && inner.turns.is_empty() {
            inner.running += 1;
            return Claim::Now(Some(Slot(self)));
        }
        let waiting = inner.waiting.get(&ip).map_or(0, VecDeque::len);
        if waiting >= self.max_waiting_per_address {
            return Claim::Now(None);
        }
        let (wake, place) = async_channel::bounded(1);
        let id = inner.next_id;
        inner.next_id += 1;
        inner
            .waiting
            .entry(ip)
            .or_default()
            .push_back(Waiter { id, wake });
        if waiting == 0 {
            inner.turns.push_back(ip);
        }
        Claim::Wait(Waiting {
            verifier: self,
            ip,
            id,
            place,
            taken: false,
        })
    }

    /// Passes a place on to the next address's oldest waiter, or frees it.
    fn release(&self, inner: &mut Inner) {
        while let Some(ip) = inner.turns.pop_front() {
            // Every address in `turns` has a non-empty queue.
            let queue = inner.waiting.get_mut(&ip).expect("a queue for each turn");
            let waiter = queue.pop_front().expect("a waiter in each queue");
            if queue.is_empty() {
                inner.waiting.remove(&ip);
            } else {
                inner.turns.push_back(ip);
            }
            if waiter.wake.try_send(()).is_ok() {
                return; // the place stays taken, by the waiter now
            }
        }
        inner.running -= 1;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is made whole under the lock, so a panic elsewhere leaves it sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn waiting(&self, ip: IpAddr) -> usize {
        self.lock().waiting.get(&ip).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn places_go_round_robin_across_addresses_and_floods_fail_fast() {
        let v = Verifier::new(1, 3);
        let Poll::Ready(Some(running)) = poll(pin!(v.slot(A))) else {
            panic!("a free place is taken at once")
        };
        let mut a1 = pin!(v.slot(A));
        let mut a2 = pin!(v.slot(A));
        let mut a3 = pin!(v.slot(A));
        assert!(poll(a1.as_mut()).is_pending());
        assert!(poll(a2.as_mut()).is_pending());
        assert!(poll(a3.as_mut()).is_pending());
        assert!(
            matches!(poll(pin!(v.slot(A))), Poll::Ready(None)),
            "over the address's share: refused at once"
        );
        let mut b1 = pin!(v.slot(B));
        assert!(
            poll(b1.as_mut()).is_pending(),
            "B waits, but is not refused"
        );
        drop(running);
        let Poll::Ready(Some(first)) = poll(a1.as_mut()) else {
            panic!("A asked first")
        };
        assert!(poll(a2.as_mut()).is_pending());
        assert!(poll(b1.as_mut()).is_pending());
        drop(first);
        let Poll::Ready(Some(second)) = poll(b1.as_mut()) else {
            panic!("then B's turn, ahead of A's older waiters")
        };
        assert!(poll(a2.as_mut()).is_pending());
        drop(second);
        assert!(matches!(poll(a2.as_mut()), Poll::Ready(Some(_))));
    }

    #[test]
    fn an_abandoned_wait_gives_its_place_on() {
        let v = Verifier::new(1, 4);
        let Poll::Ready(Some(running)) = poll(pin!(v.slot(A))) else {
            panic!("a free place")
        };
        {
            let mut gone = Box::pin(v.slot(A));
            assert!(poll(gone.as_mut()).is_pending());
            assert_eq!(v.waiting(A), 1);
        }
        assert_eq!(v.waiting(A), 0, "an abandoned wait leaves the queue");
        let mut handed = Box::pin(v.slot(A));
        assert!(poll(handed.as_mut()).is_pending());
        let mut next = pin!(v.slot(B));
        assert!(poll(next.as_mut()).is_pending());
        drop(running); // handed to `handed`, which gives up before picking it up
        drop(handed);
        let Poll::Ready(Some(slot)) = poll(next.as_mut()) else {
            panic!("the place went on to the next waiter")
        };
        assert_eq!(v.lock().running, 1);
        drop(slot);
        assert_eq!(v.lock().running, 0);
    }

    #[test]
    fn places_are_freed_when_nobody_waits() {
        let v = Verifier::new(2, 4);
        let slots: Vec<_> = (0..2)
            .map(|_| match poll(pin!(v.slot(A))) {
                Poll::Ready(Some(s)) => s,
                _ => panic!("free places"),
            })
            .collect();
        drop(slots);
        assert_eq!(v.lock().running, 0);
        assert!(v.lock().waiting.is_empty() && v.lock().turns.is_empty());
    }
}
