//! The CPU flight recorder: the process's CPU samples of the last minutes, always on, so that
//! `?since=5m` answers at once about a spike that is already over.
//!
//! The recorder owns the process's one CPU sampler (the same timers, signal handler and
//! unwinder as an on-demand profile), running at a low rate ([`FlightRecorder`], default
//! 19 Hz of each thread's CPU time). Every [`SLICE`] its thread (`prodbg-flight`) swaps the
//! sampler's table for a fresh one ([`Sampler::rotate`]) and keeps what it read as a slice:
//! raw addresses, interned (each distinct stack stored once however many slices hold it),
//! symbolized only when someone asks. Slices older than the retention are dropped with the
//! stacks only they held, so memory follows the history's distinct stacks, not its length.
//!
//! An on-demand profile taken while the recorder runs leases the sampler ([`Recorder::lease`]):
//! the current slice is closed, the rate raised to the request's, and at the end the lease's
//! own slice is the profile (and stays in the history). The recorder's sampler looks for new
//! threads every 250 ms (an on-demand one every 20 ms), so a thread's first quarter second is
//! not sampled, leased or not. One recorder serves every admin server
//! of the process; it stops (timers deleted, handler restored) when the last one goes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::SystemTime;

use super::flight::{FlightRecorder, SLICE};
use super::sampler::{Collected, RawStack, Sampler, RECORDER_RESCAN};
use crate::recorder::ticker::Ticker;
use crate::stack::interned::Interned;
use crate::stack::labels::Labels;

/// Distinct stacks the history holds at most; past it a slice's new stacks are counted as
/// dropped samples, never stored.
pub(crate) const MAX_STACKS: usize = 65_536;

/// One interned stack: its addresses (leaf first) and whether its unwind stopped early.
type StackKey = (Arc<[u64]>, bool);

/// One distinct (thread, labels, stack) of a slice and how often it was sampled.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stack: u32,
    thread: u32,
    tid: i32,
    count: u32,
    labels: u64,
}

/// What was sampled over `[start, end)` at `period_ns` per sample.
struct Slice {
    start: SystemTime,
    end: SystemTime,
    period_ns: i64,
    entries: Vec<Entry>,
    truncated: u64,
    overflow: u64,
}

struct State {
    sampler: Option<Sampler>,
    /// When the slice being sampled now started.
    slice_start: SystemTime,
    /// Samples per second now (raised while a lease holds it).
    frequency_hz: u32,
    leased: bool,
    slices: VecDeque<Slice>,
    /// Distinct stacks and thread names, each stored once for all the slices holding them.
    stacks: Interned<StackKey>,
    names: Interned<Arc<str>>,
    /// Samples not kept because the history held [`MAX_STACKS`] distinct stacks.
    dropped_samples: u64,
}

/// The process's CPU flight recorder (see the module docs).
pub(crate) struct Recorder {
    opts: FlightRecorder,
    state: Mutex<State>,
    /// The `prodbg-flight` thread rotating a slice every [`SLICE`]; it holds no reference to
    /// the recorder between slices, so the last admin server's drop stops it at once.
    ticker: Mutex<Option<Ticker>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// The recorder every admin server of the process shares, while one holds it.
static SHARED: Mutex<Weak<Recorder>> = Mutex::new(Weak::new());

/// What a window of the history holds.
pub(crate) struct Window {
    /// Start of the first slice in the window.
    pub(crate) start: SystemTime,
    /// End of the last.
    pub(crate) end: SystemTime,
    /// Each stack with its sample count, and the CPU nanoseconds those samples stand for.
    pub(crate) stacks: Vec<(RawStack, i64)>,
    /// Samples whose unwind stopped early, and samples lost to a full table, in the window.
    pub(crate) truncated: u64,
    pub(crate) overflow: u64,
    /// The slowest rate any slice in the window was sampled at, Hz.
    pub(crate) frequency_hz: u32,
}

impl Recorder {
    /// The process's recorder with `opts`: the running one if an admin server already started
    /// it, else a new one. `None` when `opts` is off or the sampler cannot start (the host
    /// uses `SIGPROF`, an on-demand profile holds the sampler): the reason is logged.
    pub(crate) fn shared(opts: FlightRecorder) -> Option<Arc<Recorder>> {
        if !opts.on {
            return None;
        }
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = shared.upgrade() {
            return Some(r);
        }
        let sampler = match Sampler::start(opts.frequency_hz, RECORDER_RESCAN) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "prodbg", error = ?e, "the CPU flight recorder is off: its sampler could not start");
                return None;
            }
        };
        let recorder = Arc::new(Recorder {
            opts,
            state: Mutex::new(State {
                sampler: Some(sampler),
                slice_start: SystemTime::now(),
                frequency_hz: opts.frequency_hz,
                leased: false,
                slices: VecDeque::new(),
                stacks: Interned::new(MAX_STACKS),
                names: Interned::new(MAX_STACKS),
                dropped_samples: 0,
            }),
            ticker: Mutex::new(None),
        });
        let ticker = Ticker::start(
            "prodbg-flight",
            SLICE,
            Arc::downgrade(&recorder),
            |r: &Recorder| {
                let mut st = r.lock();
                if !st.leased {
                    r.rotate(&mut st);
                }
            },
        );
        match ticker {
            Ok(t) => {
                *recorder
                    .ticker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(t)
            }
            Err(e) => {
                tracing::warn!(target: "prodbg", error = %e, "the CPU flight recorder is off: no thread");
                return None;
            }
        }
        *shared = Arc::downgrade(&recorder);
        tracing::info!(
            target: "prodbg",
            frequency_hz = opts.frequency_hz,
            retention_s = opts.retention.as_secs(),
            "CPU flight recorder started"
        );
        Some(recorder)
    }

    /// The process's recorder, if one runs.
    pub(crate) fn current() -> Option<Arc<Recorder>> {
        SHARED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
    }

    /// The settings it runs with.
    pub(crate) fn options(&self) -> FlightRecorder {
        self.opts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the slice being sampled now and keeps it (unless a lease holds the sampler).
    fn rotate(&self, st: &mut State) {
        let Some(sampler) = &st.sampler else { return };
        let now = SystemTime::now();
        match sampler.rotate() {
            Ok(c) => {
                let period = 1_000_000_000 / i64::from(st.frequency_hz.max(1));
                let start = st.slice_start;
                self.keep(st, start, now, period, c);
            }
            Err(e) => tracing::debug!(error = %e, "flight recorder: rotation failed"),
        }
        st.slice_start = now;
        self.trim(st, now);
    }

    fn keep(&self, st: &mut State, start: SystemTime, end: SystemTime, period: i64, c: Collected) {
        let mut entries = Vec::with_capacity(c.stacks.len());
        for raw in &c.stacks {
            let name = if raw.thread.is_empty() {
                format!("thread-{}", raw.tid)
            } else {
                raw.thread.clone()
            };
            let Some(stack) = st.stacks.insert((Arc::from(&raw.ips[..]), raw.truncated)) else {
                st.dropped_samples += raw.count;
                continue;
            };
            let Some(thread) = st.names.insert(Arc::from(name.as_str())) else {
                st.stacks.release(stack);
                st.dropped_samples += raw.count;
                continue;
            };
            entries.push(Entry {
                stack,
                thread,
                tid: raw.tid,
                count: u32::try_from(raw.count).unwrap_or(u32::MAX),
                labels: raw.labels.to_bits(),
            });
        }
        entries.shrink_to_fit();
        st.slices.push_back(Slice {
            start,
            end,
            period_ns: period,
            entries,
            truncated: c.truncated,
            overflow: c.overflow,
        });
    }

    /// Drops the slices that ended before the retention.
    fn trim(&self, st: &mut State, now: SystemTime) {
        let oldest = now.checked_sub(self.opts.retention).unwrap_or(now);
        while st.slices.front().is_some_and(|s| s.end < oldest) {
            let slice = st.slices.pop_front().expect("checked");
            for e in &slice.entries {
                st.stacks.release(e.stack);
                st.names.release(e.thread);
            }
        }
    }

    /// The history between `from` and `to`: every slice overlapping it (whole slices: the
    /// window's real start and end are returned). The slice being sampled is closed first, so
    /// the last seconds are in. `Err` names the retention when nothing overlaps.
    pub(crate) fn window(&self, from: SystemTime, to: SystemTime) -> Result<Window, String> {
        let mut st = self.lock();
        if !st.leased {
            self.rotate(&mut st);
        }
        let mut out = Window {
            start: to,
            end: from,
            stacks: Vec::new(),
            truncated: 0,
            overflow: 0,
            frequency_hz: u32::MAX,
        };
        let mut merged: HashMap<(u32, u32, i32, u64), (u64, i64)> = HashMap::new();
        for s in st.slices.iter().filter(|s| s.end > from && s.start < to) {
            out.start = out.start.min(s.start);
            out.end = out.end.max(s.end);
            out.truncated += s.truncated;
            out.overflow += s.overflow;
            let hz = (1_000_000_000 / s.period_ns.max(1)) as u32;
            out.frequency_hz = out.frequency_hz.min(hz);
            for e in &s.entries {
                let v = merged
                    .entry((e.stack, e.thread, e.tid, e.labels))
                    .or_default();
                v.0 += u64::from(e.count);
                v.1 += i64::from(e.count) * s.period_ns;
            }
        }
        if merged.is_empty() && out.start >= out.end {
            let kept = st.slices.front().map(|s| s.start);
            return Err(match kept {
                Some(first) => format!(
                    "the flight recorder holds {} s of history (from {}); retention {} s",
                    SystemTime::now()
                        .duration_since(first)
                        .unwrap_or_default()
                        .as_secs(),
                    crate::encode::time::format(first),
                    self.opts.retention.as_secs()
                ),
                None => "the flight recorder holds no history yet".to_string(),
            });
        }
        for ((stack, thread, tid, labels), (count, nanos)) in merged {
            let e = Entry {
                stack,
                thread,
                tid,
                count: u32::try_from(count).unwrap_or(u32::MAX),
                labels,
            };
            if let Some(mut raw) = raw(&st, &e) {
                raw.count = count;
                out.stacks.push((raw, nanos));
            }
        }
        if out.frequency_hz == u32::MAX {
            out.frequency_hz = st.frequency_hz;
        }
        Ok(out)
    }

    /// Takes the sampler for an on-demand profile at `frequency_hz`: the slice being sampled
    /// is closed and kept, the rate raised. `None` if another lease holds it.
    pub(crate) fn lease(self: &Arc<Self>, frequency_hz: u32) -> Option<Lease> {
        let mut st = self.lock();
        if st.leased || st.sampler.is_none() {
            return None;
        }
        self.rotate(&mut st);
        st.leased = true;
        st.frequency_hz = frequency_hz;
        if let Some(s) = &st.sampler {
            s.set_frequency(frequency_hz);
        }
        Some(Lease {
            recorder: self.clone(),
            done: false,
        })
    }

    /// How much history it holds: slices, distinct stacks, and the bytes they take, roughly.
    pub(crate) fn footprint(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let entries: usize = st
            .slices
            .iter()
            .map(|s| s.entries.capacity() * std::mem::size_of::<Entry>())
            .sum();
        let stacks: usize = st.stacks.values().map(|(ips, _)| ips.len() * 8 + 16).sum();
        let names: usize = st.names.values().map(|n| n.len() + 16).sum();
        (
            st.slices.len(),
            st.stacks.len(),
            entries + stacks + names + st.stacks.table_bytes() + st.names.table_bytes(),
        )
    }
}

/// The stack `e` names, with its thread's name (`None` if either was freed meanwhile).
fn raw(st: &State, e: &Entry) -> Option<RawStack> {
    let (ips, truncated) = st.stacks.get(e.stack)?;
    let name = st.names.get(e.thread)?;
    Some(RawStack {
        tid: e.tid,
        thread: name.to_string(),
        ips: ips.to_vec(),
        truncated: *truncated,
        labels: Labels::from_bits(e.labels),
        count: u64::from(e.count),
    })
}

/// An on-demand profile's hold on the recorder's sampler; see [`Recorder::lease`]. Dropped
/// without [`finish`](Lease::finish), it gives the sampler back at the recorder's rate.
pub(crate) struct Lease {
    recorder: Arc<Recorder>,
    done: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Lease {
    /// Ends the lease: what was sampled since it began (kept in the history too), and the
    /// sampler goes back to the recorder's rate.
    pub(crate) fn finish(mut self) -> Result<Collected, String> {
        self.done = true;
        let r = &self.recorder;
        let mut st = r.lock();
        let out = match &st.sampler {
            Some(s) => s.rotate(),
            None => Err("the flight recorder stopped".to_string()),
        };
        let now = SystemTime::now();
        if let Ok(c) = &out {
            let period = 1_000_000_000 / i64::from(st.frequency_hz.max(1));
            let start = st.slice_start;
            let copy = Collected {
                stacks: c
                    .stacks
                    .iter()
                    .map(|s| RawStack {
                        tid: s.tid,
                        thread: s.thread.clone(),
                        ips: s.ips.clone(),
                        truncated: s.truncated,
                        labels: s.labels,
                        count: s.count,
                    })
                    .collect(),
                truncated: c.truncated,
                overflow: c.overflow,
                signals: c.signals,
                arm_failures: c.arm_failures,
                stuck: c.stuck,
                handler_kept: false,
            };
            r.keep(&mut st, start, now, period, copy);
        }
        give_back(r, &mut st, now);
        out
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            let r = &self.recorder;
            let mut st = r.lock();
            r.rotate_leased(&mut st);
            give_back(r, &mut st, SystemTime::now());
        }
    }
}

impl Recorder {
    /// Closes a lease's slice into the history (the lease was dropped unfinished).
    fn rotate_leased(&self, st: &mut State) {
        if let Some(s) = &st.sampler {
            if let Ok(c) = s.rotate() {
                let period = 1_000_000_000 / i64::from(st.frequency_hz.max(1));
                let start = st.slice_start;
                self.keep(st, start, SystemTime::now(), period, c);
            }
        }
    }
}

/// The sampler back at the recorder's own rate, a new slice from `now`.
fn give_back(r: &Recorder, st: &mut State, now: SystemTime) {
    st.leased = false;
    st.frequency_hz = r.opts.frequency_hz;
    if let Some(s) = &st.sampler {
        s.set_frequency(r.opts.frequency_hz);
    }
    st.slice_start = now;
    r.trim(st, now);
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The thread first (joined), then the sampler (timers deleted, handler restored).
        drop(
            self.ticker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let sampler = self.lock().sampler.take();
        if let Some(s) = sampler {
            drop(s.stop());
        }
        tracing::info!(target: "prodbg", "CPU flight recorder stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recorder(retention: Duration) -> Recorder {
        Recorder {
            opts: FlightRecorder::default().retention(retention),
            state: Mutex::new(State {
                sampler: None,
                slice_start: SystemTime::now(),
                frequency_hz: 19,
                leased: false,
                slices: VecDeque::new(),
                stacks: Interned::new(MAX_STACKS),
                names: Interned::new(MAX_STACKS),
                dropped_samples: 0,
            }),
            ticker: Mutex::new(None),
        }
    }

    fn collected(stacks: &[(u64, u64)]) -> Collected {
        Collected {
            stacks: stacks
                .iter()
                .map(|&(leaf, count)| RawStack {
                    tid: 7,
                    thread: "worker".into(),
                    ips: vec![leaf, 0x1000, 0x2000],
                    truncated: false,
                    labels: Labels::NONE,
                    count,
                })
                .collect(),
            truncated: 0,
            overflow: 0,
            signals: 0,
            arm_failures: 0,
            stuck: false,
            handler_kept: false,
        }
    }

    /// Slices at 19 Hz and at 99 Hz add up in CPU time; the window is the slices' real span.
    #[test]
    fn a_window_merges_slices_by_stack_and_cpu_time() {
        let r = recorder(Duration::from_secs(600));
        let t0 = SystemTime::now() - Duration::from_secs(30);
        let s = Duration::from_secs(10);
        let mut st = r.lock();
        r.keep(
            &mut st,
            t0,
            t0 + s,
            1_000_000_000 / 19,
            collected(&[(0xa, 19)]),
        );
        r.keep(
            &mut st,
            t0 + s,
            t0 + 2 * s,
            1_000_000_000 / 99,
            collected(&[(0xa, 99), (0xb, 1)]),
        );
        st.leased = true; // no rotation: there is no sampler
        drop(st);
        let w = r.window(t0, t0 + 2 * s).unwrap();
        assert_eq!((w.start, w.end), (t0, t0 + 2 * s));
        assert_eq!(w.frequency_hz, 19);
        let a = w.stacks.iter().find(|(raw, _)| raw.ips[0] == 0xa).unwrap();
        assert_eq!(a.0.count, 118);
        let expected = 19 * (1_000_000_000 / 19) + 99 * (1_000_000_000 / 99);
        assert_eq!(a.1, expected, "about two seconds of CPU");
        assert_eq!(r.footprint().1, 2, "two distinct stacks, each stored once");
        // Outside the history: the error names what is kept.
        let old = t0 - Duration::from_secs(3600);
        let Err(e) = r.window(old, old + s) else {
            panic!("a window outside the history")
        };
        assert!(e.contains("retention 600 s"), "{e}");
    }

    /// Old slices go with the stacks only they held: the history does not grow past its
    /// retention however long it runs.
    #[test]
    fn the_retention_bound_holds_and_frees_stacks() {
        let r = recorder(Duration::from_secs(60));
        let mut st = r.lock();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let s = Duration::from_secs(10);
        let mut peak = 0;
        for i in 0..360u32 {
            let start = t0 + s * i;
            // One stack shared by every slice, one of its own per slice.
            let c = collected(&[(0xa, 5), (0x10_0000 + u64::from(i), 1)]);
            r.keep(&mut st, start, start + s, 1_000_000_000 / 19, c);
            r.trim(&mut st, start + s);
            peak = peak.max(st.slices.len());
        }
        assert!(peak <= 7, "{peak} slices kept for 60 s of retention");
        assert!(st.stacks.len() <= 8, "{} stacks", st.stacks.len());
        assert!(
            st.stacks.table_bytes() < 16 * 1024,
            "the stack table reuses freed ids"
        );
        drop(st);
        let (slices, stacks, bytes) = r.footprint();
        assert!(
            slices <= 7 && stacks <= 8 && bytes < 64 * 1024,
            "{slices} {stacks} {bytes}"
        );
    }

    #[test]
    fn the_environment_setting_is_parsed_or_refused_clearly() {
        assert_eq!(FlightRecorder::parse("off").unwrap(), FlightRecorder::off());
        let f = FlightRecorder::parse("on,hz=49,retention=5m").unwrap();
        assert_eq!(
            (f.frequency_hz, f.retention),
            (49, Duration::from_secs(300))
        );
        for bad in [
            "",
            "yes",
            "on,hz=0",
            "on,hz=101",
            "on,retention=2h",
            "on,retention=5",
            "on,x=1",
        ] {
            let e = FlightRecorder::parse(bad).unwrap_err();
            assert!(e.contains("expected off, or on"), "{bad}: {e}");
        }
    }
}
