//! The numbers of a runtime window and the runtime-level extras, some of which need
//! `--cfg tokio_unstable`.

use serde::Serialize;
use std::time::Duration;

/// Runtime-wide numbers over one window, as computed by [`tokio_metrics::RuntimeMonitor`].
///
/// These are what the workers *published* during the window: a worker stuck in one poll adds
/// nothing (see [`WorkerReport::busy_ratio`] for a figure that accounts for it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub(crate) struct RuntimeWindow {
    /// Length of the window, in seconds, as tokio-metrics measured it.
    pub elapsed_seconds: f64,
    /// Busy time summed over all workers, in seconds (2 fully busy workers over 1 s = 2.0).
    pub busy_seconds: f64,
    /// Busy time of the busiest worker, in seconds.
    pub busy_seconds_max_worker: f64,
    /// Busy time of the least busy worker, in seconds.
    pub busy_seconds_min_worker: f64,
    /// Parks summed over all workers.
    pub parks: u64,
    /// Polls summed over all workers (unstable).
    pub polls: Option<u64>,
    /// `polls` per second (unstable).
    pub polls_per_second: Option<f64>,
    /// Mean poll time over the workers that polled, weighted by their polls, in seconds
    /// (unstable).
    pub mean_poll_time_seconds: Option<f64>,
    /// Tasks stolen, summed over all workers (unstable).
    pub steals: Option<u64>,
    /// Local-queue overflows, summed over all workers (unstable).
    pub overflows: Option<u64>,
    /// Tasks scheduled from outside the runtime (unstable).
    pub remote_schedules: Option<u64>,
    /// Forced yields from the cooperative budget (unstable).
    pub budget_forced_yields: Option<u64>,
    /// Polls per poll-time bucket in the window, all workers; bounds as in
    /// [`RuntimeReport::poll_time_histogram`] (unstable, histogram enabled).
    pub poll_time_histogram: Option<Vec<u64>>,
}

/// Runtime-level numbers that may be gated.
#[derive(Debug, Default)]
pub(super) struct RuntimeExtra {
    pub(super) spawned_tasks_total: Option<u64>,
    pub(super) remote_schedules_total: Option<u64>,
    pub(super) budget_forced_yields_total: Option<u64>,
    pub(super) blocking_threads: Option<usize>,
    pub(super) idle_blocking_threads: Option<usize>,
    pub(super) blocking_queue_depth: Option<usize>,
    pub(super) histogram_bounds: Option<Vec<f64>>,
    pub(super) unavailable: Vec<String>,
}

pub(super) fn per_second(delta: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        delta as f64 / secs
    } else {
        0.0
    }
}

/// What to turn on to get the metrics that tokio gates behind `--cfg tokio_unstable`.
#[cfg_attr(tokio_unstable, allow(dead_code))]
pub(super) const NEEDS_TOKIO_UNSTABLE: &str = "needs RUSTFLAGS=\"--cfg tokio_unstable\"";
