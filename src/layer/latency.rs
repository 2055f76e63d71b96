//! Latency of recently closed spans, per (target, span name), over a sliding window of one-minute
//! buckets. Counters are sharded by thread so that two threads closing spans of the same name
//! do not write the same cache line; a shard held by one thread alone
//! ([`thread::owns_shard`](super::thread::owns_shard)) is updated with plain loads and stores,
//! the shared ones with atomic adds. The slowest few spans of each name and minute are kept
//! once, for all shards.
//!
//! Memory: per name and shard ([`SHARDS`]), 5 minutes × ~540 bytes of counters (allocated on
//! the name's first close on that shard); per name, 5 minutes × the slowest few spans with
//! their fields.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::histogram::{Histogram, BUCKETS};
use super::thread::{self, SHARDS};

/// Minutes in the window (the current, partial one included).
pub(crate) const WINDOW_MINUTES: usize = 5;
const MINUTE_NS: u64 = 60_000_000_000;

/// One slow span kept with its fields.
#[derive(Clone)]
pub(crate) struct Slow {
    pub(crate) id: u64,
    pub(crate) ns: u64,
    pub(crate) end: u64,
    pub(crate) tid: i32,
    pub(crate) error: bool,
    pub(crate) meta: &'static tracing::Metadata<'static>,
    pub(crate) fields: Vec<u8>,
}

/// One minute of one name on one shard.
struct Minute {
    /// Minute number + 1 this bucket holds; 0 = never used.
    minute: AtomicU64,
    errors: AtomicU64,
    max: AtomicU64,
    /// The floor of this minute's slowest list as this shard's owner last read it (never above
    /// the list's real floor, which only rises within a minute): a close at or below it skips
    /// the shared list without reading it. Kept only on owned shards; 0 elsewhere.
    slow_floor: AtomicU64,
    hist: Histogram,
}

impl Minute {
    fn new() -> Minute {
        Minute {
            minute: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max: AtomicU64::new(0),
            slow_floor: AtomicU64::new(0),
            hist: Histogram::new(),
        }
    }
}

struct NameStats {
    minutes: [Minute; WINDOW_MINUTES],
}

/// One minute's slowest spans of one name, shared by all shards: it is only written when a
/// span beats the floor, which after the first few closes of a minute is rare.
struct SlowMinute {
    minute: AtomicU64,
    /// Durations at or below this do not make the list (when it is full).
    floor: AtomicU64,
    list: Mutex<Vec<Slow>>,
}

impl SlowMinute {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slow>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct SlowStats {
    minutes: [SlowMinute; WINDOW_MINUTES],
}

/// Per-name, per-shard statistics, allocated on a name's first close on that shard.
pub(crate) struct Latency {
    /// `shard * names + stat`: one flat array, one load fewer per close than a box per shard.
    stats: Box<[OnceLock<Box<NameStats>>]>,
    names: usize,
    slow: Box<[OnceLock<Box<SlowStats>>]>,
    keep_slowest: usize,
}

/// A window's figures for one name, merged over shards.
pub(crate) struct Merged {
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) max: u64,
    pub(crate) hist: [u64; BUCKETS],
    pub(crate) slowest: Vec<Slow>,
}

impl Latency {
    pub(crate) fn new(names: usize, keep_slowest: usize) -> Latency {
        Latency {
            stats: (0..SHARDS * names).map(|_| OnceLock::new()).collect(),
            names,
            slow: (0..names).map(|_| OnceLock::new()).collect(),
            keep_slowest,
        }
    }

    /// The statistics cell of latency slot `stat` on `shard`, if both are in range.
    #[inline]
    fn cell(&self, shard: usize, stat: usize) -> Option<&OnceLock<Box<NameStats>>> {
        (stat < self.names)
            .then(|| self.stats.get(shard * self.names + stat))
            .flatten()
    }

    /// Records one closed span of latency slot `stat`; `fields` is called only when the span
    /// makes its minute's slowest list.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn record(
        &self,
        shard: usize,
        stat: usize,
        end_ns: u64,
        ns: u64,
        error: bool,
        slow: impl FnOnce() -> Slow,
    ) {
        let shard = shard % SHARDS;
        let Some(cell) = self.cell(shard, stat) else {
            return;
        };
        let stats = cell.get_or_init(|| {
            Box::new(NameStats {
                minutes: std::array::from_fn(|_| Minute::new()),
            })
        });
        let m = end_ns / MINUTE_NS;
        let b = &stats.minutes[(m % WINDOW_MINUTES as u64) as usize];
        let tag = m + 1;
        let cur = b.minute.load(Ordering::Acquire);
        if thread::owns_shard(shard) {
            // The calling thread is this shard's only writer.
            if cur != tag {
                b.minute.store(tag, Ordering::Release);
                b.errors.store(0, Ordering::Relaxed);
                b.max.store(0, Ordering::Relaxed);
                b.slow_floor.store(0, Ordering::Relaxed);
                b.hist.clear();
            }
            if error {
                let e = b.errors.load(Ordering::Relaxed);
                b.errors.store(e + 1, Ordering::Relaxed);
            }
            if ns > b.max.load(Ordering::Relaxed) {
                b.max.store(ns, Ordering::Relaxed);
            }
            b.hist.record_owned(ns);
            if ns <= b.slow_floor.load(Ordering::Relaxed) {
                return;
            }
        } else {
            if cur != tag
                && b.minute
                    .compare_exchange(cur, tag, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                b.errors.store(0, Ordering::Relaxed);
                b.max.store(0, Ordering::Relaxed);
                b.hist.clear();
            }
            if error {
                b.errors.fetch_add(1, Ordering::Relaxed);
            }
            if ns > b.max.load(Ordering::Relaxed) {
                b.max.fetch_max(ns, Ordering::Relaxed);
            }
            b.hist.record(ns);
        }
        if self.keep_slowest == 0 {
            return;
        }
        let Some(cell) = self.slow.get(stat) else {
            return;
        };
        let sm = cell.get_or_init(|| {
            Box::new(SlowStats {
                minutes: std::array::from_fn(|_| SlowMinute {
                    minute: AtomicU64::new(0),
                    floor: AtomicU64::new(0),
                    list: Mutex::new(Vec::new()),
                }),
            })
        });
        let sb = &sm.minutes[(m % WINDOW_MINUTES as u64) as usize];
        if sb.minute.load(Ordering::Acquire) == tag {
            let floor = sb.floor.load(Ordering::Relaxed);
            if thread::owns_shard(shard) {
                // Read after the list's minute: this minute's floor (or a lower, earlier one).
                b.slow_floor.store(floor, Ordering::Relaxed);
            }
            if ns <= floor {
                return;
            }
        }
        let mut list = sb.lock();
        if sb.minute.load(Ordering::Acquire) != tag {
            list.clear();
            sb.floor.store(0, Ordering::Relaxed);
            sb.minute.store(tag, Ordering::Release);
        }
        if ns <= sb.floor.load(Ordering::Relaxed) {
            return;
        }
        let s = slow();
        let pos = list.iter().position(|x| x.ns < s.ns).unwrap_or(list.len());
        list.insert(pos, s);
        list.truncate(self.keep_slowest);
        if list.len() == self.keep_slowest {
            sb.floor
                .store(list.last().map_or(0, |x| x.ns), Ordering::Relaxed);
        }
    }

    /// The window ending in the minute of `now_ns`, for latency slot `stat`.
    pub(crate) fn merged(&self, stat: usize, now_ns: u64) -> Merged {
        let now_m = now_ns / MINUTE_NS;
        let mut out = Merged {
            count: 0,
            errors: 0,
            max: 0,
            hist: [0; BUCKETS],
            slowest: Vec::new(),
        };
        for shard in 0..SHARDS {
            let Some(stats) = self.cell(shard, stat).and_then(OnceLock::get) else {
                continue;
            };
            for b in &stats.minutes {
                let tag = b.minute.load(Ordering::Acquire);
                if tag == 0 || tag - 1 + (WINDOW_MINUTES as u64) <= now_m || tag - 1 > now_m {
                    continue;
                }
                out.errors += b.errors.load(Ordering::Relaxed);
                out.max = out.max.max(b.max.load(Ordering::Relaxed));
                b.hist.add_to(&mut out.hist);
            }
        }
        if let Some(sm) = self.slow.get(stat).and_then(OnceLock::get) {
            for b in &sm.minutes {
                let tag = b.minute.load(Ordering::Acquire);
                if tag == 0 || tag - 1 + (WINDOW_MINUTES as u64) <= now_m || tag - 1 > now_m {
                    continue;
                }
                out.slowest.extend(b.lock().iter().cloned());
            }
        }
        out.count = out.hist.iter().sum();
        out.slowest.sort_by_key(|s| std::cmp::Reverse(s.ns));
        out.slowest.truncate(self.keep_slowest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::thread::OWNED_SHARDS;

    fn meta() -> &'static tracing::Metadata<'static> {
        // A disabled span still carries its callsite's metadata.
        tracing::info_span!("latency_unit")
            .metadata()
            .expect("the callsite's metadata")
    }

    fn slow(ns: u64) -> Slow {
        Slow {
            id: ns,
            ns,
            end: 0,
            tid: 1,
            error: false,
            meta: meta(),
            fields: Vec::new(),
        }
    }

    fn slowest(l: &Latency, now: u64) -> Vec<u64> {
        l.merged(0, now).slowest.iter().map(|s| s.ns).collect()
    }

    /// The owned shard skips closes at or below the floor it last read; the list must still be
    /// exactly the slowest, and a new minute in the same bucket must not inherit an old floor.
    #[test]
    fn the_slowest_list_is_exact_on_owned_and_shared_shards_across_minutes() {
        for shard in [0, OWNED_SHARDS] {
            let l = Latency::new(1, 2);
            let t = 10 * MINUTE_NS;
            for ns in [
                10_000, 20_000, 30_000, 15_000, 25_000, 24_000, 26_000, 26_000,
            ] {
                l.record(shard, 0, t, ns, false, || slow(ns));
            }
            assert_eq!(slowest(&l, t), vec![30_000, 26_000], "shard {shard}");
            assert_eq!(l.merged(0, t).count, 8, "shard {shard}");
            // Five minutes on, the same bucket holds a new minute: a fast close makes its list.
            let later = t + WINDOW_MINUTES as u64 * MINUTE_NS;
            l.record(shard, 0, later, 5_000, false, || slow(5_000));
            assert_eq!(slowest(&l, later), vec![5_000], "shard {shard}");
            assert_eq!(l.merged(0, later).count, 1, "shard {shard}");
        }
    }

    /// A close on another shard raises the shared floor; the owned shard's older, lower copy
    /// only sends it to the shared list, which still decides.
    #[test]
    fn a_floor_raised_on_another_shard_is_respected() {
        let l = Latency::new(1, 2);
        let t = 3 * MINUTE_NS;
        for ns in [10_000, 20_000] {
            l.record(0, 0, t, ns, false, || slow(ns));
        }
        for ns in [50_000, 60_000] {
            l.record(1, 0, t, ns, false, || slow(ns));
        }
        l.record(0, 0, t, 40_000, false, || slow(40_000));
        l.record(0, 0, t, 55_000, false, || slow(55_000));
        assert_eq!(slowest(&l, t), vec![60_000, 55_000]);
        assert_eq!(l.merged(0, t).count, 6);
    }
}
