//! The per-thread label slots: a global, fixed-size table keyed by thread id.
//!
//! A thread claims a slot the first time one of its spans is entered and releases it when the
//! thread exits. The writer is always the slot's own thread (one relaxed store per span enter
//! or exit); readers are a signal handler on that thread or a sampler on another one, and only
//! load atomics: no lock, no allocation, no thread-local.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::Labels;

/// How many threads can carry labels at once; threads past it carry none.
pub(crate) const MAX_LABELLED_THREADS: usize = 4096;
const PROBES: usize = 64;
const FREE: i32 = 0;
const RELEASED: i32 = -1;

/// One thread's slot, alone on its cache line so writers never share a line.
#[repr(align(64))]
struct Slot {
    tid: AtomicI32,
    word: AtomicU64,
}

static SLOTS: [Slot; MAX_LABELLED_THREADS] = [const {
    Slot {
        tid: AtomicI32::new(FREE),
        word: AtomicU64::new(0),
    }
}; MAX_LABELLED_THREADS];

fn home(tid: i32) -> usize {
    ((tid as u32).wrapping_mul(0x9E37_79B1) >> 20) as usize % MAX_LABELLED_THREADS
}

/// Claims the slot for `tid` (taking over one left behind by a dead thread with the same id);
/// `None` if the table is full around its home.
pub(crate) fn claim(tid: i32) -> Option<u32> {
    if tid <= 0 {
        return None;
    }
    let start = home(tid);
    let mut reusable = None;
    for k in 0..PROBES {
        let i = (start + k) % MAX_LABELLED_THREADS;
        match SLOTS[i].tid.load(Ordering::Acquire) {
            t if t == tid => {
                SLOTS[i].word.store(0, Ordering::Relaxed);
                return Some(i as u32);
            }
            FREE => {
                reusable.get_or_insert(i);
                break;
            }
            RELEASED => {
                reusable.get_or_insert(i);
            }
            _ => {}
        }
    }
    // Take the first free or released slot; retry along the chain if another thread won it.
    let first = reusable?;
    for k in 0..PROBES {
        let i = (first + k) % MAX_LABELLED_THREADS;
        let cur = SLOTS[i].tid.load(Ordering::Acquire);
        if (cur == FREE || cur == RELEASED)
            && SLOTS[i]
                .tid
                .compare_exchange(cur, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            SLOTS[i].word.store(0, Ordering::Relaxed);
            return Some(i as u32);
        }
    }
    None
}

/// Gives slot `idx` back (the thread is exiting).
pub(crate) fn release(idx: u32) {
    if let Some(s) = SLOTS.get(idx as usize) {
        s.word.store(0, Ordering::Relaxed);
        s.tid.store(RELEASED, Ordering::Release);
    }
}

/// Sets the labels of the thread owning slot `idx`.
#[inline]
pub(crate) fn write(idx: u32, word: u64) {
    if let Some(s) = SLOTS.get(idx as usize) {
        s.word.store(word, Ordering::Relaxed);
    }
}

/// The labels thread `tid` carries now: the innermost span it has entered (and its chosen
/// field values), or empty labels.
///
/// Async-signal-safe: it only loads atomics from a static table (at most 64 probes), takes no
/// lock, allocates nothing and touches no thread-local, so a `SIGPROF` handler may call it for
/// its own thread (`gettid()`), and a sampler thread for any other.
pub(crate) fn current_labels_for(tid: i32) -> Labels {
    if tid <= 0 {
        return Labels::NONE;
    }
    let start = home(tid);
    for k in 0..PROBES {
        let s = &SLOTS[(start + k) % MAX_LABELLED_THREADS];
        match s.tid.load(Ordering::Acquire) {
            t if t == tid => return Labels::from_word(s.word.load(Ordering::Relaxed)),
            FREE => break,
            _ => {}
        }
    }
    Labels::NONE
}
