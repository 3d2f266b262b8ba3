//! The connection gate: counting live connections against `MaxConnections` and
//! `MaxConnectionsPerIp`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts live WebSocket connections, in total and per client address.
#[derive(Debug)]
pub(crate) struct Gate {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why [`Gate::try_admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `MaxConnections` is reached.
    Total,
    /// `MaxConnectionsPerIp` is reached for this address.
    PerIp,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    /// A gate with these limits (0 = no limit).
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    /// Takes a place for a connection from `ip`, if one is free.
    pub(crate) fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Full> {
        let mut counts = self.lock();
        if self.max_total != 0 && counts.total >= self.max_total {
            return Err(Full::Total);
        }
        if self.max_per_ip != 0 {
            let n = counts.per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                return Err(Full::PerIp);
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(Permit {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Live connections.
    pub(crate) fn active(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit {
    /// The address the place was taken for.
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total -= 1;
        if self.gate.max_per_ip != 0 {
            if let Some(n) = counts.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip_and_frees_on_drop() {
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let gate = Gate::new(3, 2);
        let p1 = gate.try_admit(a).unwrap();
        let _p2 = gate.try_admit(a).unwrap();
        assert_eq!(gate.try_admit(a).unwrap_err(), Full::PerIp);
        let _p3 = gate.try_admit(b).unwrap();
        assert_eq!(gate.try_admit(b).unwrap_err(), Full::Total);
        drop(p1);
        assert_eq!(gate.active(), 2);
        let _p4 = gate.try_admit(a).unwrap();
        let unlimited = Gate::new(0, 0);
        let many: Vec<_> = (0..100).map(|_| unlimited.try_admit(a).unwrap()).collect();
        assert_eq!(unlimited.active(), 100);
        drop(many);
        assert_eq!(unlimited.active(), 0);
        assert!(unlimited.lock().per_ip.is_empty());
    }
}
