//! Wall-clock profiles: every thread of the process sampled at a fixed wall-clock rate,
//! running or not, each sample labelled with the thread's state; symbolized into a
//! [`Profile`] that renders as pprof, folded text or an SVG flamegraph.
//!
//! # How sampling works
//!
//! A sampler thread (`prodbg-wall`) ticks `frequency` times a second. At each tick it lists
//! `/proc/self/task` (at most [`MAX_THREADS`](super::sampler::MAX_THREADS) threads, itself
//! excluded) and for each thread:
//!
//! 1. reads its scheduler state (`/proc/self/task/<tid>/stat`) and scheduler statistics
//!    (`schedstat`: CPU time, run-queue delay, times scheduled in);
//! 2. if the thread is not running and has not been scheduled in since its previous sample
//!    (same state letter, same count of times scheduled in), its stack and state cannot have
//!    changed: the sample reuses them, and the thread is not woken;
//! 3. otherwise, for a sleeping thread, reads the system call it sleeps in (`syscall`), maps
//!    letter and syscall to a [`ThreadState`](crate::stack::thread_state::ThreadState) (the table is in
//!    [`super::state`]), and asks the thread for its stack with the thread dump's real-time
//!    signal and handler ([`crate::stack::remote`]: the same framehop unwinder as the CPU
//!    profile, a preallocated slot, no allocation or lock in the handler), waiting at most
//!    [`ANSWER_TIMEOUT`](super::sampler::ANSWER_TIMEOUT). A thread that blocks the signal, is
//!    stopped or does not answer still gets its sample, with its state and a
//!    `[no stack: …]` frame.
//!
//! Each sample stands for `1 / frequency` seconds of that thread's wall-clock time. A tick
//! holds the capture slot while it runs ([`crate::stack::remote::Session`]), so a thread dump
//! taken during a wall profile waits at most one tick, and the tick after it may be late
//! (counted as missed). A tick that runs longer than its period (at least 20 ms, at most
//! 250 ms) leaves the remaining threads for the next tick (counted as skipped). The CPU
//! profiler uses `SIGPROF` and per-thread CPU timers, so both profiles can run at once.
//!
//! # Cost
//!
//! An idle thread (parked, sleeping, blocked) costs two small `/proc` reads per tick after its
//! first sample; a thread that ran since its previous sample costs three or four reads, a
//! signal and an unwind (on the target thread). `benches/wall_overhead.rs` measures it.
//!
//! Only one wall profile runs at a time per process (the second gets [`WallError::Busy`]).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::probes::one_at_a_time::{Held, OneAtATime};
use crate::stack::modules::ModuleSet;
use crate::stack::offline::pprof_mappings;
use crate::stack::profile::{Profile, Sample, ValueType};
use crate::stack::symbolize::{self as symbols, Symbols};
use crate::stack::Frame;

use super::sampler::{self, Labels, Stack};
use super::{MAX_FREQUENCY_HZ, MIN_FREQUENCY_HZ};
use crate::stack::thread_state::ThreadState;

/// Why a wall profile could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WallError {
    /// Another wall profile is running; it is due to finish in `remaining`.
    Busy { remaining: Duration },
    /// The sampler could not be started.
    Start(String),
    /// Sampling ran but the report could not be built or rendered.
    Report(String),
}

impl fmt::Display for WallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WallError::Busy { remaining } => write!(
                f,
                "a wall-clock profile is already running (one at a time per process); it ends in {} s — retry after that",
                remaining.as_secs().max(1)
            ),
            WallError::Start(m) => write!(f, "cannot start the wall-clock profiler: {m}"),
            WallError::Report(m) => write!(f, "cannot build the wall-clock profile: {m}"),
        }
    }
}

impl std::error::Error for WallError {}

/// Held while a profile runs, until the end of its requested duration.
static ACTIVE: OneAtATime = OneAtATime::new();

/// Whether a wall profile is running in this process now.
pub(crate) fn running() -> bool {
    ACTIVE.running()
}

/// The process-wide "busy" flag, held; cleared on drop.
type Busy = Held;

fn acquire(duration: Duration) -> Result<Busy, WallError> {
    ACTIVE
        .acquire(duration)
        .map_err(|remaining| WallError::Busy { remaining })
}

/// Starts sampling every thread at `frequency_hz` for (about) `duration`; the caller sleeps
/// `duration`, then stops. Blocking (prepares the unwinder).
pub(crate) fn start(duration: Duration, frequency_hz: u32) -> Result<RunningWall, WallError> {
    if !(MIN_FREQUENCY_HZ..=MAX_FREQUENCY_HZ).contains(&frequency_hz) {
        return Err(WallError::Start(format!(
            "frequency must be {MIN_FREQUENCY_HZ}..={MAX_FREQUENCY_HZ} Hz, got {frequency_hz}"
        )));
    }
    let busy = acquire(duration)?;
    let start_time = SystemTime::now();
    let started = Instant::now();
    let sampler = sampler::Sampler::start("prodbg-wall", frequency_hz).map_err(WallError::Start)?;
    tracing::info!(
        frequency_hz,
        duration_s = duration.as_secs_f64(),
        "wall profile started"
    );
    Ok(RunningWall {
        sampler: Some(sampler),
        frequency_hz,
        start_time,
        started,
        _busy: busy,
    })
}

/// A wall profile being taken. Dropping it stops sampling and frees the "busy" flag.
pub(crate) struct RunningWall {
    // Field order: the sampler stops before the busy flag is cleared.
    sampler: Option<sampler::Sampler>,
    frequency_hz: u32,
    start_time: SystemTime,
    started: Instant,
    _busy: Busy,
}

impl fmt::Debug for RunningWall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningWall")
            .field("frequency_hz", &self.frequency_hz)
            .finish_non_exhaustive()
    }
}

impl RunningWall {
    /// Stops sampling; symbolizes the stacks if `symbolize`. CPU-heavy and synchronous.
    pub(crate) fn stop(mut self, symbolize: bool) -> Result<Profile, WallError> {
        let t0 = Instant::now();
        let sampler = self
            .sampler
            .take()
            .ok_or_else(|| WallError::Report("profile already stopped".into()))?;
        let collected = sampler.stop();
        let duration = self.started.elapsed();
        let modules = ModuleSet::snapshot()
            .map_err(|e| WallError::Report(format!("reading the module list: {e}")))?;
        let sampler_cpu = collected.sampler_cpu;
        let profile = from_collected(
            collected,
            self.start_time,
            duration,
            self.frequency_hz,
            &modules,
            symbolize,
        );
        drop(modules);
        symbols::release_freed_memory();
        tracing::info!(
            samples = profile.total(0),
            stacks = profile.samples.len(),
            sampler_cpu_ms = sampler_cpu.as_secs_f64() * 1e3,
            stop_ms = t0.elapsed().as_secs_f64() * 1e3,
            "wall profile stopped"
        );
        Ok(profile)
    }
}

/// What a wall profile's samples carry: the count and the wall-clock time it stands for
/// (count × tick period; the default in `go tool pprof`).
const VALUE_TYPES: &[ValueType; 2] = &[
    ValueType::SAMPLES,
    ValueType {
        kind: "wall",
        unit: "nanoseconds",
    },
];

/// A profile of the wall-clock flight recorder's window `[start, end)`, sampled at
/// `frequency_hz`.
pub(crate) fn from_history(
    collected: sampler::Collected,
    (start, end): (SystemTime, SystemTime),
    frequency_hz: u32,
    symbolize: bool,
) -> Result<Profile, WallError> {
    let modules = ModuleSet::snapshot()
        .map_err(|e| WallError::Report(format!("reading the module list: {e}")))?;
    let duration = end.duration_since(start).unwrap_or_default();
    let mut p = from_collected(
        collected,
        start,
        duration,
        frequency_hz,
        &modules,
        symbolize,
    );
    drop(modules);
    symbols::release_freed_memory();
    p.describe = format!(
        "wall clock {} s recorded from {} at {frequency_hz} Hz (flight recorder)",
        duration.as_secs(),
        crate::encode::time::format(start)
    );
    p.figures
        .push(("x-prodbg-window-start", crate::encode::time::format(start)));
    p.figures
        .push(("x-prodbg-window-end", crate::encode::time::format(end)));
    Ok(p)
}

/// Builds the [`Profile`]: one sample per distinct (state, labels, stack), most-sampled first;
/// the state is the flamegraph's root frame (`[futex]`, `[io]` …) and the `state` label, the
/// thread's name and span the other labels.
fn from_collected(
    collected: sampler::Collected,
    start_time: SystemTime,
    duration: Duration,
    frequency_hz: u32,
    modules: &ModuleSet,
    symbolize: bool,
) -> Profile {
    let symbols = if symbolize {
        Symbols::resolve(
            modules,
            collected
                .entries
                .iter()
                .filter_map(|(k, _)| match &k.stack {
                    Stack::Frames { ips, .. } => Some(ips),
                    Stack::Missing(_) => None,
                })
                .flat_map(|ips| symbols::sampled_addresses(ips)),
        )
    } else {
        Symbols::default()
    };
    type Key = (ThreadState, Labels, Vec<Frame>);
    let mut merged: HashMap<Key, u64> = HashMap::new();
    for (key, count) in &collected.entries {
        let frames = match &key.stack {
            Stack::Frames { ips, truncated } => {
                symbols::sampled_stack(&symbols, ips, *truncated, symbolize)
            }
            Stack::Missing(why) => vec![Frame {
                function: Some(why.clone()),
                ..Frame::unknown(0)
            }],
        };
        *merged
            .entry((key.state, key.labels.clone(), frames))
            .or_default() += count;
    }
    let mut stacks: Vec<(Key, u64)> = merged.into_iter().collect();
    stacks.sort_by(|((sa, la, _), a), ((sb, lb, _), b)| {
        b.cmp(a).then_with(|| sa.cmp(sb)).then_with(|| la.cmp(lb))
    });
    let period = Profile::period_ns(frequency_hz);
    let samples = stacks
        .into_iter()
        .map(|((state, labels, frames), count)| {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            Sample {
                root: Some(state.root_frame()),
                frames,
                labels: std::iter::once(("state", state.name().to_string()))
                    .chain(labels)
                    .collect(),
                values: vec![count, count.saturating_mul(period)],
            }
        })
        .collect();
    let mut warnings = Vec::new();
    if let Some(why) = &collected.no_unwinder {
        warnings.push(format!("no stacks could be taken: {why}"));
    }
    if collected.missed_ticks > 0 {
        warnings.push(format!(
            "{} of {} ticks were late and skipped (the sampler fell behind, or waited for a thread dump)",
            collected.missed_ticks,
            collected.ticks + collected.missed_ticks
        ));
    }
    if collected.skipped > 0 {
        warnings.push(format!(
            "{} thread samples were not taken (more than {} threads, or a tick ran out of time)",
            collected.skipped,
            sampler::MAX_THREADS
        ));
    }
    if collected.timeouts > 0 {
        warnings.push(format!(
            "{} times a thread did not answer the signal within {} ms; those samples have a [no stack] frame",
            collected.timeouts,
            sampler::ANSWER_TIMEOUT.as_millis()
        ));
    }
    if collected.table_full > 0 {
        warnings.push(format!(
            "more than {} distinct stacks: {} samples are under [sample table full]",
            sampler::MAX_ENTRIES,
            collected.table_full
        ));
    }
    if !collected.schedstat {
        warnings.push(
            "the kernel keeps no scheduler statistics (/proc/self/task/<tid>/schedstat): every thread was signalled at every tick, and no thread is labelled runnable"
                .into(),
        );
    }
    Profile {
        samples,
        describe: format!(
            "wall clock {} s at {frequency_hz} Hz, up to {} threads",
            duration.as_secs(),
            collected.max_threads
        ),
        figures: vec![
            ("x-prodbg-ticks", collected.ticks.to_string()),
            ("x-prodbg-requested-hz", frequency_hz.to_string()),
            ("x-prodbg-threads", collected.max_threads.to_string()),
            ("x-prodbg-signalled", collected.signalled.to_string()),
            (
                "x-prodbg-sampler-cpu-us",
                collected.sampler_cpu.as_micros().to_string(),
            ),
        ],
        warnings,
        ..Profile::sampled(
            "wall",
            VALUE_TYPES,
            frequency_hz,
            (start_time, duration),
            symbolize,
            pprof_mappings(modules),
        )
    }
}
