//! Admission of connections that have not proved anything yet: WebRTC offers before ICE/DTLS,
//! RTMP connections before handshake and `connect`. Each such connection holds a [`Pending`]
//! guard; [`Admission`] bounds how many are pending per client address and in all, and how
//! fast one address may start new ones (a token bucket). Sans-IO: the caller passes the time.
//!
//! IPv6 clients are counted per /64, the block one subscriber usually gets, so that a host
//! cannot escape its limit by rotating addresses inside its own prefix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Limits of one kind of pending connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Pending connections from one address (IPv6: one /64) at once.
    pub per_address: usize,
    /// Pending connections in all.
    pub total: usize,
    /// New connections per second one address may start, sustained; 0: no rate limit.
    pub rate_per_sec: f64,
    /// New connections one address may start at once before the rate applies.
    pub burst: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address has too many pending connections.
    #[error("too many connections from your address are still being set up (limit {0}); try again in a few seconds")]
    PerAddress(usize),
    /// The address starts connections too fast.
    #[error("too many new connections from your address; try again in a second")]
    Rate,
    /// The server has too many pending connections in all.
    #[error("the server is busy setting up other connections; try again in a few seconds")]
    Total(usize),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AdmissionCounters {
    /// Connections admitted.
    pub admitted: AtomicU64,
    /// Refused: per-address pending limit.
    pub refused_per_address: AtomicU64,
    /// Refused: per-address rate.
    pub refused_rate: AtomicU64,
    /// Refused: global pending limit.
    pub refused_total: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    pending: usize,
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug, Default)]
struct State {
    by_address: HashMap<IpAddr, Entry>,
    total: usize,
    last_sweep: Option<Instant>,
}

/// Shared admission state of one kind of connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Limits,
    state: Arc<Mutex<State>>,
    counters: Arc<AdmissionCounters>,
}

/// Held while a connection is pending; dropping it frees its place.
#[derive(Debug)]
pub struct Pending {
    state: Arc<Mutex<State>>,
    address: IpAddr,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address limits are counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4).
pub fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    /// Admission with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> &AdmissionCounters {
        &self.counters
    }

    /// Connections pending now.
    pub fn pending(&self) -> usize {
        lock(&self.state).total
    }

    /// Addresses with state kept (pending connections or a bucket still refilling).
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        lock(&self.state).by_address.len()
    }

    /// Admits a new pending connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Pending, Refusal> {
        let l = self.limits;
        let address = client_block(ip);
        let mut st = lock(&self.state);
        self.sweep(&mut st, now);
        let total = st.total;
        let burst = f64::from(l.burst.max(1));
        let entry = st.by_address.entry(address).or_insert(Entry {
            pending: 0,
            tokens: burst,
            refilled: now,
        });
        if l.rate_per_sec > 0.0 {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * l.rate_per_sec).min(burst);
            entry.refilled = now;
        }
        let refusal = if entry.pending >= l.per_address {
            Some(Refusal::PerAddress(l.per_address))
        } else if l.rate_per_sec > 0.0 && entry.tokens < 1.0 {
            Some(Refusal::Rate)
        } else if total >= l.total {
            Some(Refusal::Total(l.total))
        } else {
            None
        };
        if let Some(r) = refusal {
            let c = match r {
                Refusal::PerAddress(_) => &self.counters.refused_per_address,
                Refusal::Rate => &self.counters.refused_rate,
                Refusal::Total(_) => &self.counters.refused_total,
            };
            c.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        if l.rate_per_sec > 0.0 {
            entry.tokens -= 1.0;
        }
        entry.pending += 1;
        st.total += 1;
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Pending {
            state: self.state.clone(),
            address,
        })
    }

    /// Forgets addresses with nothing pending whose bucket is full again (at most once a
    /// second), so the map holds only addresses active in the last `burst / rate` seconds.
    fn sweep(&self, st: &mut State, now: Instant) {
        if st
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_sweep = Some(now);
        let l = self.limits;
        let burst = f64::from(l.burst.max(1));
        st.by_address.retain(|_, e| {
            let refilled =
                l.rate_per_sec <= 0.0 || e.tokens + now.saturating_duration_since(e.refilled).as_secs_f64() * l.rate_per_sec >= burst;
            e.pending > 0 || !refilled
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.total = st.total.saturating_sub(1);
        if let Some(e) = st.by_address.get_mut(&self.address) {
            e.pending = e.pending.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LIMITS: Limits = Limits {
        per_address: 3,
        total: 5,
        rate_per_sec: 2.0,
        burst: 4,
    };

    #[test]
    fn per_address_limit_frees_on_drop() {
        let a = Admission::new(Limits {
            rate_per_sec: 0.0,
            ..LIMITS
        });
        let t = Instant::now();
        let held: Vec<Pending> = (0..3).map(|_| a.admit(ip("10.0.0.1"), t).unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.1"), t).unwrap_err(), Refusal::PerAddress(3));
        // Another address is not affected.
        let other = a.admit(ip("10.0.0.2"), t).unwrap();
        assert_eq!(a.pending(), 4);
        drop(held);
        assert_eq!(a.pending(), 1);
        let again = a.admit(ip("10.0.0.1"), t).unwrap();
        drop((other, again));
        assert_eq!(a.pending(), 0);
        assert_eq!(a.counters().refused_per_address.load(Ordering::Relaxed), 1);
        assert_eq!(a.counters().admitted.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn global_limit_applies_across_addresses() {
        let a = Admission::new(Limits {
            rate_per_sec: 0.0,
            ..LIMITS
        });
        let t = Instant::now();
        let held: Vec<Pending> = (1..=5).map(|i| a.admit(ip(&format!("10.0.0.{i}")), t).unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.9"), t).unwrap_err(), Refusal::Total(5));
        assert_eq!(a.counters().refused_total.load(Ordering::Relaxed), 1);
        drop(held);
        assert!(a.admit(ip("10.0.0.9"), t).is_ok());
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let a = Admission::new(Limits {
            per_address: 100,
            total: 100,
            ..LIMITS
        });
        let t = Instant::now();
        // A burst of 4, then refused; each admitted connection completes at once.
        for _ in 0..4 {
            drop(a.admit(ip("10.0.0.1"), t).unwrap());
        }
        assert_eq!(a.admit(ip("10.0.0.1"), t).unwrap_err(), Refusal::Rate);
        assert_eq!(a.admit(ip("10.0.0.1"), t + Duration::from_millis(400)).unwrap_err(), Refusal::Rate);
        // 2 per second: one more token after 500 ms.
        drop(a.admit(ip("10.0.0.1"), t + Duration::from_millis(500)).unwrap());
        assert_eq!(a.admit(ip("10.0.0.1"), t + Duration::from_millis(600)).unwrap_err(), Refusal::Rate);
        // Refused attempts cost nothing: after 2 s the bucket is full again.
        for _ in 0..4 {
            drop(a.admit(ip("10.0.0.1"), t + Duration::from_secs(3)).unwrap());
        }
        assert_eq!(a.counters().refused_rate.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_flood_from_one_address_gets_at_most_its_share() {
        let a = Admission::new(Limits {
            per_address: 10,
            total: 200,
            rate_per_sec: 5.0,
            burst: 20,
        });
        let t = Instant::now();
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..500u64 {
            match a.admit(ip("192.0.2.7"), t + Duration::from_micros(i * 2200)) {
                Ok(p) => held.push(p),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(held.len(), 10);
        assert_eq!(refused, 490);
        assert!(a.admit(ip("192.0.2.8"), t).is_ok(), "another client still gets in");
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(client_block(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_block(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let a = Admission::new(Limits {
            rate_per_sec: 0.0,
            ..LIMITS
        });
        let t = Instant::now();
        let _h: Vec<Pending> = (1..=3).map(|i| a.admit(ip(&format!("2001:db8:1:2::{i}")), t).unwrap()).collect();
        assert_eq!(a.admit(ip("2001:db8:1:2:ffff::9"), t).unwrap_err(), Refusal::PerAddress(3));
        assert!(a.admit(ip("2001:db8:1:3::1"), t).is_ok());
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let a = Admission::new(LIMITS);
        let t = Instant::now();
        for i in 0..1000 {
            drop(
                a.admit(ip(&format!("10.1.{}.{}", i / 250, i % 250)), t)
                    .unwrap_or_else(|e| panic!("{i}: {e}")),
            );
        }
        assert_eq!(a.tracked_addresses(), 1000);
        // Buckets are full again after burst / rate = 2 s; the next admission sweeps.
        let _p = a.admit(ip("10.9.9.9"), t + Duration::from_secs(3)).unwrap();
        assert_eq!(a.tracked_addresses(), 1, "only the address with a pending connection is kept");
    }
}
