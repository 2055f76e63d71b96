//! A failure limiter that targets the attacker: it counts only invalid credentials, per client,
//! and is consulted only after the credential was verified, so a valid one is never refused.
//!
//! Use: verify the presented credential first, then pass the result to [`Lockout::judge`].
//! A valid credential passes without touching the table. Requests that present no credential
//! (health probes, a browser's first request) are not passed here at all, so neither a flood of
//! probes nor a misconfigured scraper behind the same proxy can lock anyone out.
//!
//! The table is bounded: past `max_clients` the client whose window started first is evicted.
//! An attacker controlling that many addresses (IPv6: /64 prefixes) can thus reset its own
//! count; it still never gets past an invalid credential.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::slots::client_key;

/// Limits for [`Lockout`].
#[derive(Debug, Clone)]
pub(crate) struct LockoutLimits {
    /// Invalid credentials per client per window before it gets "locked out". `0` disables.
    /// Default 20.
    pub max_failures: u32,
    /// The counting window. Default 60 s.
    pub window: Duration,
    /// Clients tracked at once. Default 4096 (under 1 MB with the eviction queue).
    pub max_clients: usize,
}

impl Default for LockoutLimits {
    fn default() -> LockoutLimits {
        LockoutLimits {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_clients: 4096,
        }
    }
}

/// Why a request with an invalid credential is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Answer 401.
    Unauthorized,
    /// Answer 429 with `Retry-After`: this client sent too many invalid credentials.
    LockedOut { retry_after: Duration },
}

#[derive(Debug)]
struct Entry {
    start: Instant,
    failures: u32,
    generation: u64,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<IpAddr, Entry>,
    /// Window starts in order; an item is stale once its client's generation moved on.
    order: VecDeque<(IpAddr, u64)>,
    next_generation: u64,
}

/// Counts invalid credentials per client IP (IPv6: per /64).
#[derive(Debug)]
pub(crate) struct Lockout {
    limits: LockoutLimits,
    table: Mutex<Table>,
}

impl Lockout {
    pub(crate) fn new(limits: LockoutLimits) -> Lockout {
        Lockout {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `verified` is the outcome of checking the credential `ip` presented: `Some` passes
    /// untouched; `None` counts one failure and says how to refuse it.
    pub(crate) fn judge<T>(&self, ip: IpAddr, verified: Option<T>) -> Result<T, Denied> {
        self.judge_at(ip, verified, Instant::now())
    }

    /// [`judge`](Self::judge) at a given time.
    pub(crate) fn judge_at<T>(
        &self,
        ip: IpAddr,
        verified: Option<T>,
        now: Instant,
    ) -> Result<T, Denied> {
        match verified {
            Some(valid) => Ok(valid),
            None => Err(self.fail(client_key(ip), now)),
        }
    }

    fn fail(&self, key: IpAddr, now: Instant) -> Denied {
        if self.limits.max_failures == 0 {
            return Denied::Unauthorized;
        }
        let window = self.limits.window;
        let mut guard = self.lock();
        let table = &mut *guard;
        let (start, failures) = match table.clients.get_mut(&key) {
            Some(e) if now.saturating_duration_since(e.start) < window => {
                e.failures = e.failures.saturating_add(1);
                (e.start, e.failures)
            }
            _ => {
                let generation = table.next_generation;
                table.next_generation += 1;
                let entry = Entry {
                    start: now,
                    failures: 1,
                    generation,
                };
                table.clients.insert(key, entry);
                table.order.push_back((key, generation));
                table.evict(self.limits.max_clients);
                (now, 1)
            }
        };
        if failures > self.limits.max_failures {
            Denied::LockedOut {
                retry_after: window.saturating_sub(now.saturating_duration_since(start)),
            }
        } else {
            Denied::Unauthorized
        }
    }

    #[cfg(test)]
    /// Clients tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.lock().clients.len()
    }

    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.lock().order.len()
    }
}

impl Table {
    fn is_current(&self, (key, generation): &(IpAddr, u64)) -> bool {
        self.clients
            .get(key)
            .is_some_and(|e| e.generation == *generation)
    }

    /// Evicts the oldest windows down to `max` clients (keeping the newest one) and drops
    /// stale order items, so both collections stay within about `2 * max`.
    fn evict(&mut self, max: usize) {
        while self.clients.len() > max.max(1) {
            match self.order.pop_front() {
                Some(item) if self.is_current(&item) => {
                    self.clients.remove(&item.0);
                }
                Some(_) => {}
                None => break,
            }
        }
        if self.order.len() > 2 * max + 16 {
            let order = std::mem::take(&mut self.order);
            self.order = order.into_iter().filter(|i| self.is_current(i)).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_credential_is_never_refused() {
        let l = Lockout::new(LockoutLimits::default());
        let attacker = ip("10.1.1.1");
        let mut locked = 0;
        for _ in 0..1000 {
            match l.judge::<()>(attacker, None) {
                Err(Denied::LockedOut { .. }) => locked += 1,
                Err(Denied::Unauthorized) => {}
                Ok(()) => panic!("an invalid credential passed"),
            }
        }
        assert_eq!(locked, 1000 - 20, "the first 20 get 401, the rest 429");
        assert_eq!(l.judge(attacker, Some("ops")), Ok("ops"));
        assert!(matches!(
            l.judge::<()>(attacker, None),
            Err(Denied::LockedOut { .. })
        ));
        // Other clients are unaffected.
        assert_eq!(
            l.judge::<()>(ip("10.1.1.2"), None),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn window_expires_and_retry_after_counts_down() {
        let l = Lockout::new(LockoutLimits {
            max_failures: 2,
            ..LockoutLimits::default()
        });
        let t0 = Instant::now();
        let c = ip("10.1.1.1");
        for _ in 0..2 {
            assert_eq!(l.judge_at::<()>(c, None, t0), Err(Denied::Unauthorized));
        }
        let later = t0 + Duration::from_secs(45);
        assert_eq!(
            l.judge_at::<()>(c, None, later),
            Err(Denied::LockedOut {
                retry_after: Duration::from_secs(15)
            })
        );
        let next = t0 + Duration::from_secs(61);
        assert_eq!(l.judge_at::<()>(c, None, next), Err(Denied::Unauthorized));
    }

    #[test]
    fn table_stays_bounded_and_evicts_oldest() {
        let l = Lockout::new(LockoutLimits::default());
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let client = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let now = t0 + Duration::from_millis(u64::from(i));
            let _ = l.judge_at::<()>(client, None, now);
            assert!(l.tracked() <= 4096);
            assert!(l.order_len() <= 2 * 4096 + 16);
        }
        assert_eq!(l.tracked(), 4096);
        // The newest are kept, the oldest are gone.
        let table = l.lock();
        let newest = IpAddr::from((0x0a00_0000u32 + 99_999).to_be_bytes());
        assert!(table.clients.contains_key(&newest));
        assert!(!table.clients.contains_key(&ip("10.0.0.0")));
    }

    #[test]
    fn one_client_renewing_its_window_does_not_grow_the_order() {
        let l = Lockout::new(LockoutLimits {
            max_clients: 8,
            ..LockoutLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let _ = l.judge_at::<()>(ip("10.1.1.1"), None, t0 + Duration::from_secs(61 * i));
        }
        assert_eq!(l.tracked(), 1);
        assert!(l.order_len() <= 2 * 8 + 16);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_zero_disables() {
        let l = Lockout::new(LockoutLimits {
            max_failures: 1,
            ..LockoutLimits::default()
        });
        let _ = l.judge::<()>(ip("2001:db8::1"), None);
        assert!(matches!(
            l.judge::<()>(ip("2001:db8::ffff:2"), None),
            Err(Denied::LockedOut { .. })
        ));
        let off = Lockout::new(LockoutLimits {
            max_failures: 0,
            ..LockoutLimits::default()
        });
        for _ in 0..100 {
            assert_eq!(
                off.judge::<()>(ip("10.1.1.1"), None),
                Err(Denied::Unauthorized)
            );
        }
        assert_eq!(off.tracked(), 0);
    }
}
