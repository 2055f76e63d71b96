//! Per-callsite facts the hot path needs, computed once per callsite and cached lock-free:
//! the span name's label id, the layer's latency slot for that name, and which fields are
//! label, `error` or `otel.status_code` fields.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tracing::Metadata;

use super::fields::{Special, NO_FIELD};
use crate::stack::labels;

/// Callsites whose facts are cached; past it they are recomputed per span (slower, counted).
pub(crate) const MAX_CALLSITES: usize = 4096;
const INDEX: usize = MAX_CALLSITES * 2;
const PROBES: usize = 64;
/// "No latency slot": the name came after [`Options::max_span_names`](super::Options::max_span_names).
pub(crate) const NO_STAT: u16 = u16::MAX;

/// What the layer knows about one callsite.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Info {
    pub(crate) name_id: u16,
    pub(crate) stat: u16,
    pub(crate) special: Special,
}

impl Info {
    pub(crate) fn pack(self) -> u64 {
        let s = self.special;
        let otel = if s.otel_status == NO_FIELD {
            0x7F
        } else {
            s.otel_status & 0x7F
        };
        1 << 63
            | self.name_id as u64
            | (self.stat as u64) << 16
            | (s.label[0] as u64) << 32
            | (s.label[1] as u64) << 40
            | (s.error as u64) << 48
            | (otel as u64) << 56
    }

    pub(crate) fn unpack(w: u64) -> Info {
        let otel = ((w >> 56) & 0x7F) as u8;
        Info {
            name_id: w as u16,
            stat: (w >> 16) as u16,
            special: Special {
                label: [(w >> 32) as u8, (w >> 40) as u8],
                error: (w >> 48) as u8,
                otel_status: if otel == 0x7F { NO_FIELD } else { otel },
            },
        }
    }
}

/// One cached callsite: its metadata's address (0 = free) and its packed facts, side by side
/// so that a lookup reads one cache line.
struct Entry {
    key: AtomicUsize,
    val: AtomicU64,
}

type StatSlots = (
    HashMap<(&'static str, u16), u16>,
    Vec<(&'static str, &'static str)>,
);

pub(crate) struct Callsites {
    entries: Box<[Entry]>,
    label_fields: [Option<Box<str>>; 2],
    max_names: usize,
    /// (target, name id) -> latency slot, and the (target, name) pairs in slot order.
    stats: Mutex<StatSlots>,
    pub(crate) uncached: AtomicU64,
}

impl Callsites {
    pub(crate) fn new(label_fields: &[String], max_names: usize) -> Callsites {
        let mut lf: [Option<Box<str>>; 2] = [None, None];
        for (slot, f) in lf.iter_mut().zip(label_fields) {
            *slot = Some(f.as_str().into());
        }
        Callsites {
            entries: (0..INDEX)
                .map(|_| Entry {
                    key: AtomicUsize::new(0),
                    val: AtomicU64::new(0),
                })
                .collect(),
            label_fields: lf,
            max_names: max_names.min(NO_STAT as usize),
            stats: Mutex::new((HashMap::new(), Vec::new())),
            uncached: AtomicU64::new(0),
        }
    }

    /// The facts of a callsite, packed (see [`Info::pack`]; [`unpack`] gives them back).
    /// Handing back the one word, not the unpacked struct, keeps the hot path from storing
    /// the struct in halves and reloading it whole (a store-forwarding stall).
    #[inline]
    pub(crate) fn get(&self, meta: &'static Metadata<'static>) -> u64 {
        let key = meta as *const Metadata<'static> as usize;
        let mut i = home(key);
        for _ in 0..PROBES {
            let e = &self.entries[i];
            let k = e.key.load(Ordering::Acquire);
            if k == key {
                return e.val.load(Ordering::Relaxed);
            }
            if k == 0 {
                break;
            }
            i = (i + 1) % INDEX;
        }
        self.insert(meta, key)
    }

    #[cold]
    fn insert(&self, meta: &'static Metadata<'static>, key: usize) -> u64 {
        let info = self.compute(meta).pack();
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = home(key);
        for _ in 0..PROBES {
            let e = &self.entries[i];
            let k = e.key.load(Ordering::Acquire);
            if k == key {
                return info;
            }
            if k == 0 {
                e.val.store(info, Ordering::Relaxed);
                e.key.store(key, Ordering::Release);
                drop(stats);
                return info;
            }
            i = (i + 1) % INDEX;
        }
        drop(stats);
        self.uncached.fetch_add(1, Ordering::Relaxed);
        info
    }

    fn compute(&self, meta: &'static Metadata<'static>) -> Info {
        let mut special = Special::NONE;
        for (i, f) in meta.fields().iter().enumerate().take(NO_FIELD as usize - 1) {
            let name = f.name();
            for (k, lf) in self.label_fields.iter().enumerate() {
                if lf.as_deref() == Some(name) {
                    special.label[k] = i as u8;
                }
            }
            if name == "error" {
                special.error = i as u8;
            } else if name == "otel.status_code" && i < 0x7F {
                special.otel_status = i as u8;
            }
        }
        let (name_id, stat) = if meta.is_span() {
            let name_id = labels::name_id(meta.name());
            (name_id, self.stat_slot(meta.target(), name_id, meta.name()))
        } else {
            (labels::ID_NONE, NO_STAT)
        };
        Info {
            name_id,
            stat,
            special,
        }
    }

    /// The latency slot of spans named `name` in `target`: two crates' `request` spans, or two
    /// modules' `#[instrument]`ed `apply`, keep apart.
    fn stat_slot(&self, target: &'static str, name_id: u16, name: &'static str) -> u16 {
        let mut g = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let (map, names) = &mut *g;
        if let Some(&s) = map.get(&(target, name_id)) {
            return s;
        }
        if names.len() >= self.max_names || name_id == labels::ID_OTHER {
            return NO_STAT;
        }
        let s = names.len() as u16;
        names.push((target, name));
        map.insert((target, name_id), s);
        s
    }

    /// The (target, span name) of each latency slot, in slot order.
    pub(crate) fn stat_names(&self) -> Vec<(&'static str, &'static str)> {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

fn home(key: usize) -> usize {
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % INDEX
}

/// The latency slot in a packed word.
#[inline]
pub(crate) fn stat_of(w: u64) -> u16 {
    (w >> 16) as u16
}

pub(crate) fn unpack(w: u64) -> Info {
    Info::unpack(w)
}
