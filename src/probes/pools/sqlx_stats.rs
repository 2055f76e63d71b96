//! sqlx adapter (`pools-sqlx`): any `sqlx::Pool<DB>`.

use super::{Checkout, PoolSnapshot, PoolStats};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// [`PoolStats`] for a sqlx pool of any database.
///
/// What sqlx 0.8 tells: `max_size` (options), `size` (`Pool::size`, which also counts connections
/// being opened), `idle` (`Pool::num_idle`); `in_use` is `size - idle`. It does not tell
/// `waiting`, `acquire_timeouts_total` or `acquire_wait`: they are `None` unless the pool has an
/// [`AcquireRecorder`](super::AcquireRecorder) under the same name.
///
/// **Keeps the pool alive.** `sqlx::Pool` is an `Arc` handle with no weak form, so this holds a
/// clone: the pool's connections stay open while this value lives, even after the host drops its
/// own handles. Register it with [`PoolRegistry::register`](super::PoolRegistry::register) and
/// keep the `Registration` next to the pool, or call `Pool::close`, after which the registry
/// forgets it and drops the clone.
pub struct SqlxStats<DB: Database> {
    pool: Pool<DB>,
}

/// Stats source for a sqlx pool; holds a clone of the handle (see [`SqlxStats`]).
pub fn sqlx<DB: Database>(pool: &Pool<DB>) -> SqlxStats<DB> {
    SqlxStats { pool: pool.clone() }
}

impl<DB: Database> PoolStats for SqlxStats<DB> {
    fn snapshot(&self) -> PoolSnapshot {
        let size = u64::from(self.pool.size());
        let idle = self.pool.num_idle() as u64;
        PoolSnapshot {
            max_size: Some(u64::from(self.pool.options().get_max_connections())),
            size: Some(size),
            idle: Some(idle),
            in_use: Some(size.saturating_sub(idle)),
            ..PoolSnapshot::default()
        }
    }

    fn is_gone(&self) -> bool {
        self.pool.is_closed()
    }
}

impl<DB: Database> std::fmt::Debug for SqlxStats<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxStats").finish_non_exhaustive()
    }
}

/// sqlx gives no hook with the caller (`before_acquire` skips new connections and
/// `after_release` names no connection), so holders are named at the acquire call:
/// `acquires.acquire(&pool)` in place of `pool.acquire()`.
impl<DB: Database> Checkout for Pool<DB> {
    type Connection<'a> = PoolConnection<DB>;
    type Error = sqlx::Error;

    fn max_size(&self) -> usize {
        self.options().get_max_connections() as usize
    }

    fn checkout(
        &self,
    ) -> impl std::future::Future<Output = Result<PoolConnection<DB>, sqlx::Error>> + Send {
        self.acquire()
    }

    fn is_timeout(error: &sqlx::Error) -> bool {
        matches!(error, sqlx::Error::PoolTimedOut)
    }
}
