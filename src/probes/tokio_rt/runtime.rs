//! Tokio runtime probe: per-worker busy time, parks, polls, queues, and async task dumps.
//!
//! Hosts name their runtimes in a [`RuntimeRegistry`]. [`RuntimeRegistry::snapshot`] reads every
//! registered runtime twice, `window` apart, and reports totals since the runtime started plus
//! rates over the window: "worker 3 was busy 100% of the last second and polled nothing" is the
//! signature of a blocking call or a busy loop inside an `async fn`.
//!
//! # Stable and unstable metrics (tokio 1.54)
//!
//! Without `--cfg tokio_unstable`, tokio publishes only: the number of workers, alive tasks, the
//! global (injection) queue depth, and per worker the busy time, the park count and the
//! park/unpark count (whose parity says whether the worker is parked). Everything else — poll
//! counts, steals, overflows, local queue depth, mean poll time, the poll-time histogram,
//! blocking-pool numbers — needs the host built with `RUSTFLAGS="--cfg tokio_unstable"`. Such a
//! metric is then `None` (JSON `null`, never a fake `0`) and named in
//! [`RuntimeReport::unavailable`] with what to turn on. The poll-time histogram additionally
//! needs the runtime built with `Builder::enable_metrics_poll_time_histogram()`.
//!
//! # How fresh the numbers are
//!
//! A tokio worker publishes its counters only when it parks and every 61 polls (its
//! "maintenance" tick). A worker stuck inside one long poll publishes nothing: its busy time
//! freezes. This probe therefore also reads the park/unpark parity, and reports a worker that
//! stayed unparked through the whole window as 100% busy (see [`WorkerReport::busy_ratio`] and
//! [`WorkerReport::likely_blocked`]).
//!
//! Runtime-wide aggregates over the window ([`RuntimeWindow`]) come from
//! [`tokio_metrics::RuntimeMonitor`]; tokio-metrics does not break them down per worker, so the
//! per-worker figures are read from [`tokio::runtime::RuntimeMetrics`] directly.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor, RuntimeMetrics};

use super::window::per_second;
pub(crate) use super::window::RuntimeWindow;

/// Named Tokio runtimes to report on. Cheap to clone; clones share the same set.
///
/// A registered [`Handle`] does not keep the runtime running: once the host drops its runtime,
/// its workers are gone and the report shows what tokio left behind. Call
/// [`RuntimeRegistry::unregister`] when a runtime is shut down for good.
#[derive(Clone, Default)]
pub(crate) struct RuntimeRegistry {
    runtimes: Arc<Mutex<BTreeMap<String, Handle>>>,
}

impl std::fmt::Debug for RuntimeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeRegistry")
            .field("runtimes", &self.names())
            .finish()
    }
}

impl RuntimeRegistry {
    #[cfg_attr(not(test), allow(dead_code))]
    /// An empty registry.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Handle>> {
        // The map is never left half-updated, so a poisoned lock is still usable.
        self.runtimes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a runtime under `name` (e.g. `"main"`), replacing any runtime already under that name.
    pub(crate) fn register(&self, name: impl Into<String>, handle: Handle) {
        self.lock().insert(name.into(), handle);
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Forgets the runtime under `name`. Returns whether there was one.
    pub(crate) fn unregister(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// Names of the registered runtimes, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The handle registered under `name`, e.g. to pass to [`task_dump`].
    pub(crate) fn get(&self, name: &str) -> Option<Handle> {
        self.lock().get(name).cloned()
    }

    /// Reports every registered runtime, sorted by name.
    ///
    /// Reads all runtimes, sleeps `window`, and reads them again: totals are as of the second
    /// read, rates and ratios are over the window. `window == 0` reads once and leaves every
    /// rate, ratio and [`RuntimeReport::window`] `None`. The caller bounds `window` (the future
    /// takes at least that long).
    ///
    /// The returned future is `Send + 'static` and must be awaited inside a Tokio runtime with
    /// the time driver enabled (`enable_time()`/`enable_all()`), normally the admin server's
    /// own runtime: it only reads atomics and sleeps, so it never needs the host's runtime to
    /// make progress and answers even when every host worker is blocked.
    /// Every registered runtime's levels now, sorted by name: atomics only, no window.
    pub(crate) fn levels(&self) -> Vec<RuntimeLevels> {
        self.lock()
            .iter()
            .map(|(name, handle)| {
                let m = handle.metrics();
                let workers = m.num_workers();
                let busy: Duration = (0..workers).map(|w| m.worker_total_busy_duration(w)).sum();
                RuntimeLevels {
                    name: name.clone(),
                    workers,
                    busy_seconds_total: busy.as_secs_f64(),
                    global_queue_depth: m.global_queue_depth(),
                    alive_tasks: m.num_alive_tasks(),
                }
            })
            .collect()
    }

    /// Reports every registered runtime now, without a window (no rates).
    pub(crate) fn snapshot_now(&self) -> Vec<RuntimeReport> {
        self.lock()
            .iter()
            .map(|(name, handle)| {
                let m = handle.metrics();
                report(name, handle, &m, None, &sample(&m), None)
            })
            .collect()
    }

    pub(crate) fn snapshot(
        &self,
        window: Duration,
    ) -> impl Future<Output = Vec<RuntimeReport>> + Send + 'static {
        let runtimes: Vec<(String, Handle)> = self
            .lock()
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        async move {
            if window.is_zero() {
                return runtimes
                    .iter()
                    .map(|(name, handle)| {
                        let m = handle.metrics();
                        report(name, handle, &m, None, &sample(&m), None)
                    })
                    .collect();
            }
            let mut first = Vec::with_capacity(runtimes.len());
            for (_, handle) in &runtimes {
                let m = handle.metrics();
                // `intervals()` takes tokio-metrics' baseline; its `next()` gives the window.
                let intervals = tokio_metrics::RuntimeMonitor::new(handle).intervals();
                first.push((m.clone(), intervals, sample(&m)));
            }
            let started = Instant::now();
            tokio::time::sleep(window).await;
            let elapsed = started.elapsed();
            runtimes
                .iter()
                .zip(first)
                .map(|((name, handle), (m, mut intervals, before))| {
                    let after = sample(&m);
                    let interval = intervals.next();
                    report(
                        name,
                        handle,
                        &m,
                        Some((&before, elapsed)),
                        &after,
                        interval.as_ref(),
                    )
                })
                .collect()
        }
    }
}

/// One runtime, as of one snapshot.
///
/// Counters ending in `_total` count since the runtime started. Rates and ratios are over the
/// snapshot's window and are `None` when the window was 0. A metric tokio does not publish in
/// this build is `None` and named in [`RuntimeReport::unavailable`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub(crate) struct RuntimeReport {
    /// The name the runtime was registered under.
    pub name: String,
    /// `"multi_thread"` or `"current_thread"`.
    pub flavor: String,
    /// Number of worker threads (1 for a current-thread runtime).
    pub workers: usize,
    /// Tasks spawned and not yet completed, right now.
    pub alive_tasks: usize,
    /// Tasks waiting in the global (injection) queue, right now: spawned from outside the
    /// runtime or overflowed from a full local queue, not yet picked up by a worker.
    pub global_queue_depth: usize,
    /// Length of the window the rates are over, in seconds, as measured (≥ the requested
    /// window). `None` when no window was taken.
    pub window_seconds: Option<f64>,
    /// Mean of the workers' [`WorkerReport::busy_ratio`], 0.0–1.0: 1.0 = every worker busy the
    /// whole window. `None` when no window was taken.
    pub busy_ratio: Option<f64>,
    /// Workers reported [`WorkerReport::likely_blocked`] over the window (`None`: no window).
    pub likely_blocked_workers: Option<usize>,
    /// Tasks spawned since the runtime started (unstable).
    pub spawned_tasks_total: Option<u64>,
    /// Tasks scheduled from outside the runtime since it started (unstable).
    pub remote_schedules_total: Option<u64>,
    /// Times a task was forced to yield because it used up its cooperative budget, since the
    /// runtime started (unstable).
    pub budget_forced_yields_total: Option<u64>,
    /// Threads in the blocking pool (`spawn_blocking`), busy or idle, right now (unstable).
    pub blocking_threads: Option<usize>,
    /// Idle threads in the blocking pool, right now (unstable).
    pub idle_blocking_threads: Option<usize>,
    /// `spawn_blocking` tasks waiting for a blocking thread, right now (unstable).
    pub blocking_queue_depth: Option<usize>,
    /// Poll-time histogram summed over all workers since the runtime started (unstable, and
    /// only when the runtime was built with `enable_metrics_poll_time_histogram()`).
    pub poll_time_histogram: Option<PollTimeHistogram>,
    /// Runtime-wide aggregates over the window, from tokio-metrics. `None`: no window.
    pub window: Option<RuntimeWindow>,
    /// One entry per worker, by worker index.
    pub per_worker: Vec<WorkerReport>,
    /// Metrics left out of this report, each as `"<field>: <what to turn on>"`, e.g.
    /// `"poll_count: needs RUSTFLAGS=\"--cfg tokio_unstable\""`. Empty when all are present.
    pub unavailable: Vec<String>,
}

/// One worker thread of a runtime. See [`RuntimeReport`] for what `_total`, rates and `None` mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub(crate) struct WorkerReport {
    /// Worker index, 0-based, stable for the runtime's life.
    pub index: usize,
    /// Whether the worker is parked (idle, waiting for work) right now.
    pub parked: bool,
    /// Time spent running tasks since the runtime started, in seconds, as last published by
    /// the worker (see the module docs: frozen while the worker is stuck in one poll).
    pub busy_seconds_total: f64,
    /// Share of the window the worker was busy, 0.0–1.0 (1.0 = "100% busy"). A worker that
    /// never parked during the window counts as 1.0 even if its published busy time did not
    /// move (it was stuck in one poll). `None`: no window.
    pub busy_ratio: Option<f64>,
    /// `true` when the worker stayed unparked for the whole window *and* published nothing in
    /// it: it is most likely stuck in a single poll (a blocking call or a busy loop in an
    /// `async fn`). Take a thread dump or CPU profile to see where. `None`: no window.
    pub likely_blocked: Option<bool>,
    /// Times the worker parked (went idle) since the runtime started.
    pub park_count: u64,
    /// Parks per second over the window. `None`: no window.
    pub parks_per_second: Option<f64>,
    /// Task polls since the runtime started (unstable).
    pub poll_count: Option<u64>,
    /// Polls per second over the window (unstable; `None` also when no window).
    pub polls_per_second: Option<f64>,
    /// Times the worker woke up and found nothing to do, since the runtime started (unstable).
    pub noop_count: Option<u64>,
    /// Tasks this worker stole from other workers since the runtime started (unstable).
    pub steal_count: Option<u64>,
    /// Steal operations (each takes one or more tasks) since the runtime started (unstable).
    pub steal_operations: Option<u64>,
    /// Times the worker's local queue overflowed into the global queue since the runtime
    /// started (unstable).
    pub overflow_count: Option<u64>,
    /// Tasks scheduled onto this worker's local queue from the worker itself, since the runtime
    /// started (unstable).
    pub local_schedule_count: Option<u64>,
    /// Tasks in the worker's local run queue right now (unstable).
    pub local_queue_depth: Option<usize>,
    /// Moving average of the time one poll takes on this worker, in seconds (unstable).
    pub mean_poll_time_seconds: Option<f64>,
    /// Polls per bucket since the runtime started; bucket bounds are in
    /// [`RuntimeReport::poll_time_histogram`] (unstable, and only with the runtime's poll-time
    /// histogram enabled).
    pub poll_time_histogram: Option<Vec<u64>>,
}

/// A histogram of how long task polls took.
///
/// Bucket `i` counts polls that took at least `upper_bounds_seconds[i - 1]` (0 for `i == 0`)
/// and less than `upper_bounds_seconds[i]`; the last bucket (`counts.len() - 1`) has no upper
/// bound (Prometheus `+Inf`), so `upper_bounds_seconds.len() == counts.len() - 1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub(crate) struct PollTimeHistogram {
    /// Exclusive upper bound of each bucket but the last, in seconds, ascending.
    pub upper_bounds_seconds: Vec<f64>,
    /// Polls per bucket.
    pub counts: Vec<u64>,
}

/// One runtime's levels at one instant, for the timeline.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeLevels {
    /// The name it was registered under.
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// Busy time summed over the workers since the runtime started, in seconds, as the
    /// workers last published it (a worker stuck in one long poll publishes nothing).
    pub busy_seconds_total: f64,
    /// Tasks in the global (injection) queue now.
    pub global_queue_depth: usize,
    /// Tasks alive now.
    pub alive_tasks: usize,
}

/// Counters of one worker at one instant.
#[derive(Debug, Clone, Default)]
struct WorkerSample {
    park_unpark: u64,
    park: u64,
    busy: Duration,
    extra: super::unstable::WorkerExtra,
}

fn sample(m: &RuntimeMetrics) -> Vec<WorkerSample> {
    (0..m.num_workers())
        .map(|w| WorkerSample {
            park_unpark: m.worker_park_unpark_count(w),
            park: m.worker_park_count(w),
            busy: m.worker_total_busy_duration(w),
            extra: super::unstable::worker(m, w),
        })
        .collect()
}

fn report(
    name: &str,
    handle: &Handle,
    m: &RuntimeMetrics,
    before: Option<(&Vec<WorkerSample>, Duration)>,
    after: &[WorkerSample],
    interval: Option<&tokio_metrics::RuntimeMetrics>,
) -> RuntimeReport {
    let per_worker: Vec<WorkerReport> = after
        .iter()
        .enumerate()
        .map(|(index, now)| {
            let prev = before.and_then(|(b, e)| b.get(index).map(|p| (p, e)));
            worker_report(index, now, prev)
        })
        .collect();
    let ratios: Vec<f64> = per_worker.iter().filter_map(|w| w.busy_ratio).collect();
    let busy_ratio = (before.is_some() && !ratios.is_empty())
        .then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
    let likely_blocked_workers = before.map(|_| {
        per_worker
            .iter()
            .filter(|w| w.likely_blocked == Some(true))
            .count()
    });
    let rt = super::unstable::runtime(m);
    let flavor = match handle.runtime_flavor() {
        RuntimeFlavor::CurrentThread => "current_thread",
        RuntimeFlavor::MultiThread => "multi_thread",
        _ => "other",
    };
    RuntimeReport {
        name: name.to_owned(),
        flavor: flavor.to_owned(),
        workers: m.num_workers(),
        alive_tasks: m.num_alive_tasks(),
        global_queue_depth: m.global_queue_depth(),
        window_seconds: before.map(|(_, e)| e.as_secs_f64()),
        busy_ratio,
        likely_blocked_workers,
        spawned_tasks_total: rt.spawned_tasks_total,
        remote_schedules_total: rt.remote_schedules_total,
        budget_forced_yields_total: rt.budget_forced_yields_total,
        blocking_threads: rt.blocking_threads,
        idle_blocking_threads: rt.idle_blocking_threads,
        blocking_queue_depth: rt.blocking_queue_depth,
        poll_time_histogram: rt.histogram_bounds.map(|upper_bounds_seconds| {
            let mut counts = vec![0u64; upper_bounds_seconds.len() + 1];
            for w in after {
                for (sum, c) in counts.iter_mut().zip(w.extra.histogram.iter().flatten()) {
                    *sum = sum.saturating_add(*c);
                }
            }
            PollTimeHistogram {
                upper_bounds_seconds,
                counts,
            }
        }),
        window: interval.map(super::unstable::window),
        per_worker,
        unavailable: rt.unavailable,
    }
}

fn worker_report(
    index: usize,
    now: &WorkerSample,
    prev: Option<(&WorkerSample, Duration)>,
) -> WorkerReport {
    let parked = now.park_unpark % 2 == 1;
    let mut busy_ratio = None;
    let mut likely_blocked = None;
    let mut parks_per_second = None;
    let mut polls_per_second = None;
    if let Some((p, elapsed)) = prev {
        // An even park/unpark count that did not move: the worker never parked in the window.
        let never_parked = p.park_unpark == now.park_unpark && !parked;
        let published_nothing = never_parked
            && p.busy == now.busy
            && p.park == now.park
            && p.extra.poll == now.extra.poll;
        let busy = now.busy.saturating_sub(p.busy).as_secs_f64();
        let secs = elapsed.as_secs_f64();
        busy_ratio = Some(if never_parked || secs <= 0.0 {
            1.0
        } else {
            (busy / secs).clamp(0.0, 1.0)
        });
        likely_blocked = Some(published_nothing);
        parks_per_second = Some(per_second(now.park.saturating_sub(p.park), elapsed));
        polls_per_second = now
            .extra
            .poll
            .zip(p.extra.poll)
            .map(|(n, b)| per_second(n.saturating_sub(b), elapsed));
    }
    let g = &now.extra;
    WorkerReport {
        index,
        parked,
        busy_seconds_total: now.busy.as_secs_f64(),
        busy_ratio,
        likely_blocked,
        park_count: now.park,
        parks_per_second,
        poll_count: g.poll,
        polls_per_second,
        noop_count: g.noop,
        steal_count: g.steal,
        steal_operations: g.steal_operations,
        overflow_count: g.overflow,
        local_schedule_count: g.local_schedule,
        local_queue_depth: g.local_queue_depth,
        mean_poll_time_seconds: g.mean_poll_time.map(|d| d.as_secs_f64()),
        poll_time_histogram: g.histogram.clone(),
    }
}

/// Why [`task_dump`] gave no dump.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
// Which variants a build constructs depends on its cfgs (dumps compiled in or not).
#[allow(dead_code)]
pub(crate) enum TaskDumpError {
    /// This build has no task-dump support.
    #[error(
        "async task dumps are not compiled in: build the host with \
         RUSTFLAGS=\"--cfg tokio_unstable --cfg tokio_taskdump\" (Linux on x86_64, aarch64, x86 or s390x only)"
    )]
    NotCompiled,
    /// The runtime did not produce the dump in time.
    #[error(
        "the task dump did not finish within {}: a worker of this runtime has not yielded to the \
         scheduler (it is blocked in a poll or in a busy loop), or the runtime is shutting down; \
         take a thread dump (/debug/threads) to see where the workers are",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// An earlier dump of the same runtime has not finished yet (it may be waiting for a
    /// blocked worker); only one dump per runtime runs at a time.
    #[error(
        "a task dump of this runtime is already in progress (an earlier one may still be waiting \
         for a blocked worker); try again later"
    )]
    AlreadyRunning,
    /// A worker of the (multi-thread) runtime did not yield during the pre-check, so no dump was
    /// attempted: tokio would wait for that worker, and in tokio 1.54 a dump that waits on a
    /// blocked worker leaves the runtime unable to complete any later dump.
    #[error(
        "worker(s) {workers:?} of this runtime did not yield to the scheduler for {}: they are \
         blocked in a poll or in a busy loop, so the task dump was not attempted (it would hang \
         and break later dumps of this runtime); take a thread dump (/debug/threads) to see where \
         they are",
        humantime::format_duration(*checked_for)
    )]
    WorkerBlocked {
        /// Indexes of the workers that looked blocked.
        workers: Vec<usize>,
        /// How long they were watched.
        checked_for: Duration,
    },
    /// The dump task failed: the runtime shut down or the dump panicked.
    #[error("the task dump failed: {0}")]
    Failed(String),
}

/// Dumps every task of the runtime behind `handle` as text: a `Task N (id I):` header, then the
/// task's async backtrace (the chain of `async fn`s it is parked in), a blank line between tasks.
///
/// Needs the host built with `RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump"` on Linux
/// (x86_64, aarch64, x86, s390x; prodbg turns on tokio's `taskdump` cargo feature there) and
/// debug info in the binary (not `split-debuginfo`); otherwise returns
/// [`TaskDumpError::NotCompiled`].
///
/// Call it from a task on *another* runtime (the admin server's): a multi-thread runtime is
/// dumped from a helper thread, and a current-thread runtime — which tokio can only dump from
/// inside itself — gets the dump spawned onto it. Tokio pauses every worker and re-polls every
/// task in tracing mode, which is expensive: don't poll this.
///
/// A multi-thread runtime is first watched for [`DUMP_PRECHECK`] (300 ms, longer than the
/// 250 ms tokio's workers wait for each other): if a worker stays in one poll all that time,
/// returns [`TaskDumpError::WorkerBlocked`] without asking tokio for a dump, because in tokio
/// 1.54 a dump that waits on a blocked worker corrupts the runtime's dump barrier and no later
/// dump of that runtime ever completes. If the dump still does not finish within `timeout`
/// (a worker blocked after the pre-check, or a wedged current-thread runtime), returns
/// [`TaskDumpError::Timeout`]; until the abandoned dump ends, another dump of the same runtime
/// answers [`TaskDumpError::AlreadyRunning`].
///
/// Must be awaited inside a Tokio runtime with the time driver enabled.
pub(super) async fn task_dump(handle: &Handle, timeout: Duration) -> Result<String, TaskDumpError> {
    dump::task_dump(handle, timeout).await
}

/// Every task of the runtime behind `handle` (registered as `runtime`) with its resolved
/// stacks, for Go's goroutine shapes: the same dump as [`task_dump`], with the same limits.
pub(super) async fn task_stacks(
    handle: &Handle,
    runtime: &str,
    timeout: Duration,
) -> Result<Vec<super::go_text::TaskStacks>, TaskDumpError> {
    dump::task_stacks(handle, runtime, timeout).await
}

#[cfg_attr(
    any(not(test), not(all(tokio_unstable, tokio_taskdump))),
    allow(dead_code)
)]
/// How long [`task_dump`] watches a multi-thread runtime's workers for a blocked one before
/// asking tokio for a dump.
pub(super) const DUMP_PRECHECK: Duration = Duration::from_millis(300);

/// Whether this build can take task dumps (see [`task_dump`]).
pub(super) const TASK_DUMP_COMPILED: bool = dump::COMPILED;

#[cfg(all(
    tokio_unstable,
    tokio_taskdump,
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "s390x"
    )
))]
mod dump {
    use super::super::go_text::TaskStacks;
    use super::TaskDumpError;
    use crate::stack::Frame;
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::runtime::{Handle, Id, RuntimeFlavor};

    pub(super) const COMPILED: bool = true;

    /// Runtimes with a dump in progress.
    static IN_FLIGHT: Mutex<Vec<Id>> = Mutex::new(Vec::new());

    /// Marks a runtime's dump as in progress until dropped.
    struct InFlight(Id);

    impl InFlight {
        fn acquire(id: Id) -> Option<InFlight> {
            let mut set = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
            if set.contains(&id) {
                return None;
            }
            set.push(id);
            Some(InFlight(id))
        }
    }

    impl Drop for InFlight {
        fn drop(&mut self) {
            IN_FLIGHT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id| *id != self.0);
        }
    }

    /// Takes the dump (pre-check, one at a time per runtime, bounded by `timeout`).
    async fn raw_dump(
        handle: &Handle,
        timeout: Duration,
    ) -> Result<tokio::runtime::Dump, TaskDumpError> {
        let guard = InFlight::acquire(handle.id()).ok_or(TaskDumpError::AlreadyRunning)?;
        if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
            let m = handle.metrics();
            let before = super::sample(&m);
            let started = std::time::Instant::now();
            tokio::time::sleep(super::DUMP_PRECHECK).await;
            let elapsed = started.elapsed();
            let workers: Vec<usize> = super::sample(&m)
                .iter()
                .enumerate()
                .filter(|(i, now)| {
                    let prev = before.get(*i).map(|p| (p, elapsed));
                    super::worker_report(*i, now, prev).likely_blocked == Some(true)
                })
                .map(|(i, _)| i)
                .collect();
            if !workers.is_empty() {
                return Err(TaskDumpError::WorkerBlocked {
                    workers,
                    checked_for: elapsed,
                });
            }
        }
        let target = handle.clone();
        // Runs on the caller's runtime, so the guard outlives a timed-out request until the
        // dump really ends.
        let dumping = tokio::spawn(async move {
            let _guard = guard;
            match target.runtime_flavor() {
                RuntimeFlavor::CurrentThread => {
                    let inner = target.clone();
                    target
                        .spawn(async move { inner.dump().await })
                        .await
                        .map_err(|e| e.to_string())
                }
                _ => Ok(target.dump().await),
            }
        });
        match tokio::time::timeout(timeout, dumping).await {
            Err(_) => Err(TaskDumpError::Timeout { timeout }),
            Ok(Err(join)) => Err(TaskDumpError::Failed(join.to_string())),
            Ok(Ok(Err(msg))) => Err(TaskDumpError::Failed(msg)),
            Ok(Ok(Ok(dump))) => Ok(dump),
        }
    }

    pub(super) async fn task_dump(
        handle: &Handle,
        timeout: Duration,
    ) -> Result<String, TaskDumpError> {
        let dump = raw_dump(handle, timeout).await?;
        let mut out = String::new();
        for (n, task) in dump.tasks().iter().enumerate() {
            let _ = writeln!(
                out,
                "Task {} (id {}):\n{}\n",
                n + 1,
                task.id(),
                task.trace()
            );
        }
        Ok(out)
    }

    pub(super) async fn task_stacks(
        handle: &Handle,
        runtime: &str,
        timeout: Duration,
    ) -> Result<Vec<TaskStacks>, TaskDumpError> {
        let dump = raw_dump(handle, timeout).await?;
        let runtime = runtime.to_string();
        // Resolving parses debug info (the first time ~100 ms): off the admin runtime's thread.
        tokio::task::spawn_blocking(move || {
            dump.tasks()
                .iter()
                .map(|task| TaskStacks {
                    runtime: runtime.clone(),
                    id: task.id().to_string().parse().unwrap_or(0),
                    stacks: task
                        .trace()
                        .resolve_backtraces()
                        .iter()
                        .map(|bt| bt.frames().flat_map(frames).collect())
                        .collect(),
                })
                .collect()
        })
        .await
        .map_err(|e| TaskDumpError::Failed(e.to_string()))
    }

    /// One machine frame's functions, inlined ones first (as [`Frame`] lists them).
    fn frames(f: &tokio::runtime::dump::BacktraceFrame) -> Vec<Frame> {
        let address = f.ip() as u64;
        let mut out: Vec<Frame> = f
            .symbols()
            .map(|s| Frame {
                address,
                function: s
                    .name_demangled()
                    .map(|n| super::super::go_text::strip_hash(n).to_string()),
                system_name: None,
                file: s.filename().map(|p| p.display().to_string()),
                line: s.lineno(),
                inlined: true,
            })
            .collect();
        match out.last_mut() {
            Some(physical) => physical.inlined = false,
            None => out.push(Frame::unknown(address)),
        }
        out
    }
}

#[cfg(not(all(
    tokio_unstable,
    tokio_taskdump,
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "s390x"
    )
)))]
mod dump {
    use super::TaskDumpError;
    use std::time::Duration;
    use tokio::runtime::Handle;

    pub(super) const COMPILED: bool = false;

    pub(super) async fn task_dump(_: &Handle, _: Duration) -> Result<String, TaskDumpError> {
        Err(TaskDumpError::NotCompiled)
    }

    pub(super) async fn task_stacks(
        _: &Handle,
        _: &str,
        _: Duration,
    ) -> Result<Vec<super::super::go_text::TaskStacks>, TaskDumpError> {
        Err(TaskDumpError::NotCompiled)
    }
}
