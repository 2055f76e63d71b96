//! The acquire wrapper that names holders: [`AcquireRecorder::acquire`] (async pools),
//! [`AcquireRecorder::get`] (r2d2) and [`AcquireRecorder::hold`] (any pool), which hand out a
//! [`Held`] connection, and the [`Checkout`] / [`CheckoutSync`] traits the pool adapters
//! implement.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::acquire::{AcquireRecorder, Shared};
use super::holders::{Caller, Claim};
use crate::layer::clock;

/// A pool whose connections an [`AcquireRecorder`] can hand out asynchronously and name the
/// holder of: implemented for sqlx, deadpool and bb8 pools (features `pools-*`). Implement it
/// for another pool in a few lines, or use [`AcquireRecorder::hold`].
pub trait Checkout: Sync {
    /// What a checkout returns (a pooled connection that goes back to the pool when dropped).
    type Connection<'a>
    where
        Self: 'a;
    /// What a failed checkout returns.
    type Error;
    /// The pool's configured maximum size (sizes the holder table once).
    fn max_size(&self) -> usize;
    /// Checks a connection out (the pool's own acquire).
    fn checkout(&self) -> impl Future<Output = Result<Self::Connection<'_>, Self::Error>> + Send;
    /// Whether `error` is the pool's acquire timeout.
    fn is_timeout(error: &Self::Error) -> bool;
}

/// A pool whose connections are checked out by a blocking call (r2d2): see [`Checkout`].
pub trait CheckoutSync {
    /// What a checkout returns.
    type Connection;
    /// What a failed checkout returns.
    type Error;
    /// The pool's configured maximum size.
    fn max_size(&self) -> usize;
    /// Checks a connection out, blocking up to the pool's timeout.
    fn checkout(&self) -> Result<Self::Connection, Self::Error>;
    /// Whether `error` is the pool's acquire timeout.
    fn is_timeout(error: &Self::Error) -> bool;
}

/// A code address inside the function that called the (always inlined) acquire wrapper: this
/// function's own return address. Named, off the hot path, when a report needs it.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[unsafe(naked)]
extern "C" fn return_address() -> u64 {
    core::arch::naked_asm!("mov rax, [rsp]", "ret")
}

/// See the x86_64 version.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[unsafe(naked)]
extern "C" fn return_address() -> u64 {
    core::arch::naked_asm!("mov x0, x30", "ret")
}

/// No address elsewhere: holders are named by `file:line` only.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
extern "C" fn return_address() -> u64 {
    0
}

impl AcquireRecorder {
    /// Checks a connection out of `pool` like the pool's own acquire, timing the wait (as
    /// [`time`](Self::time)) and recording the caller as the connection's holder until the
    /// returned [`Held`] is dropped: the call site (`file:line`), the calling function, the
    /// current `tracing` span and its route (from prodbg's tracing layer), the Tokio task and
    /// since when. One wrapper at each acquire call replaces `pool.acquire()` / `pool.get()`:
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::SqlitePool, registry: prodbg::pools::PoolRegistry) -> Result<(), sqlx::Error> {
    /// let acquires = registry.acquires("primary-db"); // once, next to the pool
    /// let mut conn = acquires.acquire(&pool).await?;    // was: pool.acquire().await?
    /// sqlx::query("select 1").execute(&mut **conn).await?;
    /// # Ok(()) }
    /// ```
    #[track_caller]
    #[inline(always)]
    pub fn acquire<'p, P: Checkout>(
        &self,
        pool: &'p P,
    ) -> impl Future<Output = Result<Held<P::Connection<'p>>, P::Error>> + Send + 'p {
        let caller = Caller::here(return_address());
        let shared = self.shared.clone();
        let checkout = pool.checkout();
        // Written out here rather than awaiting a helper's future: the pool's future moves once.
        async move {
            let started = shared.start_wait();
            let waiting = Waiting(&shared);
            let result = checkout.await;
            drop(waiting);
            shared.finish(caller, || pool.max_size(), started, result, P::is_timeout)
        }
    }

    /// [`acquire`](Self::acquire) for pools whose checkout blocks (r2d2).
    #[track_caller]
    #[inline(always)]
    pub fn get<P: CheckoutSync>(&self, pool: &P) -> Result<Held<P::Connection>, P::Error> {
        let caller = Caller::here(return_address());
        let started = self.shared.start_wait();
        let result = pool.checkout();
        self.shared.stop_waiting();
        self.shared
            .clone()
            .finish(caller, || pool.max_size(), started, result, P::is_timeout)
    }

    /// [`acquire`](Self::acquire) for any pool: `acquire` is its checkout future, `max_size`
    /// its maximum (sizes the holder table once), `is_timeout` tells its timeout error.
    #[track_caller]
    #[inline(always)]
    pub fn hold<T, E, F>(
        &self,
        max_size: usize,
        acquire: F,
        is_timeout: impl FnOnce(&E) -> bool + Send,
    ) -> impl Future<Output = Result<Held<T>, E>> + Send
    where
        F: Future<Output = Result<T, E>> + Send,
    {
        let caller = Caller::here(return_address());
        let shared = self.shared.clone();
        async move {
            let started = shared.start_wait();
            let waiting = Waiting(&shared);
            let result = acquire.await;
            drop(waiting);
            shared.finish(caller, || max_size, started, result, is_timeout)
        }
    }
}

impl Shared {
    /// Ends a timed acquire; on success, records `caller` as the connection's holder.
    fn finish<T, E>(
        self: Arc<Self>,
        caller: Caller,
        max: impl FnOnce() -> usize,
        started: u64,
        result: Result<T, E>,
        is_timeout: impl FnOnce(&E) -> bool,
    ) -> Result<Held<T>, E> {
        let now = clock::now();
        self.end_wait(started, now, result.as_ref().err().is_some_and(is_timeout));
        let conn = result?;
        let claim = self.holders(max).claim(&caller, now);
        Ok(Held {
            ticket: Ticket {
                shared: self,
                claim,
            },
            conn,
        })
    }
}

/// Keeps `waiting` counted while an async acquire is pending (or cancelled).
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.stop_waiting();
    }
}

/// A connection checked out through an [`AcquireRecorder`]: derefs to the pool's own
/// connection type, and clears its holder record when dropped (before the connection itself
/// goes back to the pool).
pub struct Held<T> {
    // Dropped first: the record is cleared before the connection can be handed out again.
    ticket: Ticket,
    conn: T,
}

struct Ticket {
    shared: Arc<Shared>,
    claim: Option<Claim>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((site, since)) = self.shared.release(self.claim.take()) {
            super::leaks::returned(&self.shared, site, since);
        }
    }
}

impl<T> Held<T> {
    /// The pool's connection, no longer tracked as held (it goes back to the pool when the
    /// caller drops it, unseen by prodbg).
    pub fn into_inner(self) -> T {
        let Held { conn, ticket } = self;
        drop(ticket);
        conn
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.conn
    }
}

impl<T> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.conn
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("conn", &self.conn).finish()
    }
}
