//! Wall-clock profiles: every thread of the process sampled at a fixed wall-clock rate,
//! running or not, each sample labelled with the thread's state; symbolized into a
//! [`WallProfile`] that renders as pprof, folded text or an SVG flamegraph.
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

use crate::encode::{flamegraph, pprof as pb};
use crate::probes::one_at_a_time::{Held, OneAtATime};
use crate::stack::modules::ModuleSet;
use crate::stack::offline::{pprof_locations, pprof_mappings, PprofMapping};
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
    let sampler = sampler::Sampler::start(frequency_hz).map_err(WallError::Start)?;
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
    pub(crate) fn stop(mut self, symbolize: bool) -> Result<WallProfile, WallError> {
        let t0 = Instant::now();
        let sampler = self
            .sampler
            .take()
            .ok_or_else(|| WallError::Report("profile already stopped".into()))?;
        let collected = sampler.stop();
        let duration = self.started.elapsed();
        let modules = ModuleSet::snapshot()
            .map_err(|e| WallError::Report(format!("reading the module list: {e}")))?;
        let profile = WallProfile::from_collected(
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
            samples = profile.samples,
            stacks = profile.stacks.len(),
            sampler_cpu_ms = profile.sampler_cpu.as_secs_f64() * 1e3,
            stop_ms = t0.elapsed().as_secs_f64() * 1e3,
            "wall profile stopped"
        );
        Ok(profile)
    }
}

/// One distinct (state, labels, stack) and how often it was sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WallStack {
    /// The thread's state at these samples.
    pub(crate) state: ThreadState,
    /// `thread` (the thread's name), then any other label.
    pub(crate) labels: Labels,
    /// Frames, innermost first.
    pub(crate) frames: Vec<Frame>,
    /// Samples that saw it.
    pub(crate) samples: u64,
}

#[cfg(test)]
impl WallStack {
    /// The value of label `key`, if the stack has it.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A finished wall-clock profile.
#[derive(Debug, Clone)]
pub(crate) struct WallProfile {
    /// When sampling started.
    pub(crate) start_time: SystemTime,
    /// How long it ran.
    pub(crate) duration: Duration,
    /// Ticks per second.
    pub(crate) frequency_hz: u32,
    /// Thread samples (one per thread per tick).
    pub(crate) samples: u64,
    /// Ticks that ran.
    pub(crate) ticks: u64,
    /// Stacks taken by signal (the rest reused a thread's previous stack).
    pub(crate) signalled: u64,
    /// Most threads sampled in one tick.
    pub(crate) max_threads: usize,
    /// CPU time of the sampler thread.
    pub(crate) sampler_cpu: Duration,
    /// Whether frames carry names.
    pub(crate) symbolized: bool,
    /// The pprof mappings.
    pub(crate) mappings: Vec<PprofMapping>,
    /// Distinct stacks, most-sampled first.
    pub(crate) stacks: Vec<WallStack>,
    /// Problems worth telling the reader.
    pub(crate) warnings: Vec<String>,
}

impl WallProfile {
    fn from_collected(
        collected: sampler::Collected,
        start_time: SystemTime,
        duration: Duration,
        frequency_hz: u32,
        modules: &ModuleSet,
        symbolize: bool,
    ) -> WallProfile {
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
        let mut merged: HashMap<(ThreadState, Labels, Vec<Frame>), u64> = HashMap::new();
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
        let mut stacks: Vec<WallStack> = merged
            .into_iter()
            .map(|((state, labels, frames), samples)| WallStack {
                state,
                labels,
                frames,
                samples,
            })
            .collect();
        stacks.sort_by(|a, b| {
            b.samples
                .cmp(&a.samples)
                .then_with(|| a.state.cmp(&b.state))
                .then_with(|| a.labels.cmp(&b.labels))
        });
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
        WallProfile {
            start_time,
            duration,
            frequency_hz,
            samples: collected.samples,
            ticks: collected.ticks,
            signalled: collected.signalled,
            max_threads: collected.max_threads,
            sampler_cpu: collected.sampler_cpu,
            symbolized: symbolize,
            mappings: pprof_mappings(modules),
            stacks,
            warnings,
        }
    }

    /// Wall-clock nanoseconds one sample stands for: the tick period.
    pub(crate) fn nanos_per_sample(&self) -> i64 {
        1_000_000_000 / i64::from(self.frequency_hz.max(1))
    }

    /// Gzipped `profile.proto`: sample types `samples/count` and `wall/nanoseconds` (count ×
    /// period; the default), period `1e9 / frequency` ns of `wall`, real mappings, and labels
    /// `state` and `thread` on every sample.
    pub(crate) fn pprof_gz(&self) -> Result<Vec<u8>, WallError> {
        let period = self.nanos_per_sample();
        let mut b = pb::ProfileBuilder::new(
            &[("samples", "count"), ("wall", "nanoseconds")],
            ("wall", "nanoseconds"),
            period,
        );
        b.default_sample_type("wall");
        for m in &self.mappings {
            b.mapping_spec(&pb::MappingSpec {
                start: m.memory_start,
                limit: m.memory_limit,
                offset: m.file_offset,
                path: &m.filename,
                build_id: m.build_id.as_deref().unwrap_or(""),
                symbolized: self.symbolized,
            });
        }
        for stack in &self.stacks {
            let locations = pprof_locations(&mut b, &stack.frames, self.symbolized);
            let samples = i64::try_from(stack.samples).unwrap_or(i64::MAX);
            let mut labels: Vec<(&str, &str)> = vec![("state", stack.state.name())];
            labels.extend(stack.labels.iter().map(|(k, v)| (*k, v.as_str())));
            b.sample(
                locations,
                vec![samples, samples.saturating_mul(period)],
                &labels,
            );
        }
        let start = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let profile = b.finish(
            i64::try_from(start.as_nanos()).unwrap_or(0),
            i64::try_from(self.duration.as_nanos()).unwrap_or(i64::MAX),
        );
        Ok(pb::encode_gz(&profile))
    }

    /// Keeps only the samples taken inside a `tracing` span named `span` (`?span=`).
    pub(crate) fn retain_span(&mut self, span: &str) {
        self.stacks
            .retain(|s| s.labels.iter().any(|(k, v)| *k == "span" && v == span));
        self.samples = self.stacks.iter().map(|s| s.samples).sum();
    }

    /// Folded stacks, `[state];outer;…;leaf count` per line.
    pub(crate) fn folded(&self) -> String {
        flamegraph::folded_text(&self.folded_stacks())
    }

    /// An SVG flamegraph titled `title`; the state is the root frame.
    pub(crate) fn svg(&self, title: &str) -> Result<Vec<u8>, WallError> {
        flamegraph::svg(&self.folded_stacks(), title, "samples").map_err(WallError::Report)
    }

    fn folded_stacks(&self) -> Vec<flamegraph::FoldedStack> {
        self.stacks
            .iter()
            .map(|s| {
                let frames = std::iter::once(s.state.root_frame())
                    .chain(s.frames.iter().rev().map(|f| f.name().to_string()))
                    .collect();
                (frames, s.samples)
            })
            .collect()
    }
}
