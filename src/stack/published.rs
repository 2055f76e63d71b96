//! [`Published`]: a value that signal handlers read without locks while other code replaces it.
//!
//! # Signal safety
//! A reader ([`Published::read`]) does one `fetch_add` on a counter, one pointer load and, when
//! its guard drops, one `fetch_sub`: no lock, no allocation, no system call, and it never
//! waits, so it may run in a signal handler that interrupted anything (including a writer on
//! the same thread: the writer never holds anything a reader needs).
//!
//! A writer ([`Published::replace`], outside signal handlers) swaps the pointer and *retires*
//! the old value instead of freeing it. Retired values are freed only when no reader can hold
//! them: by [`Published::try_reclaim`] when it observes no active reader after the swap, or on
//! drop. The argument (all operations `SeqCst`, so they are totally ordered): a reader that
//! loaded the old pointer did so before the swap, and its increment came before that load; so
//! if the writer's load of the counter, after the swap, sees zero, that reader has already
//! decremented, i.e. is done with the value. A reader that increments after the swap loads the
//! new pointer. Dropping a `Published` frees everything: its owner must ensure no handler can
//! still reach it (e.g. disarm timers, unpublish it, and wait for the handler counter to reach
//! zero, as prodbg's sampler does for its table).

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// A heap value readable from signal handlers and replaceable outside them.
pub(crate) struct Published<T> {
    current: AtomicPtr<T>,
    readers: AtomicUsize,
    retired: Mutex<Vec<Box<T>>>,
}

/// Keeps a [`Published`] value alive while a reader uses it.
pub(crate) struct ReadGuard<'a, T> {
    value: &'a T,
    readers: &'a AtomicUsize,
}

impl<T> std::ops::Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> Published<T> {
    /// Publishes `value`.
    pub(crate) fn new(value: T) -> Self {
        Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            readers: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current value. Async-signal-safe (see the module docs).
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        self.readers.fetch_add(1, Ordering::SeqCst);
        let p = self.current.load(Ordering::SeqCst);
        // SAFETY: `current` always holds a pointer from `Box::into_raw`; a value it pointed to
        // is freed only once no reader that may have loaded it is counted (module docs), and
        // this reader is counted until the guard drops.
        ReadGuard {
            value: unsafe { &*p },
            readers: &self.readers,
        }
    }

    /// Publishes `value`; the previous one is retired (freed later). Not from a signal handler.
    pub(crate) fn replace(&self, value: T) {
        let old = self
            .current
            .swap(Box::into_raw(Box::new(value)), Ordering::SeqCst);
        // SAFETY: `old` came from `Box::into_raw` and is no longer published.
        let old = unsafe { Box::from_raw(old) };
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(old);
    }

    /// Frees the retired values if no reader is active now; returns how many were freed.
    /// Not from a signal handler.
    pub(crate) fn try_reclaim(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        if retired.is_empty() || self.readers.load(Ordering::SeqCst) != 0 {
            return 0;
        }
        let n = retired.len();
        retired.clear();
        n
    }

    /// Number of retired values not yet freed.
    #[cfg(test)]
    pub(crate) fn retired(&self) -> usize {
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<T> Drop for Published<T> {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        // SAFETY: `p` came from `Box::into_raw`; `&mut self` means no guard is alive, and the
        // owner guarantees no signal handler can still reach `self` (module docs).
        drop(unsafe { Box::from_raw(p) });
    }
}

// SAFETY: values are shared between threads only through `&T` (readers) and moved in/out by
// writers; `T: Send + Sync` makes both sound.
unsafe impl<T: Send + Sync> Sync for Published<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Published<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_retires_until_no_reader() {
        let p = Published::new(1u32);
        let g = p.read();
        p.replace(2);
        assert_eq!(*g, 1);
        assert_eq!(*p.read(), 2);
        assert_eq!(p.try_reclaim(), 0, "a reader still holds the old value");
        drop(g);
        assert_eq!(p.try_reclaim(), 1);
        assert_eq!(p.retired(), 0);
    }
}
