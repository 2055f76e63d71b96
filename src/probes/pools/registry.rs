//! The pool model: [`PoolStats`] (what an adapter reads), [`PoolSnapshot`] (its numbers) and
//! [`PoolRegistry`] (the named pools).

use super::acquire::{AcquireRecorder, Shared};
use crate::recorder::ticker::Ticker;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// A source of pool numbers: usually an adapter around a connection pool.
///
/// Implementations must be cheap (a lock or a few atomics): [`PoolRegistry::snapshot`] calls
/// every registered source on each `/debug/pools` request and Prometheus scrape.
pub trait PoolStats: Send + Sync + 'static {
    /// Reads the pool's current numbers. A number the pool cannot tell is `None`.
    fn snapshot(&self) -> PoolSnapshot;

    /// `true` once the pool is gone for good (closed by the host, or dropped while this source
    /// only held a weak reference). The registry then forgets the source. Default: `false`.
    fn is_gone(&self) -> bool {
        false
    }
}

/// The state of one connection pool at one instant, as far as the pool can tell.
///
/// Every field is `None` when the pool does not expose that number (JSON `null`), never `0`.
/// Counts are connections (or pooled objects) unless said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolSnapshot {
    /// Most connections the pool will open at once (its configured maximum).
    pub max_size: Option<u64>,
    /// Connections the pool holds now, idle plus in use.
    pub size: Option<u64>,
    /// Open connections sitting in the pool, ready to be handed out.
    pub idle: Option<u64>,
    /// Connections checked out by the application right now.
    pub in_use: Option<u64>,
    /// Callers waiting in acquire right now.
    pub waiting: Option<u64>,
    /// Acquires that gave up because the pool's acquire timeout expired, since the pool (or its
    /// [`AcquireRecorder`]) was created. A counter: it only goes up.
    pub acquire_timeouts_total: Option<u64>,
    /// How long acquires waited for a connection, since the pool (or its recorder) was created.
    pub acquire_wait: Option<Histogram>,
}

impl PoolSnapshot {
    /// Share of the maximum that is checked out: `in_use / max_size`, from 0.0 to 1.0.
    ///
    /// `None` when either number is unknown or `max_size` is 0.
    pub fn utilisation(&self) -> Option<f64> {
        match (self.in_use, self.max_size) {
            (Some(used), Some(max)) if max > 0 => Some(used as f64 / max as f64),
            _ => None,
        }
    }

    /// Whether callers are (or would be) queueing for a connection.
    ///
    /// - `waiting` known: `in_use >= max_size && waiting > 0`.
    /// - `waiting` unknown (sqlx, r2d2 without a recorder): `in_use >= max_size`, i.e. the pool is
    ///   exhausted and the next acquire has to wait. This errs toward raising the alarm.
    /// - `None` when `in_use` or `max_size` is unknown.
    pub fn saturated(&self) -> Option<bool> {
        let exhausted = self.in_use? >= self.max_size?;
        Some(match self.waiting {
            Some(waiting) => exhausted && waiting > 0,
            None => exhausted,
        })
    }

    /// Fills each `None` field of `self` from `other`; numbers the pool reports itself win.
    fn fill_from(&mut self, other: PoolSnapshot) {
        fn fill<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        fill(&mut self.max_size, other.max_size);
        fill(&mut self.size, other.size);
        fill(&mut self.idle, other.idle);
        fill(&mut self.in_use, other.in_use);
        fill(&mut self.waiting, other.waiting);
        fill(
            &mut self.acquire_timeouts_total,
            other.acquire_timeouts_total,
        );
        fill(&mut self.acquire_wait, other.acquire_wait);
    }
}

/// A latency distribution in the shape of a Prometheus histogram (cumulative buckets).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// Cumulative buckets in increasing `le_seconds` order. Empty when the pool only reports a
    /// total time and a count (bb8): render then as a histogram with only the `+Inf` bucket.
    pub buckets: Vec<Bucket>,
    /// Number of observations (acquires), including those above the last bucket.
    pub count: u64,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

/// One cumulative histogram bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Upper bound of the bucket, in seconds (Prometheus `le`).
    pub le_seconds: f64,
    /// Observations less than or equal to `le_seconds`.
    pub count: u64,
}

/// Named connection pools, listed by `/debug/pools` and `/metrics`.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: register pools at build time or at any
/// time later from any thread. Registering a name again replaces the earlier pool of that name.
///
/// **Lifetime.** sqlx, bb8 and r2d2 pools are `Arc` handles with no weak form, so their
/// adapters must hold a clone, and whoever owns the adapter keeps the pool's connections open.
/// Hence [`register`](Self::register) gives the adapter to the host as a [`Registration`] and the
/// registry keeps only a weak reference: the pool is listed exactly as long as the host keeps the
/// `Registration` — keep it next to the pool (e.g. in the same app-state struct) and both go away
/// together. (The deadpool adapter holds a `WeakPool` and never keeps its pool alive.) [`register_static`](Self::register_static) is for pools that live as long as the
/// process. Either way a source whose [`PoolStats::is_gone`] turns `true` (a closed sqlx or
/// deadpool pool, or a dropped deadpool pool) is forgotten at the next snapshot.
#[derive(Clone, Default)]
pub struct PoolRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    pools: BTreeMap<String, Source>,
    recorders: BTreeMap<String, Weak<Shared>>,
    /// The leak scan, started with the first recorder.
    scan: Option<Ticker>,
}

/// How often the leak scan looks at the holders.
const SCAN_EVERY: Duration = Duration::from_secs(1);

enum Source {
    Weak(Weak<dyn PoolStats>),
    Owned(Arc<dyn PoolStats>),
}

impl Source {
    fn get(&self) -> Option<Arc<dyn PoolStats>> {
        let stats = match self {
            Source::Weak(weak) => weak.upgrade()?,
            Source::Owned(arc) => Arc::clone(arc),
        };
        (!stats.is_gone()).then_some(stats)
    }
}

/// Keeps a pool listed in its [`PoolRegistry`]; dropping it removes the pool from the list.
///
/// It owns the pool's [`PoolStats`] source. For adapters that hold a clone of the pool handle
/// (sqlx, bb8, r2d2) that clone lives as long as this value, so drop it together with the pool.
#[must_use = "the pool is unlisted as soon as its Registration is dropped"]
pub struct Registration {
    _stats: Arc<dyn PoolStats>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

impl PoolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists `stats` under `name` for as long as the returned [`Registration`] lives.
    pub fn register(&self, name: impl Into<String>, stats: impl PoolStats) -> Registration {
        let stats: Arc<dyn PoolStats> = Arc::new(stats);
        self.lock()
            .pools
            .insert(name.into(), Source::Weak(Arc::downgrade(&stats)));
        Registration { _stats: stats }
    }

    /// Lists `stats` under `name` until [`unregister`](Self::unregister) or until the pool is
    /// gone ([`PoolStats::is_gone`]). The registry owns the source: with the sqlx, bb8 and r2d2
    /// adapters this keeps a pool handle, so the pool stays open until then even if the host
    /// drops its own handles. Meant for pools that live as long as the process.
    pub fn register_static(&self, name: impl Into<String>, stats: impl PoolStats) {
        self.lock()
            .pools
            .insert(name.into(), Source::Owned(Arc::new(stats)));
    }

    /// Removes the pool listed under `name`. Returns whether there was one.
    pub fn unregister(&self, name: &str) -> bool {
        self.lock().pools.remove(name).is_some()
    }

    /// An [`AcquireRecorder`] for the pool named `name`: times acquires and counts waiters and
    /// timeouts for pools that do not track them. Its numbers fill the fields the pool itself
    /// leaves `None`. Repeated calls with one name share one recorder while any copy lives.
    ///
    /// Its [`acquire`](AcquireRecorder::acquire) also names who holds each connection (shown by
    /// `/debug/pools` and `/debug/pprof/pool_held`) and reports holds past the leak threshold;
    /// the first call starts the registry's leak scan (thread `prodbg-pool-scan`, once a
    /// second, gone with the registry).
    pub fn acquires(&self, name: impl Into<String>) -> AcquireRecorder {
        let name = name.into();
        let mut inner = self.lock();
        if inner.scan.is_none() {
            let started = Ticker::start(
                "prodbg-pool-scan",
                SCAN_EVERY,
                Arc::downgrade(&self.inner),
                |inner: &Mutex<Inner>| {
                    let live = live_recorders(&mut lock(inner));
                    for shared in live {
                        super::leaks::scan(&shared);
                    }
                },
            );
            match started {
                Ok(ticker) => inner.scan = Some(ticker),
                Err(e) => tracing::warn!(
                    target: "prodbg::pools",
                    error = %e,
                    "cannot start the pool leak scan: suspected leaks and timeouts are not reported as events"
                ),
            }
        }
        let slot = inner.recorders.entry(name.clone()).or_default();
        if let Some(shared) = slot.upgrade() {
            return AcquireRecorder::from_shared(shared);
        }
        let recorder = AcquireRecorder::new(name);
        *slot = recorder.downgrade();
        recorder
    }

    /// The recorders alive now, by pool name.
    pub(crate) fn recorders(&self) -> BTreeMap<String, Arc<Shared>> {
        let mut inner = self.lock();
        live_recorders(&mut inner)
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    /// Every live pool's numbers, sorted by name. Forgets pools that are gone.
    pub fn snapshot(&self) -> Vec<(String, PoolSnapshot)> {
        // Collect the live sources under the lock (forgetting dead ones), read them outside it.
        let live: Vec<(String, Arc<dyn PoolStats>, Option<AcquireRecorder>)> = {
            let mut inner = self.lock();
            let Inner {
                pools, recorders, ..
            } = &mut *inner;
            recorders.retain(|_, weak| weak.strong_count() > 0);
            let mut live = Vec::with_capacity(pools.len());
            pools.retain(|name, source| {
                let Some(stats) = source.get() else {
                    return false;
                };
                let recorder = recorders.get(name).and_then(Weak::upgrade);
                live.push((
                    name.clone(),
                    stats,
                    recorder.map(AcquireRecorder::from_shared),
                ));
                true
            });
            live
        };
        live.into_iter()
            .map(|(name, stats, recorder)| {
                let mut snapshot = stats.snapshot();
                if let Some(recorder) = recorder {
                    snapshot.fill_from(recorder.snapshot());
                }
                (name, snapshot)
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic elsewhere while holding the lock leaves the maps consistent; keep going.
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The live recorders (forgetting dead ones).
fn live_recorders(inner: &mut Inner) -> Vec<Arc<Shared>> {
    let mut live = Vec::new();
    inner.recorders.retain(|_, weak| match weak.upgrade() {
        Some(shared) => {
            live.push(shared);
            true
        }
        None => false,
    });
    live
}

impl std::fmt::Debug for PoolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().pools.keys().cloned().collect();
        f.debug_struct("PoolRegistry")
            .field("pools", &names)
            .finish()
    }
}
