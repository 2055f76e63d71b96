//! A small fixed-bucket log-linear histogram of durations in nanoseconds.
//!
//! Four buckets per power of two from 1.024 µs to 2^42 ns (~73 min), plus one below and one
//! above: 130 `u32` counters. A quantile is reported as its bucket's midpoint, within ±11 % of
//! the true value (and never above the largest duration seen).

use std::sync::atomic::{AtomicU32, Ordering};

const SUB_BITS: u32 = 2;
const SUB: usize = 1 << SUB_BITS;
const MIN_EXP: u32 = 10;
const MAX_EXP: u32 = 42;
/// Number of buckets.
pub(crate) const BUCKETS: usize = 2 + (MAX_EXP - MIN_EXP) as usize * SUB;

/// The bucket of a duration.
#[inline]
pub(crate) fn index(ns: u64) -> usize {
    if ns < 1 << MIN_EXP {
        return 0;
    }
    let e = 63 - ns.leading_zeros();
    if e >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (ns >> (e - SUB_BITS)) as usize & (SUB - 1);
    1 + (e - MIN_EXP) as usize * SUB + sub
}

/// The smallest duration in bucket `i`.
pub(crate) fn lower(i: usize) -> u64 {
    match i {
        0 => 0,
        i if i >= BUCKETS - 1 => 1 << MAX_EXP,
        i => {
            let e = MIN_EXP + ((i - 1) / SUB) as u32;
            let sub = ((i - 1) % SUB) as u64;
            (SUB as u64 + sub) << (e - SUB_BITS)
        }
    }
}

/// Counters per bucket, updated with relaxed atomic adds (or, by a sole writer, relaxed loads
/// and stores).
pub(crate) struct Histogram {
    counts: [AtomicU32; BUCKETS],
}

impl Histogram {
    pub(crate) const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU32::new(0) }; BUCKETS],
        }
    }

    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        self.counts[index(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// [`record`](Self::record) for a histogram only the calling thread writes: a plain load
    /// and store, no read-modify-write (readers still see whole counts).
    #[inline]
    pub(crate) fn record_owned(&self, ns: u64) {
        let c = &self.counts[index(ns)];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_to(&self, sum: &mut [u64; BUCKETS]) {
        for (s, c) in sum.iter_mut().zip(&self.counts) {
            *s += c.load(Ordering::Relaxed) as u64;
        }
    }
}

/// The `q` quantile (0..=1) of merged counts, in nanoseconds; `None` when empty. `max` (the
/// largest duration seen, if known) caps the answer.
pub(crate) fn quantile(counts: &[u64; BUCKETS], q: f64, max: Option<u64>) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let lo = lower(i);
            let hi = if i + 1 < BUCKETS {
                lower(i + 1)
            } else {
                lo * 2
            };
            let mid = lo + (hi - lo) / 2;
            return Some(max.map_or(mid, |m| mid.min(m)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_their_values() {
        for i in 1..BUCKETS - 1 {
            assert!(lower(i) < lower(i + 1), "{i}");
            assert_eq!(index(lower(i)), i);
            assert_eq!(index(lower(i + 1) - 1), i);
        }
        assert_eq!(index(5), 0);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_bucket_error() {
        let h = Histogram::new();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000);
        }
        let mut sum = [0; BUCKETS];
        h.add_to(&mut sum);
        for (q, want) in [(0.5, 500e6), (0.9, 900e6), (0.99, 990e6)] {
            let got = quantile(&sum, q, None).unwrap_or(0) as f64;
            assert!((got / want - 1.0).abs() < 0.13, "q{q}: {got} vs {want}");
        }
        assert_eq!(quantile(&[0; BUCKETS], 0.5, None), None);
    }
}
