//! A failure limiter that targets the attacker: it counts only invalid credentials, per client,
//! and once a client is over its limit, stops checking its guesses.
//!
//! Use: [`Lockout::judge`] with a closure that verifies the presented credential against the
//! tokens it is given (a bit set). A client under the limit may present any token; a locked-out
//! client (more than `max_failures` invalid credentials in its window) only the tokens already
//! seen valid from its address, so a correct guess made while locked gets 429 like a wrong one,
//! and guessing gains nothing until the window ends — while an operator whose token was used
//! from that address before still gets in. Requests that present no credential (health probes,
//! a browser's first request) are not passed here at all, so neither a flood of probes nor a
//! misconfigured scraper behind the same proxy can lock anyone out.
//!
//! Both tables are bounded: past `max_clients` the client whose window started first is
//! evicted (an attacker controlling that many addresses — IPv6: /64 prefixes — can thus reset
//! its own count; it still never gets past an invalid credential); past `max_clients` seen
//! addresses the one seen longest ago is forgotten, and an address is forgotten `seen_for`
//! after its last valid request.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::slots::client_key;
use crate::security::tokens::ANY;

/// Limits for [`Lockout`].
#[derive(Debug, Clone)]
pub(crate) struct LockoutLimits {
    /// Invalid credentials per client per window before it gets "locked out". `0` disables.
    /// Default 20.
    pub max_failures: u32,
    /// The counting window. Default 60 s.
    pub window: Duration,
    /// Clients tracked at once, in each table. Default 4096 (under 1 MB with the eviction
    /// queue).
    pub max_clients: usize,
    /// How long an address keeps the tokens seen valid from it after its last valid request.
    /// Default 24 h.
    pub seen_for: Duration,
}

impl Default for LockoutLimits {
    fn default() -> LockoutLimits {
        LockoutLimits {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_clients: 4096,
            seen_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// The tokens seen valid from one address.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Bit `i`: the `i`-th token.
    tokens: u64,
    last: Instant,
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

/// Counts invalid credentials per client IP (IPv6: per /64), and remembers which tokens each
/// address used validly.
#[derive(Debug)]
pub(crate) struct Lockout {
    limits: LockoutLimits,
    table: Mutex<Table>,
    seen: Mutex<HashMap<IpAddr, Seen>>,
}

impl Lockout {
    pub(crate) fn new(limits: LockoutLimits) -> Lockout {
        Lockout {
            limits,
            table: Mutex::new(Table::default()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_seen(&self) -> MutexGuard<'_, HashMap<IpAddr, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the credential `ip` presented with `verify`, which gets the tokens it may match
    /// (a bit set) and returns the one matched and its position. A match passes and marks the
    /// token seen from `ip`; no match counts one failure and says how to refuse it.
    pub(crate) fn judge<T>(
        &self,
        ip: IpAddr,
        verify: impl FnOnce(u64) -> Option<(T, usize)>,
    ) -> Result<T, Denied> {
        self.judge_at(ip, verify, Instant::now())
    }

    /// [`judge`](Self::judge) at a given time.
    pub(crate) fn judge_at<T>(
        &self,
        ip: IpAddr,
        verify: impl FnOnce(u64) -> Option<(T, usize)>,
        now: Instant,
    ) -> Result<T, Denied> {
        let key = client_key(ip);
        let allowed = if self.locked(key, now) {
            self.seen_tokens(key, now)
        } else {
            ANY
        };
        match verify(allowed) {
            Some((valid, i)) => {
                self.mark_seen(key, i, now);
                Ok(valid)
            }
            None => Err(self.fail(key, now)),
        }
    }

    /// Whether `key` is over its limit now.
    fn locked(&self, key: IpAddr, now: Instant) -> bool {
        if self.limits.max_failures == 0 {
            return false;
        }
        self.lock().clients.get(&key).is_some_and(|e| {
            now.saturating_duration_since(e.start) < self.limits.window
                && e.failures > self.limits.max_failures
        })
    }

    /// The tokens seen valid from `key` within `seen_for`.
    fn seen_tokens(&self, key: IpAddr, now: Instant) -> u64 {
        self.lock_seen()
            .get(&key)
            .filter(|s| now.saturating_duration_since(s.last) < self.limits.seen_for)
            .map_or(0, |s| s.tokens)
    }

    fn mark_seen(&self, key: IpAddr, token: usize, now: Instant) {
        let bit = 1u64.checked_shl(token as u32).unwrap_or(0);
        let mut seen = self.lock_seen();
        if let Some(s) = seen.get_mut(&key) {
            if now.saturating_duration_since(s.last) >= self.limits.seen_for {
                s.tokens = 0;
            }
            s.tokens |= bit;
            s.last = now;
            return;
        }
        let max = self.limits.max_clients.max(1);
        if seen.len() >= max {
            let seen_for = self.limits.seen_for;
            seen.retain(|_, s| now.saturating_duration_since(s.last) < seen_for);
            // Addresses are added by valid tokens only, so this scan is rare.
            while seen.len() >= max {
                let Some(oldest) = seen.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k) else {
                    break;
                };
                seen.remove(&oldest);
            }
        }
        seen.insert(
            key,
            Seen {
                tokens: bit,
                last: now,
            },
        );
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
    fn seen_len(&self) -> usize {
        self.lock_seen().len()
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

    /// A stand-in for the token check: `presented` is the position of the token the client
    /// holds (`None`: a wrong guess); it matches only if `allowed` has its bit.
    fn check(presented: Option<usize>) -> impl FnOnce(u64) -> Option<(usize, usize)> {
        move |allowed| presented.filter(|i| allowed >> i & 1 == 1).map(|i| (i, i))
    }

    fn judge(l: &Lockout, c: IpAddr, presented: Option<usize>) -> Result<usize, Denied> {
        l.judge(c, check(presented))
    }

    #[test]
    fn a_locked_client_gets_in_only_with_a_token_seen_from_it() {
        let l = Lockout::new(LockoutLimits::default());
        let attacker = ip("10.1.1.1");
        assert_eq!(
            judge(&l, attacker, Some(1)),
            Ok(1),
            "token 1 seen from here"
        );
        let mut locked = 0;
        for _ in 0..1000 {
            match judge(&l, attacker, None) {
                Err(Denied::LockedOut { .. }) => locked += 1,
                Err(Denied::Unauthorized) => {}
                Ok(_) => panic!("an invalid credential passed"),
            }
        }
        assert_eq!(locked, 1000 - 20, "the first 20 get 401, the rest 429");
        // A correct guess of a token never used from here is not even checked.
        assert!(matches!(
            judge(&l, attacker, Some(0)),
            Err(Denied::LockedOut { .. })
        ));
        // The token already used from here still passes, and the lock stays.
        assert_eq!(judge(&l, attacker, Some(1)), Ok(1));
        assert!(matches!(
            judge(&l, attacker, None),
            Err(Denied::LockedOut { .. })
        ));
        // Other clients are unaffected.
        assert_eq!(judge(&l, ip("10.1.1.2"), None), Err(Denied::Unauthorized));
        assert_eq!(judge(&l, ip("10.1.1.2"), Some(0)), Ok(0));
    }

    #[test]
    fn the_lock_ends_with_the_window_and_seen_tokens_expire() {
        let l = Lockout::new(LockoutLimits {
            max_failures: 2,
            seen_for: Duration::from_secs(3600),
            ..LockoutLimits::default()
        });
        let t0 = Instant::now();
        let c = ip("10.1.1.1");
        assert_eq!(l.judge_at(c, check(Some(2)), t0), Ok(2));
        for _ in 0..3 {
            let _ = l.judge_at(c, check(None), t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert!(matches!(
            l.judge_at(c, check(Some(0)), t1),
            Err(Denied::LockedOut { .. })
        ));
        assert_eq!(l.judge_at(c, check(Some(2)), t1), Ok(2));
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(l.judge_at(c, check(Some(0)), t2), Ok(0), "window over");
        // Locked again two hours later: the tokens seen then are forgotten.
        let t3 = t0 + Duration::from_secs(3 * 3600);
        for _ in 0..3 {
            let _ = l.judge_at(c, check(None), t3);
        }
        assert!(matches!(
            l.judge_at(c, check(Some(2)), t3),
            Err(Denied::LockedOut { .. })
        ));
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
            assert_eq!(l.judge_at(c, check(None), t0), Err(Denied::Unauthorized));
        }
        let later = t0 + Duration::from_secs(45);
        assert_eq!(
            l.judge_at(c, check(None), later),
            Err(Denied::LockedOut {
                retry_after: Duration::from_secs(15)
            })
        );
        let next = t0 + Duration::from_secs(61);
        assert_eq!(l.judge_at(c, check(None), next), Err(Denied::Unauthorized));
    }

    #[test]
    fn table_stays_bounded_and_evicts_oldest() {
        let l = Lockout::new(LockoutLimits::default());
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let client = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let now = t0 + Duration::from_millis(u64::from(i));
            let _ = l.judge_at(client, check(None), now);
            let _ = l.judge_at(client, check(Some(0)), now);
            assert!(l.tracked() <= 4096);
            assert!(l.seen_len() <= 4096);
            assert!(l.order_len() <= 2 * 4096 + 16);
        }
        assert_eq!(l.tracked(), 4096);
        assert_eq!(l.seen_len(), 4096);
        // The newest are kept, the oldest are gone.
        let newest = IpAddr::from((0x0a00_0000u32 + 99_999).to_be_bytes());
        assert!(l.lock_seen().contains_key(&newest));
        let table = l.lock();
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
            let _ = l.judge_at(
                ip("10.1.1.1"),
                check(None),
                t0 + Duration::from_secs(61 * i),
            );
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
        let _ = judge(&l, ip("2001:db8::1"), None);
        assert!(matches!(
            judge(&l, ip("2001:db8::ffff:2"), None),
            Err(Denied::LockedOut { .. })
        ));
        let off = Lockout::new(LockoutLimits {
            max_failures: 0,
            ..LockoutLimits::default()
        });
        for _ in 0..100 {
            assert_eq!(judge(&off, ip("10.1.1.1"), None), Err(Denied::Unauthorized));
        }
        assert_eq!(judge(&off, ip("10.1.1.1"), Some(3)), Ok(3));
        assert_eq!(off.tracked(), 0);
    }
}
