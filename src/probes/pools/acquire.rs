//! [`AcquireRecorder`]: acquire wait time, waiters and timeouts for pools that do not track them.

use super::{Bucket, Histogram, PoolSnapshot};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use super::holders::{Claim, HolderTable};
use crate::layer::clock;

/// The leak threshold of a new recorder: a connection held longer is reported.
pub const DEFAULT_LEAK_AFTER: Duration = Duration::from_secs(60);

/// Upper bounds of the acquire-wait histogram buckets, in seconds.
const BOUNDS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One pool's acquires: how long they wait, how many wait now and time out, and — through
/// [`acquire`](Self::acquire) — who holds each connection checked out.
///
/// Get one from [`PoolRegistry::acquires`](super::PoolRegistry::acquires) under the pool's
/// name, next to the pool; the registry merges its numbers into the pool's snapshot where the
/// pool itself reports `None`, and shows its holders in `/debug/pools`. Cheap to clone (copies
/// share one record). Route the acquires through it:
///
/// - [`acquire`](Self::acquire) (sqlx, deadpool, bb8, or any [`Checkout`](super::Checkout)
///   pool) / [`get`](Self::get) (r2d2): times the wait and names the holder until the
///   returned [`Held`](super::Held) drops;
/// - [`time`](Self::time): times the wait only.
///
/// With the `pools-r2d2` feature it is also an r2d2 `HandleEvent`, so
/// `r2d2::Builder::event_handler` feeds it wait times and timeouts without wrapping `get()`.
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool, registry: prodbg::pools::PoolRegistry) -> Result<(), sqlx::Error> {
/// let acquires = registry.acquires("primary-db");
/// let conn = acquires.acquire(&pool).await?; // was: pool.acquire().await?
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AcquireRecorder {
    pub(super) shared: Arc<Shared>,
}

/// What every copy of one pool's recorder shares.
pub(crate) struct Shared {
    /// The pool's name in the registry.
    pub(super) name: String,
    /// Non-cumulative counts per bucket; the last slot counts waits above the last bound.
    buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
    timeouts: AtomicU64,
    waiting: AtomicU64,
    /// Set by the first timed acquire: only then is `waiting` known.
    timed: AtomicBool,
    /// Who holds the connections checked out through the recorder; made at the first hold,
    /// sized to the pool's maximum then.
    holders: OnceLock<HolderTable>,
    /// Leak threshold in milliseconds; 0 = off.
    leak_after_ms: AtomicU64,
    /// Timeouts not yet reported by a timeout warning.
    pub(super) unreported_timeouts: AtomicU64,
    /// Clock reading of the last timeout warning (0: none yet).
    pub(super) last_timeout_warning: AtomicU64,
}

/// Decrements `waiting` when an acquire finishes or is cancelled.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Shared {
    fn new(name: String) -> Shared {
        // Acquires are timed with the layer's clock (the CPU's time-stamp counter where the
        // kernel trusts it): two reads per acquire cost ~20 ns instead of ~60.
        clock::init();
        Shared {
            name,
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            timed: AtomicBool::new(false),
            holders: OnceLock::new(),
            leak_after_ms: AtomicU64::new(DEFAULT_LEAK_AFTER.as_millis() as u64),
            unreported_timeouts: AtomicU64::new(0),
            last_timeout_warning: AtomicU64::new(0),
        }
    }

    /// Counts one acquire as waiting from now (the clock reading it returns).
    pub(super) fn start_wait(&self) -> u64 {
        if !self.timed.load(Relaxed) {
            self.timed.store(true, Relaxed);
        }
        self.waiting.fetch_add(1, Relaxed);
        clock::now()
    }

    /// An acquire stopped waiting (done or cancelled).
    pub(super) fn stop_waiting(&self) {
        self.waiting.fetch_sub(1, Relaxed);
    }

    /// Records a finished acquire's wait, and a timeout if it was one. (Blocking acquires
    /// count their own end of waiting here; async ones through their drop guard.)
    pub(super) fn end_wait(&self, started: u64, now: u64, timed_out: bool) {
        self.observe(Duration::from_nanos(clock::to_nanos(
            now.saturating_sub(started),
        )));
        if timed_out {
            self.timeouts.fetch_add(1, Relaxed);
            self.unreported_timeouts.fetch_add(1, Relaxed);
        }
    }

    fn observe(&self, wait: Duration) {
        let seconds = wait.as_secs_f64();
        let slot = BOUNDS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// The holder table, made on first use for a pool of `max()` connections.
    pub(super) fn holders(&self, max: impl FnOnce() -> usize) -> &HolderTable {
        self.holders.get_or_init(|| HolderTable::new(max()))
    }

    /// The holder table, if any acquire went through the recorder.
    pub(super) fn holder_table(&self) -> Option<&HolderTable> {
        self.holders.get()
    }

    /// The leak threshold; `None` = off.
    pub(super) fn leak_after(&self) -> Option<Duration> {
        match self.leak_after_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// A held connection came back. For a hold that had been reported as a leak, its site and
    /// since when it was held (clock ticks), for the "returned" event.
    pub(super) fn release(
        &self,
        claim: Option<Claim>,
    ) -> Option<(&'static std::panic::Location<'static>, u64)> {
        let table = self.holders.get()?;
        match claim {
            None => {
                table.release_untracked();
                None
            }
            Some(claim) => table.release(claim),
        }
    }
}

impl AcquireRecorder {
    pub(super) fn new(name: String) -> Self {
        Self {
            shared: Arc::new(Shared::new(name)),
        }
    }

    pub(super) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(super) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    /// The pool's name in its registry.
    pub fn pool_name(&self) -> &str {
        &self.shared.name
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
        let started = self.shared.start_wait();
        let _waiting = Waiting(&self.shared.waiting);
        let result = acquire.await;
        self.shared.end_wait(
            started,
            clock::now(),
            result.as_ref().err().is_some_and(is_timeout),
        );
        result
    }

    /// Records one acquire that waited `wait` (for callers that time acquires themselves).
    pub fn observe(&self, wait: Duration) {
        self.shared.observe(wait);
    }

    /// Counts one acquire that gave up on its timeout (for callers that time acquires themselves).
    pub fn record_timeout(&self) {
        self.shared.timeouts.fetch_add(1, Relaxed);
        self.shared.unreported_timeouts.fetch_add(1, Relaxed);
    }

    /// Sets how long a connection may be held through [`acquire`](Self::acquire) (or
    /// [`get`](Self::get), [`hold`](Self::hold)) before it is reported as a suspected leak:
    /// one WARN event on target `prodbg::pools` naming the holder, a mark in `/debug/pools`,
    /// and one INFO event when it comes back. `None` turns it off. Default:
    /// [`DEFAULT_LEAK_AFTER`] (60 s). Shared by every copy of this recorder.
    pub fn set_leak_threshold(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.shared.leak_after_ms.store(ms, Relaxed);
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
