//! r2d2 adapter (`pools-r2d2`): `r2d2::Pool<M>`.

use super::{AcquireRecorder, CheckoutSync, PoolSnapshot, PoolStats};
use r2d2::event::{CheckoutEvent, HandleEvent, TimeoutEvent};
use r2d2::{ManageConnection, Pool, PooledConnection};

/// [`PoolStats`] for an r2d2 pool, read from `Pool::state()` and `Pool::max_size()`.
///
/// What r2d2 0.8 tells: `max_size`, `size` (`connections`, open ones only), `idle`
/// (`idle_connections`), `in_use` (`size - idle`). It does not tell `waiting`,
/// `acquire_timeouts_total` or `acquire_wait`. Pass an [`AcquireRecorder`] registered under the
/// same name to `r2d2::Builder::event_handler` to get the last two (r2d2 reports checkouts and
/// timeouts as events, but not when a wait starts, so `waiting` stays unknown).
///
/// **Keeps the pool alive.** `r2d2::Pool` has no weak form, so this holds a clone: keep the
/// [`Registration`](super::Registration) next to the pool so both go away together.
pub struct R2d2Stats<M: ManageConnection> {
    pool: Pool<M>,
}

/// Stats source for an r2d2 pool; holds a clone of the handle (see [`R2d2Stats`]).
pub fn r2d2<M: ManageConnection>(pool: &Pool<M>) -> R2d2Stats<M> {
    R2d2Stats { pool: pool.clone() }
}

impl<M: ManageConnection> PoolStats for R2d2Stats<M> {
    fn snapshot(&self) -> PoolSnapshot {
        let state = self.pool.state();
        PoolSnapshot {
            max_size: Some(u64::from(self.pool.max_size())),
            size: Some(u64::from(state.connections)),
            idle: Some(u64::from(state.idle_connections)),
            in_use: Some(u64::from(
                state.connections.saturating_sub(state.idle_connections),
            )),
            ..PoolSnapshot::default()
        }
    }
}

/// Feeds r2d2's checkout and timeout events into the recorder: acquire wait and timeouts only
/// (`waiting` stays unknown, as r2d2 does not say when a wait starts).
impl HandleEvent for AcquireRecorder {
    fn handle_checkout(&self, event: CheckoutEvent) {
        self.observe(event.duration());
    }

    fn handle_timeout(&self, event: TimeoutEvent) {
        self.observe(event.timeout());
        self.record_timeout();
    }
}

impl<M: ManageConnection> std::fmt::Debug for R2d2Stats<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("R2d2Stats").finish_non_exhaustive()
    }
}

/// r2d2's `HandleEvent` reports checkouts and checkins by connection id but not the caller,
/// so holders are named at the acquire call: `acquires.get(&pool)` in place of `pool.get()`.
/// (Use either that or the recorder as the pool's `event_handler`, not both: each counts the
/// wait.)
impl<M: ManageConnection> CheckoutSync for Pool<M> {
    type Connection = PooledConnection<M>;
    type Error = r2d2::Error;

    fn max_size(&self) -> usize {
        Pool::max_size(self) as usize
    }

    fn checkout(&self) -> Result<PooledConnection<M>, r2d2::Error> {
        self.get()
    }

    /// r2d2's `get` fails only when its connection timeout passes.
    fn is_timeout(_: &r2d2::Error) -> bool {
        true
    }
}
