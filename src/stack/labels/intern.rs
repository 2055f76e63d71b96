//! Bounded, never-freed string tables behind the ids a [`Labels`](super::Labels) word holds.
//!
//! Span names are `&'static str` from callsite metadata: the table stores their pointer and
//! length, nothing is copied. Field values are copied once, leaked, and kept for the life of the
//! process, so a profile taken at any time can still turn an id into its string. Both tables
//! are bounded; past the bound a name or value gets the id of [`OTHER`].

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The string shown for a name or value past its table's bound.
pub(crate) const OTHER: &str = "other";
/// Ids 0 (absent) and 1 ([`OTHER`]) are reserved.
pub(crate) const ID_NONE: u16 = 0;
pub(crate) const ID_OTHER: u16 = 1;

/// How many distinct span names the label table holds (ids 2..), after which names read
/// [`OTHER`].
pub(crate) const MAX_LABEL_NAMES: usize = 1024;
/// How many distinct `(field, value)` pairs the label table holds, after which values read
/// [`OTHER`].
pub(crate) const MAX_LABEL_VALUES: usize = 4096;
/// Longest label value kept, in bytes; longer values are cut at a character boundary.
pub(crate) const MAX_LABEL_VALUE_BYTES: usize = 128;

/// A `&'static str` stored as two atomics: written once, then read from anywhere.
struct StrCell {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl StrCell {
    const fn new() -> StrCell {
        StrCell {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
        }
    }

    fn set(&self, s: &'static str) {
        self.len.store(s.len(), Ordering::Relaxed);
        self.ptr.store(s.as_ptr().cast_mut(), Ordering::Release);
    }

    fn get(&self) -> Option<&'static str> {
        let ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            return None;
        }
        let len = self.len.load(Ordering::Relaxed);
        // SAFETY: `set` stored the pointer and length of a `&'static str` (len before ptr, with
        // release/acquire ordering), and such strings are never freed.
        Some(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) })
    }
}

const NAME_INDEX: usize = MAX_LABEL_NAMES * 2;
const VALUE_INDEX: usize = MAX_LABEL_VALUES * 2;

static NAMES: [StrCell; MAX_LABEL_NAMES] = [const { StrCell::new() }; MAX_LABEL_NAMES];
static NAME_SLOTS: [AtomicU64; NAME_INDEX] = [const { AtomicU64::new(0) }; NAME_INDEX];
static VALUE_KEYS: [StrCell; MAX_LABEL_VALUES] = [const { StrCell::new() }; MAX_LABEL_VALUES];
static VALUES: [StrCell; MAX_LABEL_VALUES] = [const { StrCell::new() }; MAX_LABEL_VALUES];
static VALUE_SLOTS: [AtomicU64; VALUE_INDEX] = [const { AtomicU64::new(0) }; VALUE_INDEX];

struct Counts {
    names: usize,
    values: usize,
}
static INSERT: Mutex<Counts> = Mutex::new(Counts {
    names: 2,
    values: 2,
});

/// FxHash-style mix of `bytes` into `seed`; never 0 in the high 48 bits' slot tag.
pub(crate) fn hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
    }
    (h ^ (h >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb) | (1 << 63)
}

/// Looks `hash` up in an index whose entries are `tag(48 bits) | id(16 bits)`; `eq` checks a
/// candidate id. Returns the id, or the index position where it may be inserted.
fn probe(index: &[AtomicU64], hash: u64, eq: impl Fn(u16) -> bool) -> Result<u16, Option<usize>> {
    let mask = index.len() - 1;
    let tag = hash & !0xFFFF;
    let mut i = (hash as usize) & mask;
    for _ in 0..index.len().min(64) {
        let e = index[i].load(Ordering::Acquire);
        if e == 0 {
            return Err(Some(i));
        }
        if e & !0xFFFF == tag && eq(e as u16) {
            return Ok(e as u16);
        }
        i = (i + 1) & mask;
    }
    Err(None)
}

fn lock() -> std::sync::MutexGuard<'static, Counts> {
    INSERT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The id of span name `name`, adding it if there is room.
pub(crate) fn name_id(name: &'static str) -> u16 {
    let hash = hash_bytes(0, name.as_bytes());
    let eq = |id: u16| NAMES[id as usize].get() == Some(name);
    if let Ok(id) = probe(&NAME_SLOTS, hash, eq) {
        return id;
    }
    let mut counts = lock();
    match probe(&NAME_SLOTS, hash, eq) {
        Ok(id) => id,
        Err(Some(pos)) if counts.names < MAX_LABEL_NAMES => {
            let id = counts.names as u16;
            counts.names += 1;
            NAMES[id as usize].set(name);
            NAME_SLOTS[pos].store((hash & !0xFFFF) | id as u64, Ordering::Release);
            id
        }
        Err(_) => ID_OTHER,
    }
}

/// The id of the pair `(field, value)`, adding it if there is room. Lock-free when the pair is
/// known already (the common case: one hash and one compare).
pub(crate) fn value_id(field: &'static str, value: &str) -> u16 {
    let value = truncate(value, MAX_LABEL_VALUE_BYTES);
    if let Some(id) = recent_get(field, value) {
        return id;
    }
    let id = value_id_slow(field, value);
    if id != ID_OTHER {
        if let Some(v) = VALUES[id as usize].get() {
            recent_put(field, v, id);
        }
    }
    id
}

/// Pairs this thread interned last: a hit costs a pointer and a byte compare instead of a
/// hash and an index probe. Only ids of pairs in the table are kept (never [`ID_OTHER`]), and
/// a table entry never changes, so a hit is always the table's answer.
#[derive(Clone, Copy)]
struct Recent {
    field: *const u8,
    field_len: usize,
    value: &'static str,
    id: u16,
}

const RECENT_WAYS: usize = 4;

const RECENT_NONE: Recent = Recent {
    field: std::ptr::null(),
    field_len: 0,
    value: "",
    id: ID_NONE,
};

thread_local! {
    static RECENT: [Cell<Recent>; RECENT_WAYS] = const { [const { Cell::new(RECENT_NONE) }; RECENT_WAYS] };
    static RECENT_NEXT: Cell<u8> = const { Cell::new(0) };
}

#[inline]
fn recent_get(field: &'static str, value: &str) -> Option<u16> {
    RECENT
        .try_with(|r| {
            r.iter().find_map(|e| {
                let e = e.get();
                (e.field == field.as_ptr()
                    && e.field_len == field.len()
                    && e.value.as_bytes() == value.as_bytes())
                .then_some(e.id)
            })
        })
        .ok()
        .flatten()
}

fn recent_put(field: &'static str, value: &'static str, id: u16) {
    let i = RECENT_NEXT
        .try_with(|n| {
            let i = n.get() as usize % RECENT_WAYS;
            n.set((i + 1) as u8);
            i
        })
        .unwrap_or(0);
    let _ = RECENT.try_with(|r| {
        r[i].set(Recent {
            field: field.as_ptr(),
            field_len: field.len(),
            value,
            id,
        })
    });
}

fn value_id_slow(field: &'static str, value: &str) -> u16 {
    let hash = hash_bytes(hash_bytes(0, field.as_bytes()), value.as_bytes());
    let eq = |id: u16| {
        VALUES[id as usize].get() == Some(value)
            && VALUE_KEYS[id as usize]
                .get()
                .is_some_and(|k| std::ptr::eq(k, field) || k == field)
    };
    match probe(&VALUE_SLOTS, hash, eq) {
        Ok(id) => return id,
        Err(None) => return ID_OTHER,
        Err(Some(_)) => {}
    }
    let mut counts = lock();
    match probe(&VALUE_SLOTS, hash, eq) {
        Ok(id) => id,
        Err(Some(pos)) if counts.values < MAX_LABEL_VALUES => {
            let id = counts.values as u16;
            counts.values += 1;
            let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
            VALUE_KEYS[id as usize].set(field);
            VALUES[id as usize].set(leaked);
            VALUE_SLOTS[pos].store((hash & !0xFFFF) | id as u64, Ordering::Release);
            id
        }
        Err(_) => ID_OTHER,
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The span name behind a name id.
pub(crate) fn name(id: u16) -> Option<&'static str> {
    match id {
        ID_NONE => None,
        ID_OTHER => Some(OTHER),
        id => NAMES.get(id as usize).and_then(StrCell::get),
    }
}

/// The `(field, value)` pair behind a value id; the field is `None` for [`OTHER`].
pub(crate) fn value(id: u16) -> Option<(Option<&'static str>, &'static str)> {
    match id {
        ID_NONE => None,
        ID_OTHER => Some((None, OTHER)),
        id => {
            let i = id as usize;
            let v = VALUES.get(i)?.get()?;
            Some((VALUE_KEYS[i].get(), v))
        }
    }
}
