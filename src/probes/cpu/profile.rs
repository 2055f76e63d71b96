//! CPU profiling: sample the stack of whichever thread is on the CPU, many times a second,
//! for a while; then symbolize the stacks into a [`CpuProfile`] that renders as pprof, folded
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
//! [`CpuProfile::warnings`].
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
//!   `[truncated]` frame; [`CpuProfile::truncated`] counts them.
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
//! per thread. [`CpuProfile::effective_rate_hz`] reports what was recorded; each sample's
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

use crate::encode::{flamegraph, pprof as pb};
use crate::probes::one_at_a_time::{Held, OneAtATime};
use crate::stack::modules::ModuleSet;
use crate::stack::offline::{pprof_locations, pprof_mappings, PprofMapping};
use crate::stack::symbolize::{self as symbols, Symbols};
use crate::stack::Frame;

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
    let sampler = sampler::Sampler::start(opts.frequency_hz).map_err(|e| match e {
        sampler::StartError::HostSigprof(m) => CpuError::HostSigprof(m),
        sampler::StartError::Other(m) => CpuError::Start(m),
    })?;
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

/// A CPU profile being taken. Dropping it stops sampling and frees the "busy" flag.
pub(super) struct RunningProfile {
    // Field order matters: the sampler (which stops the timers) drops before the busy flag.
    sampler: Option<sampler::Sampler>,
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
    #[allow(dead_code)] // no caller, not even a test
    /// The options this profile was started with.
    pub(super) fn options(&self) -> CpuProfileOptions {
        self.opts
    }

    /// Stops sampling and symbolizes the stacks.
    ///
    /// CPU-heavy and synchronous (tens to a few hundred ms: the debug info is read anew
    /// each time, nothing is cached): async callers run it in `spawn_blocking`.
    #[cfg(test)]
    pub(super) fn stop(self) -> Result<CpuProfile, CpuError> {
        self.stop_with(true)
    }

    /// Stops sampling; symbolizes the stacks only if `symbolize` (else the frames carry only
    /// their addresses, and the pprof mappings say so, for off-host symbolization).
    pub(super) fn stop_with(mut self, symbolize: bool) -> Result<CpuProfile, CpuError> {
        let t0 = Instant::now();
        let sampler = self
            .sampler
            .take()
            .ok_or_else(|| CpuError::Report("profile already stopped".into()))?;
        let collected = sampler.stop();
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
        let profile = CpuProfile::from_collected(collected, timing, &modules, symbolize);
        drop(modules);
        symbols::release_freed_memory();
        tracing::info!(
            samples = profile.samples,
            truncated = profile.truncated,
            stacks = profile.stacks.len(),
            effective_rate_hz = profile.effective_rate_hz,
            stop_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu profile stopped"
        );
        Ok(profile)
    }
}

/// A distinct stack and how often it was sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CpuStack {
    /// Name of the sampled thread (or its pthread id when unnamed); at most 15 bytes,
    /// the kernel's limit.
    pub thread: String,
    /// Frames, innermost (the running function) first, as every stack in prodbg.
    pub frames: Vec<Frame>,
    /// The `tracing` span the thread was in (`span`, then chosen fields such as `route`), from
    /// prodbg's spans layer; empty outside spans or without the layer.
    pub labels: Vec<(&'static str, &'static str)>,
    /// Number of samples that saw this stack on this thread.
    pub samples: u64,
}

/// A finished, symbolized CPU profile.
///
/// Render it with [`pprof_gz`](Self::pprof_gz) (for `go tool pprof`, Parca, Pyroscope),
/// [`folded`](Self::folded) (one line per stack) or [`svg`](Self::svg) (a flamegraph). In the
/// folded and SVG forms the thread name is the root frame; in pprof it is the `thread` label.
#[derive(Debug, Clone)]
pub(super) struct CpuProfile {
    /// Wall-clock time sampling started.
    pub start_time: SystemTime,
    /// How long sampling ran (wall clock).
    pub duration: Duration,
    /// Requested sampling rate, Hz of process CPU time.
    pub frequency_hz: u32,
    /// Samples recorded (all stacks; none is dropped: a stack that could not be unwound to
    /// its end is kept under a `[truncated]` frame). A signal that arrives with timer overruns
    /// counts as `1 + overrun` samples (see the module docs' *Rate*).
    pub samples: u64,
    /// Samples whose unwind stopped early (included in `samples`, under `[truncated]`).
    pub truncated: u64,
    /// Whether the frames carry functions, files and lines (else addresses only).
    pub symbolized: bool,
    /// The executable segments of the loaded modules (path, offsets, build id), the
    /// profile's pprof mappings.
    pub mappings: Vec<PprofMapping>,
    /// Samples actually recorded per wall-clock second (`samples / duration`). With `n` busy
    /// threads the ideal is `n × frequency_hz`; each thread's signals are capped near `CONFIG_HZ`,
    /// the overrun count makes up the difference.
    pub effective_rate_hz: f64,
    /// CPU time the whole process used while sampling; `None` if the clock was unavailable.
    pub cpu_time: Option<Duration>,
    /// Distinct stacks, most-sampled first.
    pub stacks: Vec<CpuStack>,
    /// Problems worth telling the reader (empty stacks, rate far below the request, no samples).
    pub warnings: Vec<String>,
}

impl CpuProfile {
    /// Samples per second of CPU time the process used: the requested frequency when every
    /// tick was recorded, whatever share of its cores the process kept busy. `None` without a
    /// CPU clock or when the process used no CPU.
    pub(crate) fn samples_per_cpu_second(&self) -> Option<f64> {
        let secs = self.cpu_time?.as_secs_f64();
        (secs > 0.0).then(|| self.samples as f64 / secs)
    }

    fn from_collected(
        collected: sampler::Collected,
        timing: Timing,
        modules: &ModuleSet,
        symbolize: bool,
    ) -> Self {
        let t0 = Instant::now();
        let symbols = if symbolize {
            Symbols::resolve(
                modules,
                collected
                    .stacks
                    .iter()
                    .flat_map(|raw| symbols::sampled_addresses(&raw.ips)),
            )
        } else {
            Symbols::default()
        };
        type Key = (String, Vec<(&'static str, &'static str)>, Vec<Frame>);
        let mut merged: HashMap<Key, u64> = HashMap::new();
        for raw in &collected.stacks {
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
            *merged.entry((thread, labels, stack)).or_default() += raw.count;
        }
        let mut stacks: Vec<CpuStack> = merged
            .into_iter()
            .map(|((thread, labels, frames), samples)| CpuStack {
                thread,
                frames,
                labels,
                samples,
            })
            .collect();
        stacks.sort_by(|a, b| {
            b.samples
                .cmp(&a.samples)
                .then_with(|| a.thread.cmp(&b.thread))
        });
        let samples: u64 = stacks.iter().map(|s| s.samples).sum();
        let Timing {
            start_time,
            duration,
            frequency_hz,
            cpu_time,
        } = timing;
        let secs = duration.as_secs_f64();
        let effective_rate_hz = if secs > 0.0 {
            samples as f64 / secs
        } else {
            0.0
        };
        let mut profile = CpuProfile {
            start_time,
            duration,
            frequency_hz,
            samples,
            truncated: collected.truncated,
            symbolized: symbolize,
            mappings: pprof_mappings(modules),
            effective_rate_hz,
            cpu_time,
            stacks,
            warnings: Vec::new(),
        };
        profile.warnings = profile.diagnose(&collected);
        tracing::debug!(
            unique_addresses = symbols.len(),
            symbolize_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu profile symbolized"
        );
        profile
    }

    fn diagnose(&self, collected: &sampler::Collected) -> Vec<String> {
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
                "a signal handler did not finish within 1 s; its sample table was leaked"
                    .to_string(),
            );
        }
        if collected.truncated * 10 > self.samples.max(1) {
            warnings.push(format!(
                "{} of {} samples could not be unwound to the thread's entry (no unwind info, \
                 or a thread whose stack was not known yet); they are kept with the frames \
                 found, under a [truncated] frame",
                collected.truncated, self.samples
            ));
        }
        if collected.handler_kept {
            warnings.push(
                "a SIGPROF was still queued for a thread that blocks it, so prodbg's inert \
                 SIGPROF handler stays installed instead of the previous disposition"
                    .to_string(),
            );
        }
        if self.samples == 0 {
            warnings.push(
                "no samples were collected: the process used (almost) no CPU while \
                 profiling, or the profile was too short"
                    .to_string(),
            );
            return warnings;
        }
        let empty: u64 = self
            .stacks
            .iter()
            .filter(|s| s.frames.iter().all(|f| f.function.is_none()))
            .map(|s| s.samples)
            .sum();
        if self.symbolized && empty * 2 > self.samples {
            warnings.push(format!(
                "{empty} of {} samples have no symbolized frames: the stacks could not be \
                 unwound or the binary is stripped (keep debug info or at least symbols)",
                self.samples
            ));
        }
        if let Some(cpu) = self.cpu_time {
            let expected = cpu.as_secs_f64() * f64::from(self.frequency_hz);
            if expected >= 10.0 && (self.samples as f64) < expected * 0.5 {
                warnings.push(format!(
                    "only {} samples for {:.2} s of CPU time at {} Hz (expected ~{expected:.0}): \
                     threads that block SIGPROF, or CPU used by threads that lived less \
                     than a scan (20 ms); each sample stands for one sampling period",
                    self.samples,
                    cpu.as_secs_f64(),
                    self.frequency_hz
                ));
            }
        }
        warnings
    }

    /// CPU nanoseconds one sample stands for: the sampling period. Never rescaled to the
    /// measured CPU time, which would hide missing samples behind inflated ones.
    pub(super) fn nanos_per_sample(&self) -> i64 {
        1_000_000_000 / i64::from(self.frequency_hz.max(1))
    }

    /// Gzipped `profile.proto`: sample types `samples/count` and `cpu/nanoseconds` (count ×
    /// period), period `1e9 / frequency_hz` ns of `cpu`, one mapping per executable segment
    /// (path, file offset, GNU build id), function names, files and lines when symbolized
    /// (inlined functions as extra lines of their location), a `thread` label on every
    /// sample, and `span` (plus chosen fields, e.g. `route`) on samples taken inside a span. Location addresses are the interrupted instruction for the leaf and the
    /// return address minus one (inside the call) for callers, as pprof tools expect.
    pub(super) fn pprof_gz(&self) -> Result<Vec<u8>, CpuError> {
        let t0 = Instant::now();
        let period = 1_000_000_000 / i64::from(self.frequency_hz.max(1));
        let mut b = pb::ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            period,
        );
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
        let nanos = self.nanos_per_sample();
        for stack in &self.stacks {
            let locations = pprof_locations(&mut b, &stack.frames, self.symbolized);
            let samples = i64::try_from(stack.samples).unwrap_or(i64::MAX);
            let cpu = samples.saturating_mul(nanos);
            let mut labels = vec![("thread", stack.thread.as_str())];
            labels.extend(stack.labels.iter().copied());
            b.sample(locations, vec![samples, cpu], &labels);
        }
        let start = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let profile = b.finish(
            i64::try_from(start.as_nanos()).unwrap_or(0),
            i64::try_from(self.duration.as_nanos()).unwrap_or(i64::MAX),
        );
        let out = pb::encode_gz(&profile);
        tracing::debug!(
            bytes = out.len(),
            render_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu profile rendered as pprof"
        );
        Ok(out)
    }

    /// Keeps only the samples taken inside a `tracing` span named `span` (`?span=`).
    pub(super) fn retain_span(&mut self, span: &str) {
        self.stacks
            .retain(|s| s.labels.iter().any(|&(k, v)| k == "span" && v == span));
        self.samples = self.stacks.iter().map(|s| s.samples).sum();
    }

    /// Folded stacks, one `thread;outer;…;leaf count` line per stack: the text inferno,
    /// flamegraph.pl and speedscope read.
    pub(super) fn folded(&self) -> String {
        flamegraph::folded_text(&self.folded_stacks())
    }

    /// An SVG flamegraph titled `title`; the thread name is the root frame.
    pub(super) fn svg(&self, title: &str) -> Result<Vec<u8>, CpuError> {
        let t0 = Instant::now();
        let svg =
            flamegraph::svg(&self.folded_stacks(), title, "samples").map_err(CpuError::Report)?;
        tracing::debug!(
            bytes = svg.len(),
            render_ms = t0.elapsed().as_secs_f64() * 1e3,
            "cpu profile rendered as svg"
        );
        Ok(svg)
    }

    fn folded_stacks(&self) -> Vec<flamegraph::FoldedStack> {
        self.stacks
            .iter()
            .map(|s| {
                let frames = std::iter::once(s.thread.clone())
                    .chain(s.frames.iter().rev().map(|f| f.name().to_string()))
                    .collect();
                (frames, s.samples)
            })
            .collect()
    }
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

/// When and how long a profile sampled, for [`CpuProfile::from_collected`].
struct Timing {
    start_time: SystemTime,
    duration: Duration,
    frequency_hz: u32,
    cpu_time: Option<Duration>,
}
