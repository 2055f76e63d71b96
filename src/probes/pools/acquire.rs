//! [`AcquireRecorder`]: acquire wait time, waiters and timeouts for pools that do not track them.

use super::{Bucket, Histogram, PoolSnapshot};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Upper bounds of the acquire-wait histogram buckets, in seconds.
const BOUNDS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Records how long acquires wait, how many are waiting now and how many timed out.
///
/// Get one from [`PoolRegistry::instrument`](super::PoolRegistry::instrument) under the pool's
/// name, then route acquires through [`time`](Self::time); the registry merges these numbers
/// into the pool's snapshot where the pool itself reports `None`. Cheap to clone; the cost per
/// acquire is a clock read and a few relaxed atomic adds. With the `pools-r2d2` feature it is also
/// an r2d2 `HandleEvent`, so `r2d2::Builder::event_handler` feeds it without wrapping `get()`.
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool, registry: prodbg::pools::PoolRegistry) -> Result<(), sqlx::Error> {
/// let acquires = registry.instrument("primary-db");
/// let conn = acquires
///     .time(pool.acquire(), |e| matches!(e, sqlx::Error::PoolTimedOut))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AcquireRecorder {
    shared: Arc<Shared>,
}

#[derive(Default)]
pub(super) struct Shared {
    /// Non-cumulative counts per bucket; the last slot counts waits above the last bound.
    buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
    timeouts: AtomicU64,
    waiting: AtomicU64,
    /// Set by the first [`AcquireRecorder::time`]: only then is `waiting` known.
    timed: AtomicBool,
}

/// Decrements `waiting` when an acquire finishes or is cancelled.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl AcquireRecorder {
    pub(super) fn new() -> Self {
        Self {
            shared: Arc::default(),
        }
    }

    pub(super) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(super) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    /// Awaits `acquire`, counting it as waiting meanwhile, and records its wait time.
    ///
    /// Every completed acquire, `Ok` or `Err`, is one observation in the histogram; an `Err` for
    /// which `is_timeout` says `true` also counts as a timeout. A cancelled acquire (the future
    /// dropped) leaves the waiting count and records nothing.
    pub async fn time<T, E>(
        &self,
        acquire: impl Future<Output = Result<T, E>>,
        is_timeout: impl FnOnce(&E) -> bool,
    ) -> Result<T, E> {
        self.shared.timed.store(true, Relaxed);
        self.shared.waiting.fetch_add(1, Relaxed);
        let _waiting = Waiting(&self.shared.waiting);
        let started = Instant::now();
        let result = acquire.await;
        self.observe(started.elapsed());
        if let Err(error) = &result {
            if is_timeout(error) {
                self.record_timeout();
            }
        }
        result
    }

    /// Records one acquire that waited `wait` (for callers that time acquires themselves).
    pub fn observe(&self, wait: Duration) {
        let seconds = wait.as_secs_f64();
        let slot = BOUNDS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.shared.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.shared.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Counts one acquire that gave up on its timeout (for callers that time acquires themselves).
    pub fn record_timeout(&self) {
        self.shared.timeouts.fetch_add(1, Relaxed);
    }

    /// What this recorder saw: `acquire_timeouts_total` and `acquire_wait`, plus `waiting` once
    /// [`time`](Self::time) has been used (acquires timed elsewhere cannot be seen waiting).
    /// Every other field is `None`.
    pub fn snapshot(&self) -> PoolSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS_SECONDS.len());
        for (slot, le_seconds) in self.shared.buckets.iter().zip(BOUNDS_SECONDS) {
            cumulative += slot.load(Relaxed);
            buckets.push(Bucket {
                le_seconds,
                count: cumulative,
            });
        }
        let above = self.shared.buckets[BOUNDS_SECONDS.len()].load(Relaxed);
        PoolSnapshot {
            waiting: (self.shared.timed.load(Relaxed)).then(|| self.shared.waiting.load(Relaxed)),
            acquire_timeouts_total: Some(self.shared.timeouts.load(Relaxed)),
            acquire_wait: Some(Histogram {
                buckets,
                count: cumulative + above,
                sum_seconds: self.shared.sum_micros.load(Relaxed) as f64 / 1e6,
            }),
            ..PoolSnapshot::default()
        }
    }
}

impl std::fmt::Debug for AcquireRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireRecorder")
            .field("waiting", &self.shared.waiting.load(Relaxed))
            .field("timeouts", &self.shared.timeouts.load(Relaxed))
            .finish()
    }
}
