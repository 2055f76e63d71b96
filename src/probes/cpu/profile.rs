//! CPU profiling: sample the stack of whichever thread is on the CPU, many times a second,
//! for a while; then symbolize the stacks into a [`Profile`] that renders as pprof, folded
//! text or an SVG flamegraph.
//!
//!
//! # How sampling works
//! Each thread gets its own POSIX timer on *its own CPU-time clock* (`timer_create` on the
//! thread's CPU clock with `SIGEV_THREAD_ID`): every `1/frequency` seconds of CPU that thread
//! uses, the kernel sends `SIGPROF` to that thread. A small scanner thread
//! (`prodbg-cpu-scan`) re-reads `/proc/self/task` every 20 ms while profiling (less often when
//! there are so many threads that a scan would cost more than 1 % of a core) to arm timers
//! for new threads and delete those of exited ones: a thread's first 20 ms are not sampled.
//! The signal handler unwinds the interrupted thread's stack and counts it in a
//! preallocated table, with the thread's name (`PR_GET_NAME`) when the stack is new.
//! [`RunningProfile::stop`] deletes the timers, restores the previous `SIGPROF` disposition
//! (`SIG_IGN` if it was the default, so a signal still queued cannot terminate the process),
//! reads the table and frees it, then symbolizes.
//!
//! Only one profile can run per process (the signal and the table are process-global);
//! [`start`] enforces that with an RAII guard ([`RunningProfile`]) that stops sampling and
//! clears the "busy" flag when dropped, also when the caller's future is dropped because the
//! client went away.
//!
//! # The sample table
//! 16384 slots of (hash, count, thread id, depth, name, span labels, 64 addresses) ≈ 9.2 MB of address space,
//! allocated zeroed at start (untouched pages cost no RSS: a profile with a few hundred
//! distinct stacks touches a few hundred KB) and freed at stop. A slot is keyed by the
//! thread and the stack; the handler finds it by open addressing (at most 64 probes), claims
//! an empty one with a compare-and-swap, or adds to a matching one's count. A slot that
//! another thread is still writing is skipped, not waited for (the two are merged when the
//! table is read). When no slot is free the sample is counted as overflow and reported in
//! the profile's warnings.
//!
//! # Unwinder and why a sample cannot hang or crash the host
//! The handler unwinds with framehop's DWARF CFI unwinder (`.eh_frame`, in every Rust binary
//! and shared object), prepared before any timer is armed: `crate::stack::signal_unwinder`.
//! Frame pointers are not needed, and libgcc is never called. The handler may interrupt any
//! code, holding any lock — libc, libgcc, the loader, the vDSO, the allocator — and is safe
//! there because:
//! - *No allocation, no lock, no loader call.* The module list (`dl_iterate_phdr`, the vDSO
//!   included), the unwind sections and the stack map (`/proc/self/maps`) are read outside the
//!   handler; framehop's caches are preallocated (`MustNotAllocateDuringUnwind`) and claimed
//!   with one compare-and-swap; the table is preallocated and all atomics.
//! - *Bounded reads.* Unwind sections stay mapped (shared objects are pinned with
//!   `dlopen(RTLD_NOLOAD)` while the snapshot lives); stack reads are accepted only between the
//!   interrupted SP and the thread's stack top.
//! - *Modules loaded mid-profile.* The scanner re-prepares the unwinder when the loader's
//!   counters move and re-reads the stack map before arming new threads' timers; the old ones
//!   are freed only once no handler is running.
//! - *Nothing is dropped.* A walk that stops early (no unwind info, unknown stack, full
//!   buffer) keeps the frames found, at least the interrupted instruction, under a visible
//!   `[truncated]` frame; the `x-prodbg-truncated-samples` figure counts them.
//! - *Use after free.* Timers are deleted before the table is read; the table pointer is
//!   cleared and [`RunningProfile::stop`] waits for the handlers already running (an atomic
//!   in-handler counter) before it reads and frees the table and the unwinder. `errno` is
//!   saved and restored.
//! - *The host's own SIGPROF.* A host handler or a running `ITIMER_PROF` makes [`start`]
//!   refuse ([`CpuError::HostSigprof`]); the previous disposition is restored exactly once no
//!   SIGPROF of ours is still queued.
//!
//! # Rate
//! The kernel checks CPU-time timers on its scheduler tick (`CONFIG_HZ`, often 250 Hz), so a
//! thread's timer fires at most about once per tick *per thread*; the process-wide
//! `ITIMER_PROF` that pprof-rs used is limited to about once per tick for the *whole process*
//! (~290 samples/s in all). Above `CONFIG_HZ` a signal arrives with the timer's overrun
//! count (expirations missed since the last one), and the sample is counted `1 + overrun`
//! times, so counts stay proportional to CPU time (999 Hz on 2 busy threads: ~500 signals/s
//! carrying ~2000 samples/s); the stacks themselves are still taken at most once per tick
//! per thread. The `x-prodbg-samples-per-cpu-second` figure reports what was recorded; each sample's
//! pprof `cpu` value is the sampling period, never rescaled.
//!
//! # Memory
//! While sampling: the table's touched pages (well under 1 MB for hundreds of stacks; at most
//! ~9.2 MB), the unwinder (module list and caches, under 1 MB; unwind sections are read in
//! place), a timer per thread and one scanner thread; all of it is freed at stop. Symbolizing
//! reads the debug info one compilation unit at a time through a mapping whose pages are
//! dropped as it goes, and keeps nothing (`crate::stack::dwarf`).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::probes::one_at_a_time::{Held, OneAtATime};
use crate::stack::modules::ModuleSet;
use crate::stack::offline::pprof_mappings;
use crate::stack::profile::{Profile, Sample, ValueType};
use crate::stack::symbolize::{self as symbols, Symbols};
use crate::stack::Frame;

use super::history::{Lease, Recorder, Window};
use super::sampler;

use super::{DEFAULT_FREQUENCY_HZ, DEFAULT_SECONDS, MAX_FREQUENCY_HZ};

/// What to profile and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CpuProfileOptions {
    /// How long the caller intends to sample (it sleeps this long, then calls
    /// [`RunningProfile::stop`]). Used to tell a second caller how long to wait.
    pub duration: Duration,
    /// Samples per second of each thread's CPU time, 1..=[`MAX_FREQUENCY_HZ`]. 99 (not 100) avoids
    /// sampling in lockstep with periodic work.
    pub frequency_hz: u32,
}

impl Default for CpuProfileOptions {
    /// 30 seconds at 99 Hz, like `go tool pprof`'s default.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(DEFAULT_SECONDS),
            frequency_hz: DEFAULT_FREQUENCY_HZ,
        }
    }
}

/// Why a CPU profile could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CpuError {
    /// Another CPU profile is running; it is due to finish in `remaining`.
    Busy {
        /// Time until the running profile's requested duration ends.
        remaining: Duration,
    },
    /// The profiler could not be started (bad options, or the signal handler could not be installed).
    Start(String),
    /// The host uses `SIGPROF` itself (its own handler, or `ITIMER_PROF` running): a profile
    /// would take its signal over, so none is taken. The message names what was found.
    HostSigprof(String),
    /// Sampling ran but the report could not be built or rendered.
    Report(String),
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Busy { remaining } => write!(
                f,
                "a CPU profile is already running (one per process); it ends in {:.1} s",
                remaining.as_secs_f64()
            ),
            CpuError::Start(msg) => write!(f, "could not start the CPU profiler: {msg}"),
            CpuError::HostSigprof(msg) => write!(f, "{msg}"),
            CpuError::Report(msg) => write!(f, "could not build the CPU profile: {msg}"),
        }
    }
}

impl std::error::Error for CpuError {}

/// Held while a profile runs, until the end of its requested duration.
static ACTIVE: OneAtATime = OneAtATime::new();

/// Whether a CPU profile is running in this process now.
pub(super) fn running() -> bool {
    ACTIVE.running()
}

/// The process-wide "busy" flag, held; cleared on drop.
type Busy = Held;

fn acquire(duration: Duration) -> Result<Busy, CpuError> {
    ACTIVE
        .acquire(duration)
        .map_err(|remaining| CpuError::Busy { remaining })
}

/// Starts sampling every thread of the process.
///
/// Only one CPU profile may run per process: while one runs this returns
/// [`CpuError::Busy`] with the time left. Sampling stops when the returned
/// [`RunningProfile`] is stopped or dropped.
pub(super) fn start(opts: CpuProfileOptions) -> Result<RunningProfile, CpuError> {
    if !(1..=MAX_FREQUENCY_HZ).contains(&opts.frequency_hz) {
        return Err(CpuError::Start(format!(
            "frequency_hz must be 1..={MAX_FREQUENCY_HZ}, got {}",
            opts.frequency_hz
        )));
    }
    let busy = acquire(opts.duration)?;
    let cpu_start = process_cpu_time();
    let start_time = SystemTime::now();
    let started = Instant::now();
    // With the flight recorder running, its sampler is leased at this profile's rate.
    let lease = Recorder::current().and_then(|r| r.lease(opts.frequency_hz));
    let sampler = match lease {
        Some(lease) => Source::Lease(lease),
        None => Source::Own(
            sampler::Sampler::start(opts.frequency_hz, sampler::RESCAN).map_err(|e| match e {
                sampler::StartError::HostSigprof(m) => CpuError::HostSigprof(m),
                sampler::StartError::Other(m) => CpuError::Start(m),
            })?,
        ),
    };
    tracing::info!(
        frequency_hz = opts.frequency_hz,
        duration_s = opts.duration.as_secs_f64(),
        "cpu profile started"
    );
    Ok(RunningProfile {
        sampler: Some(sampler),
        opts,
        cpu_start,
        start_time,
        started,
        _busy: busy,
    })
}

/// What samples an on-demand profile: its own sampler, or the flight recorder's, leased.
enum Source {
    Own(sampler::Sampler),
    Lease(Lease),
}

/// A CPU profile being taken. Dropping it stops sampling and frees the "busy" flag.
pub(super) struct RunningProfile {
    // Field order matters: the sampler (which stops the timers) drops before the busy flag.
    sampler: Option<Source>,
    opts: CpuProfileOptions,
    cpu_start: Option<Duration>,
    start_time: SystemTime,
    started: Instant,
    _busy: Busy,
}

impl fmt::Debug for RunningProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningProfile")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl RunningProfile {
    /// Stops sampling and symbolizes the stacks.
    ///
    /// CPU-heavy and synchronous (tens to a few hundred ms: the debug info is read anew
    /// each time, nothing is cached): async callers run it in `spawn_blocking`.
    #[cfg(test)]
    pub(super) fn stop(self) -> Result<Profile, CpuError> {
        self.stop_with(true)
    }

    /// Stops sampling; symbolizes the stacks only if `symbolize` (else the frames carry only
    /// their addresses, and the pprof mappings say so, for off-host symbolization).
    pub(super) fn stop_with(mut self, symbolize: bool) -> Result<Profile, CpuError> {
        let t0 = Instant::now();
        let sampler = self
            .sampler
            .take()
            .ok_or_else(|| CpuError::Report("profile already stopped".into()))?;
        let collected = match sampler {
            Source::Own(s) => s.stop(),
            Source::Lease(l) => l.finish().map_err(CpuError::Report)?,
        };
        let duration = self.started.elapsed();
        let cpu_time = match (self.cpu_start, process_cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        tracing::debug!(
            signals = collected.signals,
            truncated = collected.truncated,
            overflow = collected.overflow,
            slots = collected.stacks.len(),
            sample_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu sampler stopped"
        );
        let timing = Timing {
            start_time: self.start_time,
            duration,
            frequency_hz: self.opts.frequency_hz,
            cpu_time,
        };
        let modules = ModuleSet::snapshot()
            .map_err(|e| CpuError::Report(format!("reading the module list: {e}")))?;
        let profile = from_collected(collected, timing, &modules, symbolize);
        drop(modules);
        symbols::release_freed_memory();
        tracing::info!(
            samples = profile.total(0),
            stacks = profile.samples.len(),
            stop_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu profile stopped"
        );
        Ok(profile)
    }
}

/// What a CPU profile's samples carry: the count and the CPU time it stands for (count ×
/// period; the default in `go tool pprof`).
const VALUE_TYPES: &[ValueType; 2] = &[
    ValueType::SAMPLES,
    ValueType {
        kind: "cpu",
        unit: "nanoseconds",
    },
];

/// Builds the symbolized [`Profile`]: one sample per distinct (thread, span labels, stack),
/// most-sampled first; the thread's name is the flamegraph's root frame and the `thread`
/// label, the span (and its chosen fields, e.g. `route`) are labels too. Each sample's `cpu`
/// value is its count × the sampling period, never rescaled to the measured CPU time, which
/// would hide missing samples behind inflated ones.
fn from_collected(
    collected: sampler::Collected,
    timing: Timing,
    modules: &ModuleSet,
    symbolize: bool,
) -> Profile {
    let period = Profile::period_ns(timing.frequency_hz);
    let mut collected = collected;
    let stacks = std::mem::take(&mut collected.stacks)
        .into_iter()
        .map(|raw| {
            let nanos = i64::try_from(raw.count)
                .unwrap_or(i64::MAX)
                .saturating_mul(period);
            (raw, nanos)
        })
        .collect();
    build(stacks, collected, timing, modules, symbolize)
}

/// A profile of the flight recorder's window `w`: its stacks and their CPU time as recorded
/// (slices sampled at different rates add up in CPU time), from the window's real start to
/// its real end.
pub(super) fn from_history(w: Window, modules: &ModuleSet, symbolize: bool) -> Profile {
    let diag = sampler::Collected {
        stacks: Vec::new(),
        truncated: w.truncated,
        overflow: w.overflow,
        signals: 0,
        arm_failures: 0,
        stuck: false,
        handler_kept: false,
    };
    let timing = Timing {
        start_time: w.start,
        duration: w.end.duration_since(w.start).unwrap_or_default(),
        frequency_hz: w.frequency_hz,
        cpu_time: None,
    };
    let mut p = build(w.stacks, diag, timing, modules, symbolize);
    p.describe = format!(
        "CPU {} s recorded from {} (flight recorder)",
        p.duration.as_secs(),
        crate::encode::time::format(w.start)
    );
    p.figures.push((
        "x-prodbg-window-start",
        crate::encode::time::format(w.start),
    ));
    p.figures
        .push(("x-prodbg-window-end", crate::encode::time::format(w.end)));
    p
}

/// Symbolizes and merges `stacks` (each with its sample count and the CPU nanoseconds they
/// stand for) into the [`Profile`]; `diag` carries the sampler's counters for the warnings.
fn build(
    stacks: Vec<(sampler::RawStack, i64)>,
    collected: sampler::Collected,
    timing: Timing,
    modules: &ModuleSet,
    symbolize: bool,
) -> Profile {
    let t0 = Instant::now();
    let symbols = if symbolize {
        Symbols::resolve(
            modules,
            stacks
                .iter()
                .flat_map(|(raw, _)| symbols::sampled_addresses(&raw.ips)),
        )
    } else {
        Symbols::default()
    };
    type Key = (String, Vec<(&'static str, &'static str)>, Vec<Frame>);
    let mut merged: HashMap<Key, (u64, i64)> = HashMap::new();
    for (raw, nanos) in &stacks {
        let thread = match &raw.thread {
            n if n.is_empty() => format!("thread-{}", raw.tid),
            n => n.clone(),
        };
        let stack = symbols::sampled_stack(&symbols, &raw.ips, raw.truncated, symbolize);
        let labels = if raw.labels.is_empty() {
            Vec::new()
        } else {
            raw.labels.resolve().pairs()
        };
        let v = merged.entry((thread, labels, stack)).or_default();
        v.0 += raw.count;
        v.1 = v.1.saturating_add(*nanos);
    }
    let mut stacks: Vec<(Key, (u64, i64))> = merged.into_iter().collect();
    stacks.sort_by(|((a, ..), x), ((b, ..), y)| y.0.cmp(&x.0).then_with(|| a.cmp(b)));
    let samples: Vec<Sample> = stacks
        .into_iter()
        .map(|((thread, labels, frames), (count, nanos))| {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            Sample {
                root: Some(thread.clone()),
                frames,
                labels: std::iter::once(("thread", thread))
                    .chain(labels.into_iter().map(|(k, v)| (k, v.to_string())))
                    .collect(),
                values: vec![count, nanos],
            }
        })
        .collect();
    let total: u64 = samples.iter().map(|s| s.values[0] as u64).sum();
    let Timing {
        start_time,
        duration,
        frequency_hz,
        cpu_time,
    } = timing;
    let secs = duration.as_secs_f64();
    let effective_rate_hz = if secs > 0.0 { total as f64 / secs } else { 0.0 };
    // Samples per second of the process's CPU time: the requested frequency when none were
    // lost, whatever share of its cores the process used.
    let per_cpu_second = cpu_time
        .map(|c| c.as_secs_f64())
        .filter(|&c| c > 0.0)
        .map(|c| total as f64 / c);
    let warnings = diagnose(
        &collected,
        &samples,
        total,
        symbolize,
        cpu_time,
        frequency_hz,
    );
    tracing::debug!(
        unique_addresses = symbols.len(),
        effective_rate_hz,
        symbolize_ms = t0.elapsed().as_secs_f64() * 1e3,
        "cpu profile symbolized"
    );
    Profile {
        samples,
        describe: format!("CPU {} s at {frequency_hz} Hz", duration.as_secs()),
        figures: vec![
            ("x-prodbg-requested-hz", frequency_hz.to_string()),
            (
                "x-prodbg-samples-per-cpu-second",
                per_cpu_second.map_or_else(|| "unknown".to_string(), |r| format!("{r:.1}")),
            ),
            (
                "x-prodbg-truncated-samples",
                collected.truncated.to_string(),
            ),
        ],
        warnings,
        ..Profile::sampled(
            "cpu",
            VALUE_TYPES,
            frequency_hz,
            (start_time, duration),
            symbolize,
            pprof_mappings(modules),
        )
    }
}

/// Problems worth telling the reader: lost samples, unarmed threads, unwinds cut short, no
/// samples at all, stacks without names, a rate far below the request.
fn diagnose(
    collected: &sampler::Collected,
    samples: &[Sample],
    total: u64,
    symbolized: bool,
    cpu_time: Option<Duration>,
    frequency_hz: u32,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if collected.overflow > 0 {
        warnings.push(format!(
            "{} samples were lost because the sample table ({} distinct thread+stack \
             pairs) was full",
            collected.overflow,
            sampler::SLOTS
        ));
    }
    if collected.arm_failures > 0 {
        warnings.push(format!(
            "{} threads could not be given a CPU timer (timer_create failed; see \
             RLIMIT_SIGPENDING) and were not sampled",
            collected.arm_failures
        ));
    }
    if collected.stuck {
        warnings.push(
            "a signal handler did not finish within 1 s; its sample table was leaked".to_string(),
        );
    }
    if collected.truncated * 10 > total.max(1) {
        warnings.push(format!(
            "{} of {total} samples could not be unwound to the thread's entry (no unwind info, \
             or a thread whose stack was not known yet); they are kept with the frames \
             found, under a [truncated] frame",
            collected.truncated
        ));
    }
    if collected.handler_kept {
        warnings.push(
            "a SIGPROF was still queued for a thread that blocks it, so prodbg's inert \
             SIGPROF handler stays installed instead of the previous disposition"
                .to_string(),
        );
    }
    if total == 0 {
        warnings.push(
            "no samples were collected: the process used (almost) no CPU while \
             profiling, or the profile was too short"
                .to_string(),
        );
        return warnings;
    }
    let empty: u64 = samples
        .iter()
        .filter(|s| s.frames.iter().all(|f| f.function.is_none()))
        .map(|s| s.values[0] as u64)
        .sum();
    if symbolized && empty * 2 > total {
        warnings.push(format!(
            "{empty} of {total} samples have no symbolized frames: the stacks could not be \
             unwound or the binary is stripped (keep debug info or at least symbols)"
        ));
    }
    if let Some(cpu) = cpu_time {
        let expected = cpu.as_secs_f64() * f64::from(frequency_hz);
        if expected >= 10.0 && (total as f64) < expected * 0.5 {
            warnings.push(format!(
                "only {total} samples for {:.2} s of CPU time at {frequency_hz} Hz (expected \
                 ~{expected:.0}): threads that block SIGPROF, or CPU used by threads that \
                 lived less than a scan (20 ms); each sample stands for one sampling period",
                cpu.as_secs_f64(),
            ));
        }
    }
    warnings
}

/// CPU time used by all threads of this process so far.
fn process_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// When and how long a profile sampled, for [`from_collected`].
struct Timing {
    start_time: SystemTime,
    duration: Duration,
    frequency_hz: u32,
    cpu_time: Option<Duration>,
}
