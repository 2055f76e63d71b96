//! The wall-clock flight recorder: every thread's state and stack sampled at a low rate
//! ([`RATE_HZ`]) for the CPU flight recorder's retention, so "where were the threads waiting
//! three minutes ago" has an answer (`/debug/pprof/wall?since=3m`).
//!
//! It runs the wall-clock sampler ([`Sampler`], thread `prodbg-wall-rec`) in slices of
//! [`SLICE`]: a thread (`prodbg-wflight`) stops it at the end of each slice, keeps what it collected (raw
//! addresses; symbolized only when asked) and starts the next. At 1 Hz an idle thread costs
//! two small `/proc` reads a second and no signal; a thread that ran costs a signal and an
//! unwind. Each distinct (state, labels, stack) is stored once for all the slices that hold it
//! (a thread parked at the same place for minutes costs one entry), and slices older than the
//! retention are dropped with what only they held. An on-demand wall profile runs its own
//! sampler meanwhile (the two take turns for each thread's stack).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use super::sampler::{Collected, SampleKey, Sampler};
use crate::probes::cpu::FlightRecorder;
use crate::probes::cpu::SLICE;
use crate::recorder::ticker::Ticker;
use crate::stack::interned::Interned;

/// Ticks per second of the wall-clock history.
pub(crate) const RATE_HZ: u32 = 1;

/// Distinct (state, labels, stack) samples the history holds at most; past it a slice's new
/// ones are counted as lost (`table_full`), never stored.
const MAX_KEYS: usize = 65_536;

/// What was sampled over `[start, end)`: the sampler's counters, and each distinct sample as
/// an id into the history's table with its count.
struct Slice {
    start: SystemTime,
    end: SystemTime,
    counters: Collected,
    entries: Vec<(u32, u64)>,
}

struct State {
    sampler: Option<(Sampler, SystemTime)>,
    slices: VecDeque<Slice>,
    /// Each distinct sample stored once for all the slices holding it.
    keys: Interned<SampleKey>,
}

/// The process's wall-clock flight recorder (see the module docs).
pub(crate) struct WallRecorder {
    retention: Duration,
    state: Mutex<State>,
    /// The `prodbg-wflight` thread closing a slice every [`SLICE`].
    ticker: Mutex<Option<Ticker>>,
}

impl std::fmt::Debug for WallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WallRecorder")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

static SHARED: Mutex<Weak<WallRecorder>> = Mutex::new(Weak::new());

impl WallRecorder {
    /// The process's recorder: the running one, or a new one when `opts` is on. `None` when
    /// off or when its thread cannot start (logged).
    pub(crate) fn shared(opts: FlightRecorder) -> Option<Arc<WallRecorder>> {
        if !opts.on {
            return None;
        }
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = shared.upgrade() {
            return Some(r);
        }
        let r = Arc::new(WallRecorder {
            retention: opts.retention,
            state: Mutex::new(State {
                sampler: None,
                slices: VecDeque::new(),
                keys: Interned::new(MAX_KEYS),
            }),
            ticker: Mutex::new(None),
        });
        r.rotate(&mut r.lock(), false);
        let ticker = Ticker::start(
            "prodbg-wflight",
            SLICE,
            Arc::downgrade(&r),
            |r: &WallRecorder| r.rotate(&mut r.lock(), false),
        );
        match ticker {
            Ok(t) => *r.ticker.lock().unwrap_or_else(PoisonError::into_inner) = Some(t),
            Err(e) => {
                tracing::warn!(target: "prodbg", error = %e, "the wall-clock flight recorder is off: no thread");
                return None;
            }
        }
        *shared = Arc::downgrade(&r);
        Some(r)
    }

    /// The process's recorder, if one runs.
    pub(crate) fn current() -> Option<Arc<WallRecorder>> {
        SHARED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
    }

    /// How much history it keeps.
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the slice being sampled (keeping it) and, unless `last`, starts the next.
    fn rotate(&self, st: &mut State, last: bool) {
        let now = SystemTime::now();
        if let Some((sampler, start)) = st.sampler.take() {
            let mut counters = sampler.stop();
            let mut entries = Vec::with_capacity(counters.entries.len());
            for (key, n) in std::mem::take(&mut counters.entries) {
                match st.keys.insert(key) {
                    Some(id) => entries.push((id, n)),
                    None => counters.table_full += n,
                }
            }
            st.slices.push_back(Slice {
                start,
                end: now,
                counters,
                entries,
            });
        }
        let oldest = now.checked_sub(self.retention).unwrap_or(now);
        while st.slices.front().is_some_and(|s| s.end < oldest) {
            let slice = st.slices.pop_front().expect("checked");
            for (id, _) in slice.entries {
                st.keys.release(id);
            }
        }
        if !last {
            match Sampler::start("prodbg-wall-rec", RATE_HZ) {
                Ok(s) => st.sampler = Some((s, now)),
                Err(e) => {
                    tracing::debug!(error = %e, "wall flight recorder: sampler did not start")
                }
            }
        }
    }

    /// The history between `from` and `to` (whole slices; the slice being sampled is closed
    /// first): merged samples, the window's real start and end. `Err` names the retention.
    pub(crate) fn window(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<(Collected, SystemTime, SystemTime), String> {
        let mut st = self.lock();
        self.rotate(&mut st, false);
        let mut merged: HashMap<u32, u64> = HashMap::new();
        let mut out = Collected {
            schedstat: true,
            ..Collected::default()
        };
        let (mut start, mut end) = (to, from);
        for s in st.slices.iter().filter(|s| s.end > from && s.start < to) {
            start = start.min(s.start);
            end = end.max(s.end);
            let c = &s.counters;
            for &(id, n) in &s.entries {
                *merged.entry(id).or_default() += n;
            }
            out.ticks += c.ticks;
            out.missed_ticks += c.missed_ticks;
            out.samples += c.samples;
            out.signalled += c.signalled;
            out.timeouts += c.timeouts;
            out.skipped += c.skipped;
            out.table_full += c.table_full;
            out.max_threads = out.max_threads.max(c.max_threads);
            out.sampler_cpu += c.sampler_cpu;
            out.schedstat &= c.schedstat;
            if out.no_unwinder.is_none() {
                out.no_unwinder.clone_from(&c.no_unwinder);
            }
        }
        if start >= end {
            return Err(format!(
                "the wall-clock flight recorder holds nothing in that window; retention {} s",
                self.retention.as_secs()
            ));
        }
        out.entries = merged
            .into_iter()
            .filter_map(|(id, n)| Some((st.keys.get(id)?.clone(), n)))
            .collect();
        Ok((out, start, end))
    }
}

impl Drop for WallRecorder {
    fn drop(&mut self) {
        drop(
            self.ticker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let sampler = self.lock().sampler.take();
        if let Some((s, _)) = sampler {
            drop(s.stop());
        }
    }
}
