//! The timeline of vital signs: a bounded set of series, each a fine ring (1 s resolution,
//! the last 10 minutes) and a coarse ring (10 s resolution, the last hour).
//!
//! Bounds: at most [`MAX_SERIES`] series; a new series past the cap is dropped (counted in
//! [`Window::dropped_series`]) unless a series silent for the whole coarse retention can make
//! room. Each series holds [`FINE_POINTS`] + [`COARSE_POINTS`] points of 12 bytes (a `u64`
//! unix-ms timestamp and an `f32` value), allocated when the series is first seen and never
//! grown: [`BYTES_PER_SERIES`] = 11 520 bytes (plus its name), so at most about 2.9 MiB for
//! [`MAX_SERIES`] series.
//!
//! A gauge's point is its value; a counter's is its rate per second since its previous reading
//! (the first reading gives no point; a total that went down resets the baseline and gives no
//! point). A series not reported in a tick gets no point there: a gap, never a fake 0. A coarse
//! point is the **mean** of the fine points of its 10 s bucket (a mean of rates is the rate over
//! the bucket; a spike shows in the fine ring), stamped with the bucket's start.

use std::collections::BTreeMap;

use serde::Serialize;

/// Most series kept.
pub(crate) const MAX_SERIES: usize = 256;
/// Points of the fine ring: one a second, 10 minutes.
pub(crate) const FINE_POINTS: usize = 600;
/// Points of the coarse ring: one per 10 s, 1 hour.
pub(crate) const COARSE_POINTS: usize = 360;
/// The coarse ring's step, in milliseconds.
pub(crate) const COARSE_STEP_MS: u64 = 10_000;
/// What the fine ring covers at one point a second, in milliseconds (10 minutes).
pub(crate) const FINE_RETENTION_MS: u64 = FINE_POINTS as u64 * 1000;
/// What the coarse ring covers, in milliseconds (1 hour): the longest window answered.
pub(crate) const RETENTION_MS: u64 = COARSE_POINTS as u64 * COARSE_STEP_MS;
/// Bytes of one point: a `u64` timestamp and an `f32` value, kept in two arrays.
pub(crate) const POINT_BYTES: usize = 8 + 4;
/// Bytes of the two rings of one series (its name aside).
pub(crate) const BYTES_PER_SERIES: usize = (FINE_POINTS + COARSE_POINTS) * POINT_BYTES;
// The bound the module's doc and docs/endpoints.md state.
const _: () = assert!(BYTES_PER_SERIES == 11_520);

/// One reading fed to [`Timeline::tick`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    /// The series id.
    pub(crate) name: &'a str,
    /// The unit of the stored points.
    pub(crate) unit: &'static str,
    /// `true` for a monotone total: the point is its rate per second.
    pub(crate) counter: bool,
    /// The level, or the total.
    pub(crate) value: f64,
}

/// A fixed-capacity ring of `(unix ms, value)` points, oldest first.
#[derive(Debug)]
struct Ring {
    t_ms: Vec<u64>,
    value: Vec<f32>,
    /// Where the next point goes once the ring is full (the oldest point).
    head: usize,
    cap: usize,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring {
            t_ms: Vec::with_capacity(cap),
            value: Vec::with_capacity(cap),
            head: 0,
            cap,
        }
    }

    fn push(&mut self, t_ms: u64, value: f32) {
        if self.t_ms.len() < self.cap {
            self.t_ms.push(t_ms);
            self.value.push(value);
        } else {
            self.t_ms[self.head] = t_ms;
            self.value[self.head] = value;
            self.head = (self.head + 1) % self.cap;
        }
    }

    /// Points oldest first.
    fn iter(&self) -> impl Iterator<Item = (u64, f32)> + '_ {
        let order = (self.head..self.t_ms.len()).chain(0..self.head);
        order.map(|i| (self.t_ms[i], self.value[i]))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.t_ms.len()
    }
}

/// The fine points of the coarse bucket being filled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    start_ms: u64,
    sum: f64,
    n: u32,
}

/// One series: its unit, its rings, and for a counter its previous total.
#[derive(Debug)]
struct Series {
    unit: &'static str,
    counter: bool,
    fine: Ring,
    coarse: Ring,
    bucket: Option<Bucket>,
    /// A counter's previous reading: `(unix ms, total)`.
    last_total: Option<(u64, f64)>,
    /// When it was last reported, unix ms.
    last_seen_ms: u64,
}

impl Series {
    fn new(unit: &'static str, counter: bool) -> Series {
        Series {
            unit,
            counter,
            fine: Ring::new(FINE_POINTS),
            coarse: Ring::new(COARSE_POINTS),
            bucket: None,
            last_total: None,
            last_seen_ms: 0,
        }
    }

    fn record(&mut self, t_ms: u64, value: f64) {
        self.last_seen_ms = t_ms;
        let point = if self.counter {
            let previous = self.last_total.replace((t_ms, value));
            match previous {
                Some((t0, v0)) if t_ms > t0 && value >= v0 => {
                    Some((value - v0) / ((t_ms - t0) as f64 / 1000.0))
                }
                _ => None,
            }
        } else {
            Some(value)
        };
        if let Some(v) = point {
            self.point(t_ms, v);
        }
    }

    fn point(&mut self, t_ms: u64, v: f64) {
        self.fine.push(t_ms, v as f32);
        let start_ms = t_ms - t_ms % COARSE_STEP_MS;
        match &mut self.bucket {
            Some(b) if b.start_ms == start_ms => {
                b.sum += v;
                b.n += 1;
            }
            slot => {
                if let Some(done) = slot.take() {
                    self.coarse.push(done.start_ms, mean(&done));
                }
                *slot = Some(Bucket {
                    start_ms,
                    sum: v,
                    n: 1,
                });
            }
        }
    }

    /// Points within `[from_ms, to_ms]`: fine ones for `step_s == 1`, else coarse ones with
    /// the bucket being filled as the last.
    fn points(&self, from_ms: u64, to_ms: u64, fine: bool) -> Vec<(u64, f32)> {
        let within = |&(t, _): &(u64, f32)| t >= from_ms && t <= to_ms;
        if fine {
            self.fine.iter().filter(within).collect()
        } else {
            let pending = self.bucket.map(|b| (b.start_ms, mean(&b)));
            self.coarse.iter().chain(pending).filter(within).collect()
        }
    }
}

fn mean(b: &Bucket) -> f32 {
    (b.sum / f64::from(b.n.max(1))) as f32
}

/// One series in a [`Window`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeriesPoints {
    /// The series id, e.g. `rss_bytes`.
    pub(crate) name: String,
    /// The unit of its values: `ratio`, `bytes`, `count`, `per_second` or `cores`.
    pub(crate) unit: &'static str,
    /// `[unix ms, value]`, oldest first; a missing second is a gap.
    pub(crate) points: Vec<(u64, f32)>,
}

/// The series over a time window: the `/debug/timeline` body.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Window {
    /// The window's start, unix ms.
    pub(crate) start_ms: u64,
    /// The window's end, unix ms.
    pub(crate) end_ms: u64,
    /// Seconds between points: 1 when the window is within the fine ring's 10 minutes, else
    /// 10 (each point the mean of its 10 s, stamped with the bucket's start).
    pub(crate) step_s: u64,
    /// Every series, sorted by name (a series with no point in the window has none).
    pub(crate) series: Vec<SeriesPoints>,
    /// Series reported in the last tick that were not kept: the timeline holds
    /// [`MAX_SERIES`] already.
    pub(crate) dropped_series: u64,
}

/// The bounded set of series. Not synchronized: the server keeps it behind a lock.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    series: BTreeMap<String, Series>,
    dropped_series: u64,
}

impl Timeline {
    /// An empty timeline.
    pub(crate) fn new() -> Timeline {
        Timeline::default()
    }

    /// Records one tick's readings, taken at `t_ms` (unix ms). A series past the cap is
    /// dropped and counted; a name reported twice in one tick keeps the first reading.
    pub(crate) fn tick<'a>(&mut self, t_ms: u64, readings: impl IntoIterator<Item = Reading<'a>>) {
        let mut dropped = 0;
        for r in readings {
            if !r.value.is_finite() {
                continue;
            }
            if let Some(s) = self.series.get_mut(r.name) {
                if s.last_seen_ms != t_ms {
                    s.record(t_ms, r.value);
                }
                continue;
            }
            if self.series.len() >= MAX_SERIES && !self.evict_silent(t_ms) {
                dropped += 1;
                continue;
            }
            let mut s = Series::new(r.unit, r.counter);
            s.record(t_ms, r.value);
            self.series.insert(r.name.to_string(), s);
        }
        self.dropped_series = dropped;
    }

    /// Forgets one series not reported for the whole retention, if any; whether it did.
    fn evict_silent(&mut self, now_ms: u64) -> bool {
        let silent = self
            .series
            .iter()
            .find(|(_, s)| now_ms.saturating_sub(s.last_seen_ms) > RETENTION_MS)
            .map(|(name, _)| name.clone());
        silent.is_some_and(|name| self.series.remove(&name).is_some())
    }

    /// The series between `from_ms` and `to_ms` (unix ms), with `now_ms` deciding the step:
    /// 1 s when `from_ms` is within the fine ring's 10 minutes before `now_ms`, else 10 s.
    pub(crate) fn window(&self, from_ms: u64, to_ms: u64, now_ms: u64) -> Window {
        let fine = now_ms.saturating_sub(from_ms) <= FINE_RETENTION_MS;
        Window {
            start_ms: from_ms,
            end_ms: to_ms,
            step_s: if fine { 1 } else { COARSE_STEP_MS / 1000 },
            series: self
                .series
                .iter()
                .map(|(name, s)| SeriesPoints {
                    name: name.clone(),
                    unit: s.unit,
                    points: s.points(from_ms, to_ms, fine),
                })
                .collect(),
            dropped_series: self.dropped_series,
        }
    }

    /// Series kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &str, value: f64) -> Reading<'_> {
        Reading {
            name,
            unit: "bytes",
            counter: false,
            value,
        }
    }

    fn counter(name: &str, value: f64) -> Reading<'_> {
        Reading {
            name,
            unit: "cores",
            counter: true,
            value,
        }
    }

    const T0: u64 = 1_700_000_000_000;

    /// Every point of `name`, fine or coarse.
    fn points(tl: &Timeline, name: &str, fine: bool) -> Vec<(u64, f32)> {
        let now = if fine { 0 } else { u64::MAX };
        let w = tl.window(0, u64::MAX, now);
        assert_eq!(w.step_s, if fine { 1 } else { 10 });
        w.series
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.points)
            .unwrap_or_default()
    }

    #[test]
    fn counters_become_rates_and_the_first_reading_gives_none() {
        let mut tl = Timeline::new();
        tl.tick(T0, [counter("cpu", 10.0)]);
        assert!(points(&tl, "cpu", true).is_empty());
        tl.tick(T0 + 1000, [counter("cpu", 10.5)]);
        tl.tick(T0 + 3000, [counter("cpu", 12.5)]);
        assert_eq!(
            points(&tl, "cpu", true),
            vec![(T0 + 1000, 0.5), (T0 + 3000, 1.0)]
        );
        // A total that went down (a reset) gives no point and a new baseline.
        tl.tick(T0 + 4000, [counter("cpu", 1.0)]);
        tl.tick(T0 + 5000, [counter("cpu", 3.0)]);
        let p = points(&tl, "cpu", true);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], (T0 + 5000, 2.0));
    }

    #[test]
    fn a_series_not_reported_has_a_gap_not_a_zero() {
        let mut tl = Timeline::new();
        tl.tick(T0, [gauge("rss_bytes", 5.0), gauge("queue", 1.0)]);
        tl.tick(T0 + 1000, [gauge("rss_bytes", 6.0)]);
        tl.tick(T0 + 2000, [gauge("rss_bytes", 7.0), gauge("queue", 3.0)]);
        assert_eq!(
            points(&tl, "queue", true),
            vec![(T0, 1.0), (T0 + 2000, 3.0)]
        );
        assert_eq!(points(&tl, "rss_bytes", true).len(), 3);
    }

    #[test]
    fn coarse_points_are_the_mean_of_their_ten_seconds() {
        let mut tl = Timeline::new();
        let base = T0 - T0 % COARSE_STEP_MS;
        for i in 0..25u64 {
            tl.tick(base + i * 1000, [gauge("g", i as f64)]);
        }
        let coarse = points(&tl, "g", false);
        // Two closed buckets (0..=9, 10..=19) and the one being filled (20..=24).
        assert_eq!(
            coarse,
            vec![
                (base, 4.5),
                (base + COARSE_STEP_MS, 14.5),
                (base + 2 * COARSE_STEP_MS, 22.0)
            ]
        );
    }

    #[test]
    fn the_step_is_fine_within_ten_minutes_and_coarse_beyond() {
        let mut tl = Timeline::new();
        tl.tick(T0, [gauge("g", 1.0)]);
        assert_eq!(tl.window(T0 - 60_000, T0, T0).step_s, 1);
        assert_eq!(tl.window(T0 - FINE_RETENTION_MS, T0, T0).step_s, 1);
        assert_eq!(tl.window(T0 - FINE_RETENTION_MS - 1, T0, T0).step_s, 10);
        let w = tl.window(T0 - 1000, T0 - 500, T0);
        assert!(w.series[0].points.is_empty(), "outside the window");
    }

    #[test]
    fn the_series_cap_drops_new_series_and_counts_them() {
        let mut tl = Timeline::new();
        let names: Vec<String> = (0..MAX_SERIES + 3).map(|i| format!("s{i}")).collect();
        tl.tick(T0, names.iter().map(|n| gauge(n, 1.0)));
        assert_eq!(tl.len(), MAX_SERIES);
        assert_eq!(tl.window(T0, T0, T0).dropped_series, 3);
        tl.tick(T0 + 1000, names.iter().take(2).map(|n| gauge(n, 1.0)));
        assert_eq!(tl.window(T0, T0, T0).dropped_series, 0);
        // A series silent for the whole retention makes room for a new one.
        let later = T0 + RETENTION_MS + 2000;
        tl.tick(later, [gauge("new", 1.0)]);
        assert_eq!(tl.len(), MAX_SERIES);
        assert_eq!(tl.window(later, later, later).dropped_series, 0);
        assert_eq!(
            points(&tl, "new", false),
            vec![(later - later % 10_000, 1.0)]
        );
    }

    #[test]
    fn memory_stays_within_the_retention() {
        let mut tl = Timeline::new();
        tl.tick(T0, [gauge("g", 0.0)]);
        let caps = |tl: &Timeline| {
            let s = &tl.series["g"];
            (
                s.fine.t_ms.capacity(),
                s.fine.value.capacity(),
                s.coarse.t_ms.capacity(),
                s.coarse.value.capacity(),
            )
        };
        let before = caps(&tl);
        assert!(before.0 >= FINE_POINTS && before.2 >= COARSE_POINTS);
        // Two hours of ticks: both rings wrap.
        for i in 1..7200u64 {
            tl.tick(T0 + i * 1000, [gauge("g", i as f64)]);
        }
        let s = &tl.series["g"];
        assert_eq!(s.fine.len(), FINE_POINTS);
        assert_eq!(s.coarse.len(), COARSE_POINTS);
        assert_eq!(caps(&tl), before, "the rings never grow");
        // The fine ring holds the last 600 seconds, oldest first.
        let fine: Vec<(u64, f32)> = s.fine.iter().collect();
        assert_eq!(fine.first().unwrap().0, T0 + 6600 * 1000);
        assert_eq!(fine.last().unwrap().0, T0 + 7199 * 1000);
        assert!(fine.windows(2).all(|w| w[0].0 < w[1].0));
        let coarse: Vec<(u64, f32)> = s.coarse.iter().collect();
        assert!(coarse.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
