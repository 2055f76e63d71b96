//! The failed-login limiter: counts failed authentications per client IP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failed authentications per client IP and refuses a client that failed too often.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    limit: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// The window over which failures are counted.
    pub(crate) const WINDOW: Duration = Duration::from_secs(60);
    const MAX_CLIENTS: usize = 4096;

    /// Refuses a client after `limit` failures within [`Self::WINDOW`]. `0` disables the limit.
    pub(crate) fn new(limit: u32) -> FailureLimiter {
        FailureLimiter {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` has used up its failures in the current window.
    pub(crate) fn is_blocked(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return false;
        }
        let map = self.lock();
        map.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < Self::WINDOW && *n >= self.limit)
    }

    /// Counts one failure for `ip`.
    pub(crate) fn record(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut map = self.lock();
        if map.len() >= Self::MAX_CLIENTS {
            map.retain(|_, (start, _)| start.elapsed() < Self::WINDOW);
        }
        if map.len() >= Self::MAX_CLIENTS {
            return; // bounded memory wins over counting one more client
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Self::WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}
