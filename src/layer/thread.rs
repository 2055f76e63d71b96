//! Per-thread state the layer keeps: the thread id, its label slot, its shard, and the stack of
//! spans it has entered.
//!
//! Everything lives in one `const`-initialised thread-local without a destructor, so reaching it
//! is a plain TLS access (no lazy registration, no allocation). A second thread-local with a
//! destructor is touched once per thread, to give the label slot and the shard back when the
//! thread exits.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::stack::labels;

/// Deepest stack of entered spans remembered per thread; deeper enters still count, but their
/// labels are those of the span at this depth.
pub(crate) const STACK_DEPTH: usize = 32;
/// Shards for per-thread-sharded counters. The first [`OWNED_SHARDS`] are each held by at most
/// one live thread at a time, whose writes to them need no read-modify-write (see
/// [`owns_shard`]); threads that find them all held share the other `SHARDS - OWNED_SHARDS`,
/// dealt round-robin.
pub(crate) const SHARDS: usize = 8;
/// Shards held by one thread at a time (see [`SHARDS`]).
pub(crate) const OWNED_SHARDS: usize = 4;

/// Thread names remembered for in-flight reports.
pub(crate) const MAX_THREAD_NAMES: usize = 4096;
/// No table slot (the span is not tracked).
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Whether `shard`, the calling thread's shard as [`closing`] gives it, is one that thread
/// holds alone (so plain load-then-store updates of its counters lose nothing): true for the
/// shards below [`OWNED_SHARDS`], which a thread gets only by claiming one and gives back as
/// it exits (switching to a shared one for anything it still records).
#[inline]
pub(crate) fn owns_shard(shard: usize) -> bool {
    shard < OWNED_SHARDS
}

static SHARD_HELD: [AtomicBool; OWNED_SHARDS] = [const { AtomicBool::new(false) }; OWNED_SHARDS];

/// A shared shard, dealt round-robin.
fn shared_shard() -> u8 {
    static NEXT_SHARD: AtomicU32 = AtomicU32::new(0);
    (OWNED_SHARDS + NEXT_SHARD.fetch_add(1, Ordering::Relaxed) as usize % (SHARDS - OWNED_SHARDS))
        as u8
}

/// One entered span: its id, its table slot, and the label word it put in force.
#[derive(Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) slot: u32,
    pub(crate) word: u64,
}

const EMPTY: Frame = Frame {
    id: 0,
    slot: NO_SLOT,
    word: 0,
};

pub(crate) struct Local {
    /// 0 until initialised; -1 once the thread is being torn down.
    tid: Cell<i32>,
    label_slot: Cell<u32>,
    shard: Cell<u8>,
    depth: Cell<u32>,
    stack: [Cell<Frame>; STACK_DEPTH],
    /// `(id, table slot)` of the frame popped last: a span usually closes right after its
    /// last exit, on the same thread, and the close then needs no table lookup.
    last_popped: Cell<(u64, u32)>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            tid: Cell::new(0),
            label_slot: Cell::new(NO_SLOT),
            shard: Cell::new(0),
            depth: Cell::new(0),
            stack: [const { Cell::new(EMPTY) }; STACK_DEPTH],
            last_popped: Cell::new((0, NO_SLOT)),
        }
    };
    static EXIT: ExitGuard = const { ExitGuard };
}

struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| {
            let slot = l.label_slot.replace(NO_SLOT);
            if slot != NO_SLOT {
                labels::release(slot);
            }
            // Spans this thread still closes from here on go to a shared shard.
            let shard = l.shard.replace(shared_shard()) as usize;
            if owns_shard(shard) {
                SHARD_HELD[shard].store(false, Ordering::Release);
            }
            l.tid.set(-1);
        });
    }
}

pub(crate) use crate::stack::gettid;

fn init(l: &Local) {
    let tid = gettid();
    l.tid.set(tid.max(1));
    // Only a thread whose exit guard is in place may hold a shard: the guard gives it back.
    let guarded = EXIT.try_with(|_| {}).is_ok();
    let owned = guarded
        .then(|| {
            SHARD_HELD.iter().position(|h| {
                h.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
        })
        .flatten();
    l.shard.set(owned.map_or_else(shared_shard, |i| i as u8));
    if let Some(slot) = labels::claim(tid) {
        l.label_slot.set(slot);
    }
    remember_name(tid);
}

#[inline]
fn with<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|l| {
            if l.tid.get() == 0 {
                init(l);
            }
            f(l)
        })
        .ok()
}

/// The calling thread's kernel id (cached).
#[inline]
pub(crate) fn tid() -> i32 {
    with(|l| l.tid.get()).unwrap_or(0)
}

/// The id of the calling thread's innermost entered span (0 if none).
#[inline]
pub(crate) fn top_id() -> u64 {
    with(|l| {
        let d = l.depth.get() as usize;
        if d > 0 {
            l.stack[(d - 1).min(STACK_DEPTH - 1)].get().id
        } else {
            0
        }
    })
    .unwrap_or(0)
}

/// The label word of the calling thread's innermost entered span (0 if none, or if the thread
/// never entered a span: no thread state is set up for this read).
#[inline]
pub(crate) fn current_word() -> u64 {
    LOCAL
        .try_with(|l| {
            let d = l.depth.get() as usize;
            if l.tid.get() > 0 && d > 0 {
                l.stack[(d - 1).min(STACK_DEPTH - 1)].get().word
            } else {
                0
            }
        })
        .unwrap_or(0)
}

/// For closing span `id`: the calling thread's shard, and the table slot `id` was in when this
/// thread last exited it, if that was the last exit on this thread ([`NO_SLOT`] otherwise).
/// The slot is a hint: the table checks that it still holds `id`.
#[inline]
pub(crate) fn closing(id: u64) -> (usize, u32) {
    with(|l| {
        let (last, slot) = l.last_popped.get();
        (
            l.shard.get() as usize,
            if last == id { slot } else { NO_SLOT },
        )
    })
    // Never an owned shard without owning it.
    .unwrap_or((OWNED_SHARDS, NO_SLOT))
}

/// Enters span `id`: `slot` gets the thread's id (to note where the span runs) and hands back
/// the span's label word, which is pushed as by [`push`]. One thread-local access for both.
#[inline]
pub(crate) fn enter(id: u64, slot: u32, f: impl FnOnce(i32) -> u64) {
    with(|l| {
        let word = f(l.tid.get());
        push_in(l, id, slot, word)
    });
}

/// Pushes an entered span and puts its labels in the thread's slot. A span without labels of
/// its own (`word == 0`: not tracked) keeps the enclosing span's labels; a span that lacks a
/// chosen field inherits the enclosing span's value for it (as Go's `pprof.Do` labels nest), so
/// a `db` span inside a `request{route}` span still carries the route.
#[inline]
pub(crate) fn push(id: u64, slot: u32, word: u64) {
    with(|l| push_in(l, id, slot, word));
}

#[inline]
fn push_in(l: &Local, id: u64, slot: u32, word: u64) {
    let d = l.depth.get() as usize;
    let word = if d == 0 {
        word
    } else {
        inherit(word, l.stack[(d - 1).min(STACK_DEPTH - 1)].get().word)
    };
    if d < STACK_DEPTH {
        l.stack[d].set(Frame { id, slot, word });
    }
    l.depth.set(d as u32 + 1);
    labels::write(l.label_slot.get(), word);
}

/// `word` with each absent part (span name, field value) taken from `outer`.
#[inline]
fn inherit(word: u64, outer: u64) -> u64 {
    const PARTS: [u64; 3] = [0xFFFF, 0xFFFF << 16, 0xFFFF << 32];
    let mut w = word;
    for m in PARTS {
        if w & m == 0 {
            w |= outer & m;
        }
    }
    w
}

/// What [`pop`] found.
pub(crate) enum Popped {
    /// A frame of a tracked span, in this table slot.
    Slot(u32),
    /// A frame of an untracked span.
    Untracked,
    /// No frame (deeper than remembered, or never pushed): look the span up.
    Unknown,
}

/// Pops the span `id` (the topmost frame with that id; frames above it stay) and puts the
/// labels of the span now innermost back in the slot.
#[inline]
pub(crate) fn pop(id: u64) -> Popped {
    with(|l| {
        let d = l.depth.get() as usize;
        if d == 0 {
            return Popped::Unknown;
        }
        let top = d.min(STACK_DEPTH);
        let mut found = None;
        if d <= STACK_DEPTH {
            for i in (0..top).rev() {
                if l.stack[i].get().id == id {
                    found = Some(i);
                    break;
                }
            }
        }
        let popped = match found {
            Some(i) => {
                let f = l.stack[i].get();
                for j in i..top - 1 {
                    l.stack[j].set(l.stack[j + 1].get());
                }
                l.last_popped.set((id, f.slot));
                if f.slot == NO_SLOT {
                    Popped::Untracked
                } else {
                    Popped::Slot(f.slot)
                }
            }
            None => Popped::Unknown,
        };
        let d = d - 1;
        l.depth.set(d as u32);
        let word = if d == 0 {
            0
        } else {
            l.stack[(d - 1).min(STACK_DEPTH - 1)].get().word
        };
        labels::write(l.label_slot.get(), word);
        popped
    })
    .unwrap_or(Popped::Unknown)
}

/// The innermost entered span on this thread: `(id, table slot)`.
pub(crate) fn top() -> Option<(u64, u32)> {
    with(|l| {
        let d = l.depth.get() as usize;
        (d > 0).then(|| {
            let f = l.stack[(d - 1).min(STACK_DEPTH - 1)].get();
            (f.id, f.slot)
        })
    })
    .flatten()
}

/// Replaces the label word of every frame of span `id` on this thread (after `span.record`
/// changed a chosen field), and the slot if it is innermost. Frames entered inside it keep the
/// value they inherited when they were entered.
pub(crate) fn relabel(id: u64, word: u64) {
    let _ = with(|l| {
        let d = (l.depth.get() as usize).min(STACK_DEPTH);
        for i in 0..d {
            let mut f = l.stack[i].get();
            if f.id == id {
                f.word = if i == 0 {
                    word
                } else {
                    inherit(word, l.stack[i - 1].get().word)
                };
                l.stack[i].set(f);
            }
        }
        if d > 0 {
            labels::write(l.label_slot.get(), l.stack[d - 1].get().word);
        }
    });
}

fn names() -> std::sync::MutexGuard<'static, HashMap<i32, Box<str>>> {
    static NAMES: OnceLock<Mutex<HashMap<i32, Box<str>>>> = OnceLock::new();
    NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn remember_name(tid: i32) {
    let name = std::thread::current().name().map(Box::from);
    let mut names = names();
    match name {
        Some(n) if names.len() < MAX_THREAD_NAMES || names.contains_key(&tid) => {
            names.insert(tid, n);
        }
        _ => {
            names.remove(&tid);
        }
    }
}

/// The name of thread `tid` as it was when it first entered a span; `None` if unnamed or
/// unknown.
pub(crate) fn name_of(tid: i32) -> Option<String> {
    names().get(&tid).map(|n| n.to_string())
}

/// A thread, by kernel id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ThreadRef {
    /// Kernel thread id (`gettid`, as in `/proc/<pid>/task/<tid>`).
    pub(crate) tid: i32,
    /// The thread's name when it first entered a span; `None` if unnamed.
    pub(crate) name: Option<String>,
}

impl ThreadRef {
    pub(crate) fn of(tid: i32) -> ThreadRef {
        ThreadRef {
            tid,
            name: name_of(tid),
        }
    }
}
