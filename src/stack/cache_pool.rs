//! A fixed pool of framehop caches that signal handlers claim without locks.
//!
//! A cache needs exclusive access while a walk runs, and a handler cannot allocate one, so
//! the pool preallocates them. [`CachePool::claim`] tries each slot's `busy` flag with one
//! compare-and-swap and never waits: a handler that finds every slot taken (more handlers in
//! flight than slots, e.g. a thread-dump signal nested in a `SIGPROF` handler while all others
//! are busy) gets `None` and records the leaf only. Size it for the handlers that can be
//! *running* at once (CPUs plus preempted ones), not for the number of threads.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::stack::unwind::NativeCache;

struct Slot {
    busy: AtomicBool,
    cache: UnsafeCell<NativeCache>,
}

/// Preallocated caches (about 16 KB each).
pub(crate) struct CachePool {
    slots: Box<[Slot]>,
    exhausted: AtomicU64,
}

// SAFETY: a slot's cache is only reached through a `CacheGuard`, and `busy` (acquired by CAS,
// released on drop) gives each guard exclusive access.
unsafe impl Sync for CachePool {}
// SAFETY: as above.
unsafe impl Send for CachePool {}

/// Exclusive use of one cache until dropped.
pub(crate) struct CacheGuard<'a> {
    slot: &'a Slot,
}

impl CachePool {
    /// A pool of `n` caches (at least 1). Allocates; not from a signal handler.
    pub(crate) fn new(n: usize) -> Self {
        let slots = (0..n.max(1))
            .map(|_| Slot {
                busy: AtomicBool::new(false),
                cache: UnsafeCell::new(NativeCache::new_in()),
            })
            .collect();
        Self {
            slots,
            exhausted: AtomicU64::new(0),
        }
    }

    /// A pool sized for this machine: 2 × CPUs + 4.
    pub(crate) fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self::new(2 * cpus + 4)
    }

    /// Claims a free cache, starting at a slot derived from `hint` (e.g. the thread id) so
    /// threads rarely collide. Async-signal-safe; never waits.
    pub(crate) fn claim(&self, hint: usize) -> Option<CacheGuard<'_>> {
        let n = self.slots.len();
        for k in 0..n {
            let slot = &self.slots[(hint + k) % n];
            if slot
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(CacheGuard { slot });
            }
        }
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Claims that found every cache busy.
    #[cfg(test)]
    pub(crate) fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

impl std::ops::Deref for CacheGuard<'_> {
    type Target = NativeCache;
    fn deref(&self) -> &NativeCache {
        // SAFETY: this guard holds the slot's `busy` flag (exclusive access).
        unsafe { &*self.slot.cache.get() }
    }
}

impl std::ops::DerefMut for CacheGuard<'_> {
    fn deref_mut(&mut self) -> &mut NativeCache {
        // SAFETY: as above.
        unsafe { &mut *self.slot.cache.get() }
    }
}

impl Drop for CacheGuard<'_> {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_and_exhaustion_is_counted() {
        let pool = CachePool::new(2);
        let a = pool.claim(0).expect("first");
        let b = pool.claim(0).expect("second");
        assert!(pool.claim(7).is_none());
        assert_eq!(pool.exhausted(), 1);
        drop(a);
        assert!(pool.claim(1).is_some());
        drop(b);
    }
}
