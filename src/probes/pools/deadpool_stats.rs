//! deadpool adapter (`pools-deadpool`): `deadpool::managed::Pool<M, W>`.

use super::{Checkout, PoolSnapshot, PoolStats};
use deadpool::managed::{Manager, Object, Pool, PoolError, WeakPool};

/// [`PoolStats`] for a deadpool managed pool, read from `Pool::status()`.
///
/// What deadpool 0.12 tells: `max_size`, `size`, `idle` (`available`), `waiting`; `in_use` is
/// `size - available`. `waiting` counts callers in `get()` beyond the objects that exist, so
/// while the pool is still growing it briefly includes callers creating a new object. It does
/// not tell `acquire_timeouts_total` or `acquire_wait` (`None` unless an
/// [`AcquireRecorder`](super::AcquireRecorder) is registered under the same name).
///
/// Holds only a `WeakPool`: it never keeps the pool alive, and the registry forgets the pool
/// once the host drops it or calls `Pool::close`.
pub struct DeadpoolStats<M: Manager> {
    pool: WeakPool<M>,
}

/// Stats source for a deadpool managed pool; holds a weak reference only.
pub fn deadpool<M: Manager, W: From<Object<M>>>(pool: &Pool<M, W>) -> DeadpoolStats<M> {
    DeadpoolStats { pool: pool.weak() }
}

impl<M: Manager + 'static> PoolStats for DeadpoolStats<M> {
    fn snapshot(&self) -> PoolSnapshot {
        let Some(pool) = self.pool.upgrade() else {
            return PoolSnapshot::default();
        };
        let status = pool.status();
        PoolSnapshot {
            max_size: Some(status.max_size as u64),
            size: Some(status.size as u64),
            idle: Some(status.available as u64),
            in_use: Some(status.size.saturating_sub(status.available) as u64),
            waiting: Some(status.waiting as u64),
            ..PoolSnapshot::default()
        }
    }

    fn is_gone(&self) -> bool {
        match self.pool.upgrade() {
            Some(pool) => pool.is_closed(),
            None => true,
        }
    }
}

impl<M: Manager> std::fmt::Debug for DeadpoolStats<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadpoolStats").finish_non_exhaustive()
    }
}

/// deadpool's hooks (`pre_recycle`, `post_recycle`) run inside `get()` but see neither the
/// caller nor the return, so holders are named at the acquire call:
/// `acquires.acquire(&pool)` in place of `pool.get()`.
impl<M, W> Checkout for Pool<M, W>
where
    M: Manager + Send + Sync,
    M::Type: Send,
    M::Error: Send,
    W: From<Object<M>> + Send,
{
    type Connection<'a>
        = W
    where
        Self: 'a;
    type Error = PoolError<M::Error>;

    fn max_size(&self) -> usize {
        self.status().max_size
    }

    fn checkout(&self) -> impl std::future::Future<Output = Result<W, PoolError<M::Error>>> + Send {
        self.get()
    }

    fn is_timeout(error: &PoolError<M::Error>) -> bool {
        matches!(error, PoolError::Timeout(_))
    }
}
