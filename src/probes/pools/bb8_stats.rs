//! bb8 adapter (`pools-bb8`): `bb8::Pool<M>`.

use super::{Checkout, Histogram, PoolSnapshot, PoolStats};
use bb8::{ManageConnection, Pool, PooledConnection, RunError};

/// [`PoolStats`] for a bb8 pool, read from `Pool::state()` and its statistics.
///
/// What bb8 0.9 tells: `max_size` (config), `size` (`connections`, open ones only), `idle`
/// (`idle_connections`), `in_use` (`size - idle`), `waiting` (`statistics.pending_gets()`),
/// `acquire_timeouts_total` (`get_timed_out`) and `acquire_wait` as a count (every completed
/// get) and a sum (`get_wait_time`; gets served at once add 0) with **no buckets**: bb8 keeps no
/// distribution.
///
/// **Keeps the pool alive.** `bb8::Pool` has no weak form, so this holds a clone: keep the
/// [`Registration`](super::Registration) next to the pool so both go away together.
pub struct Bb8Stats<M: ManageConnection> {
    pool: Pool<M>,
    max_size: u32,
}

/// Stats source for a bb8 pool; holds a clone of the handle (see [`Bb8Stats`]).
pub fn bb8<M: ManageConnection>(pool: &Pool<M>) -> Bb8Stats<M> {
    Bb8Stats {
        pool: pool.clone(),
        max_size: pool.config().max_size,
    }
}

impl<M: ManageConnection> PoolStats for Bb8Stats<M> {
    fn snapshot(&self) -> PoolSnapshot {
        let state = self.pool.state();
        let stats = &state.statistics;
        // The counters are read one by one; a get finishing in between must not underflow.
        let completed = stats.get_direct + stats.get_waited + stats.get_timed_out;
        PoolSnapshot {
            max_size: Some(u64::from(self.max_size)),
            size: Some(u64::from(state.connections)),
            idle: Some(u64::from(state.idle_connections)),
            in_use: Some(u64::from(
                state.connections.saturating_sub(state.idle_connections),
            )),
            waiting: Some(stats.get_started.saturating_sub(completed)),
            acquire_timeouts_total: Some(stats.get_timed_out),
            acquire_wait: Some(Histogram {
                buckets: Vec::new(),
                count: completed,
                sum_seconds: stats.get_wait_time.as_secs_f64(),
            }),
        }
    }
}

impl<M: ManageConnection> std::fmt::Debug for Bb8Stats<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bb8Stats").finish_non_exhaustive()
    }
}

/// bb8's `CustomizeConnection::on_acquire` runs when a connection is *created*, not checked
/// out, so holders are named at the acquire call: `acquires.acquire(&pool)` in place of
/// `pool.get()`.
impl<M: ManageConnection> Checkout for Pool<M> {
    type Connection<'a> = PooledConnection<'a, M>;
    type Error = RunError<M::Error>;

    fn max_size(&self) -> usize {
        self.config().max_size as usize
    }

    fn checkout(
        &self,
    ) -> impl std::future::Future<Output = Result<PooledConnection<'_, M>, RunError<M::Error>>> + Send
    {
        self.get()
    }

    fn is_timeout(error: &RunError<M::Error>) -> bool {
        matches!(error, RunError::TimedOut)
    }
}
