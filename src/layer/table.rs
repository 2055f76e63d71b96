//! The table of spans open now: a fixed-size, lock-free open-addressed map from span id to a
//! slot holding what the in-flight report and the latency summary need.
//!
//! Lookups (every enter, exit and close) are lock-free: a hash and usually one probe. A slot's
//! field buffer sits behind its own mutex, taken only by the span's creation, `record`, close,
//! and a report copying it, so two threads never wait on each other's spans.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tracing::Metadata;

use super::callsite::Info;

const EMPTY: u64 = 0;
const BUSY: u64 = u64::MAX - 1;
const TOMB: u64 = u64::MAX;
/// Probes before a lookup gives up (and an insert counts the span as not tracked).
const PROBES: usize = 64;
/// A slot keeps at most this much field-buffer capacity after its span closes.
pub(crate) const RETAINED_FIELD_BYTES: usize = 256;

/// The bits of a registry span id that name its slab slot (see [`Table::home`]).
const ID_SLOT_BITS: u64 = (1 << 51) - 1;

pub(crate) const FLAG_ERROR: u32 = 1;
pub(crate) const FLAG_TRUNCATED: u32 = 2;

/// A slot's field buffer behind a one-byte spin lock. Holders never block or allocate for
/// long: a close or `record` appends a few values, a report copies at most the byte cap.
struct FieldCell {
    locked: AtomicBool,
    buf: UnsafeCell<Vec<u8>>,
}

// SAFETY: `buf` is only reached through `FieldGuard` (which holds `locked`) or by the thread
// that moved the slot's key to BUSY (which excludes every other accessor; see `Table::insert`).
unsafe impl Sync for FieldCell {}

pub(crate) struct FieldGuard<'a>(&'a FieldCell);

impl Deref for FieldGuard<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.0.buf.get() }
    }
}

impl DerefMut for FieldGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.0.buf.get() }
    }
}

impl Drop for FieldGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

impl FieldCell {
    #[inline]
    fn lock(&self) -> FieldGuard<'_> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        FieldGuard(self)
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

pub(crate) struct Slot {
    key: AtomicU64,
    meta: AtomicUsize,
    info: AtomicU64,
    pub(crate) start: AtomicU64,
    parent: AtomicU64,
    pub(crate) word: AtomicU64,
    /// `tid << 32 | entered (0/1)` of the thread that entered the span last.
    thread: AtomicU64,
    flags: AtomicU32,
    fields: FieldCell,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            key: AtomicU64::new(EMPTY),
            meta: AtomicUsize::new(0),
            info: AtomicU64::new(0),
            start: AtomicU64::new(0),
            parent: AtomicU64::new(0),
            word: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            fields: FieldCell {
                locked: AtomicBool::new(false),
                buf: UnsafeCell::new(Vec::new()),
            },
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> FieldGuard<'_> {
        self.fields.lock()
    }

    #[inline]
    pub(crate) fn set_flag(&self, f: u32) {
        self.flags.fetch_or(f, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn meta(&self) -> Option<&'static Metadata<'static>> {
        let p = self.meta.load(Ordering::Relaxed) as *const Metadata<'static>;
        // SAFETY: only ever stored from a `&'static Metadata<'static>`, or null.
        unsafe { p.as_ref() }
    }

    #[inline]
    pub(crate) fn info(&self) -> Info {
        super::callsite::unpack(self.info.load(Ordering::Relaxed))
    }

    /// The span enters on thread `tid`. Plain stores, no read-modify-write: when two threads
    /// are inside one span at once, the last to enter or exit decides what is shown.
    #[inline]
    pub(crate) fn entered(&self, tid: i32) -> u64 {
        self.thread
            .store((tid as u32 as u64) << 32 | 1, Ordering::Relaxed);
        self.word.load(Ordering::Relaxed)
    }

    /// The span exits on some thread.
    #[inline]
    pub(crate) fn exited(&self) {
        let t = self.thread.load(Ordering::Relaxed);
        self.thread.store(t & !1, Ordering::Relaxed);
    }

    #[inline]
    fn last_thread(&self) -> (i32, u32) {
        let t = self.thread.load(Ordering::Relaxed);
        ((t >> 32) as u32 as i32, (t & 1) as u32)
    }
}

/// What a report copies out of a live slot.
pub(crate) struct Copied {
    pub(crate) id: u64,
    pub(crate) meta: &'static Metadata<'static>,
    pub(crate) start: u64,
    pub(crate) parent: u64,
    pub(crate) last_tid: i32,
    pub(crate) entered: u32,
    pub(crate) flags: u32,
    pub(crate) fields: Vec<u8>,
}

/// What the close path sees of a span.
pub(crate) struct Closing<'a> {
    pub(crate) id: u64,
    pub(crate) meta: &'static Metadata<'static>,
    /// The latency slot of the span's name (`callsite::NO_STAT` if none).
    pub(crate) stat: u16,
    pub(crate) start: u64,
    pub(crate) flags: u32,
    pub(crate) last_tid: i32,
    pub(crate) fields: &'a [u8],
}

/// The table's size is its cap: no counter is kept on the hot path. A span is not tracked when
/// none of the 64 slots from its home is free, which happens only as the table fills (in
/// practice from ~85 % occupancy); every such span is counted in `dropped`.
pub(crate) struct Table {
    slots: Box<[Slot]>,
    /// Whether reports copy slots (the in-flight list is on). Without readers, a slot's buffer
    /// is only touched by its own span's callbacks, which never run concurrently with its
    /// close, so the close path skips the lock.
    readers: bool,
    mask: usize,
    pub(crate) dropped: AtomicU64,
}

impl Table {
    /// A table of `cap` slots, rounded up to a power of two (at least 16).
    pub(crate) fn new(cap: usize, readers: bool) -> Table {
        let size = cap.max(16).next_power_of_two();
        Table {
            slots: (0..size).map(|_| Slot::new()).collect(),
            readers,
            mask: size - 1,
            dropped: AtomicU64::new(0),
        }
    }

    /// Slots in the table (a memory figure, not the cap).
    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    /// Where span `id` is looked for first. `tracing_subscriber::Registry` ids are
    /// sharded-slab keys: slot address (low 38 bits) and creating thread's shard (next 13),
    /// then a generation (top 13) bumped each time the slot is reused. Hashing without the
    /// generation sends a thread's successive spans to the same few table slots, which stay in
    /// that thread's cache instead of bouncing between cores. Any other id layout only makes
    /// the hash worse, never wrong.
    #[inline]
    fn home(&self, id: u64) -> usize {
        ((id & ID_SLOT_BITS).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    /// Claims a slot for span `id` and lets `init` fill its field buffer; `None` (and the span
    /// counted as dropped) when the cap is reached or no slot is free near its home.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn insert(
        &self,
        id: u64,
        meta: &'static Metadata<'static>,
        info: u64,
        parent: u64,
        start: u64,
        init: impl FnOnce(&mut Vec<u8>) -> (u64, u32),
    ) -> Option<u32> {
        let mut i = self.home(id);
        for _ in 0..PROBES {
            let s = &self.slots[i];
            let k = s.key.load(Ordering::Relaxed);
            if (k == EMPTY || k == TOMB)
                && s.key
                    .compare_exchange(k, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                s.meta.store(meta as *const _ as usize, Ordering::Relaxed);
                s.info.store(info, Ordering::Relaxed);
                s.start.store(start, Ordering::Relaxed);
                s.parent.store(parent, Ordering::Relaxed);
                s.thread.store(0, Ordering::Relaxed);
                // SAFETY: the key is BUSY, which this thread set: readers and closers skip or
                // wait for the slot until the key is published below, and a reader already
                // holding the lock re-checks the key before touching the buffer.
                let buf = unsafe { &mut *s.fields.buf.get() };
                buf.clear();
                let (word, flags) = init(buf);
                s.word.store(word, Ordering::Relaxed);
                s.flags.store(flags, Ordering::Relaxed);
                s.key.store(id, Ordering::Release);
                return Some(i as u32);
            }
            i = (i + 1) & self.mask;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Spans tracked now (a scan of the table).
    pub(crate) fn tracked(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| !matches!(s.key.load(Ordering::Relaxed), EMPTY | BUSY | TOMB))
            .count() as u64
    }

    /// The slot of span `id`, if tracked.
    #[inline]
    pub(crate) fn find(&self, id: u64) -> Option<(u32, &Slot)> {
        let mut i = self.home(id);
        for _ in 0..PROBES {
            let s = &self.slots[i];
            match s.key.load(Ordering::Acquire) {
                k if k == id => return Some((i as u32, s)),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// Slot `idx` if it still holds span `id`.
    #[inline]
    pub(crate) fn at(&self, idx: u32, id: u64) -> Option<&Slot> {
        self.slots
            .get(idx as usize)
            .filter(|s| s.key.load(Ordering::Acquire) == id)
    }

    /// Removes span `id`, showing it to `f` first (under the slot's lock). `hint`: the slot
    /// the span is probably in (e.g. from the thread's last exit), checked before use; a wrong
    /// or [`NO_SLOT`](super::thread::NO_SLOT) hint costs a lookup.
    #[inline]
    pub(crate) fn close(&self, id: u64, hint: u32, f: impl FnOnce(&Closing<'_>)) {
        let s = match self.slots.get(hint as usize) {
            Some(s) if s.key.load(Ordering::Relaxed) == id => s,
            _ => match self.find(id) {
                Some((_, s)) => s,
                None => return,
            },
        };
        let mut guard = self.readers.then(|| s.lock());
        let buf: &mut Vec<u8> = match guard.as_mut() {
            Some(g) => g,
            // SAFETY: no readers (see `readers`), and `record`/`enter` of this span cannot run
            // concurrently with its close.
            None => unsafe { &mut *s.fields.buf.get() },
        };
        if s.key.load(Ordering::Acquire) != id {
            return;
        }
        if let Some(meta) = s.meta() {
            f(&Closing {
                id,
                meta,
                stat: super::callsite::stat_of(s.info.load(Ordering::Relaxed)),
                start: s.start.load(Ordering::Relaxed),
                flags: s.flags.load(Ordering::Relaxed),
                last_tid: s.last_thread().0,
                fields: buf,
            });
        }
        if buf.capacity() > RETAINED_FIELD_BYTES {
            *buf = Vec::new();
        }
        s.key.store(TOMB, Ordering::Release);
        drop(guard);
    }

    /// The start ticks of every live span, without copying their fields (nothing when the
    /// table has no readers).
    pub(crate) fn starts(&self) -> Vec<u64> {
        if !self.readers {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter(|s| !matches!(s.key.load(Ordering::Acquire), EMPTY | BUSY | TOMB))
            .map(|s| s.start.load(Ordering::Relaxed))
            .collect()
    }

    /// The latency slot and start ticks of every live span, without copying their fields or
    /// taking a slot's lock (nothing when the table has no readers): what the console's
    /// overdue count needs, at the cost of [`starts`](Self::starts).
    pub(crate) fn stats_and_starts(&self) -> Vec<(u16, u64)> {
        if !self.readers {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter(|s| !matches!(s.key.load(Ordering::Acquire), EMPTY | BUSY | TOMB))
            .map(|s| (s.info().stat, s.start.load(Ordering::Relaxed)))
            .collect()
    }

    /// Copies every live slot (nothing when the table has no readers).
    pub(crate) fn snapshot(&self) -> Vec<Copied> {
        let mut out = Vec::new();
        if !self.readers {
            return out;
        }
        for s in self.slots.iter() {
            let id = s.key.load(Ordering::Acquire);
            if matches!(id, EMPTY | BUSY | TOMB) {
                continue;
            }
            let buf = s.lock();
            if s.key.load(Ordering::Acquire) != id {
                continue;
            }
            let Some(meta) = s.meta() else { continue };
            let (last_tid, entered) = s.last_thread();
            out.push(Copied {
                id,
                meta,
                start: s.start.load(Ordering::Relaxed),
                parent: s.parent.load(Ordering::Relaxed),
                last_tid,
                entered,
                flags: s.flags.load(Ordering::Relaxed),
                fields: buf.clone(),
            });
        }
        out
    }
}
