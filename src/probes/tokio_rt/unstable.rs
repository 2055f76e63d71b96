//! The one place that knows which runtime metrics need `--cfg tokio_unstable`: each such
//! number is read through [`unstable!`], which is `None` in a stable build, and a stable build
//! names the missing fields in `unavailable`.

use std::time::Duration;

use tokio::runtime::RuntimeMetrics;

use super::window::{RuntimeExtra, RuntimeWindow};

/// `Some(expr)` under `--cfg tokio_unstable`, `None` (and `expr` not compiled) otherwise.
macro_rules! unstable {
    ($e:expr) => {{
        #[cfg(tokio_unstable)]
        let v = Some($e);
        #[cfg(not(tokio_unstable))]
        let v = None;
        v
    }};
}

/// Per-worker numbers that tokio only publishes under `tokio_unstable`.
#[derive(Debug, Clone, Default)]
pub(super) struct WorkerExtra {
    pub(super) poll: Option<u64>,
    pub(super) noop: Option<u64>,
    pub(super) steal: Option<u64>,
    pub(super) steal_operations: Option<u64>,
    pub(super) overflow: Option<u64>,
    pub(super) local_schedule: Option<u64>,
    pub(super) local_queue_depth: Option<usize>,
    pub(super) mean_poll_time: Option<Duration>,
    pub(super) histogram: Option<Vec<u64>>,
}

/// Fields left `None` in a stable build.
#[cfg(not(tokio_unstable))]
const UNAVAILABLE: &[&str] = &[
    "spawned_tasks_total",
    "remote_schedules_total",
    "budget_forced_yields_total",
    "blocking_threads",
    "idle_blocking_threads",
    "blocking_queue_depth",
    "poll_time_histogram",
    "poll_count",
    "polls_per_second",
    "noop_count",
    "steal_count",
    "steal_operations",
    "overflow_count",
    "local_schedule_count",
    "local_queue_depth",
    "mean_poll_time_seconds",
];

#[cfg_attr(not(tokio_unstable), allow(unused_variables))]
pub(super) fn worker(m: &RuntimeMetrics, w: usize) -> WorkerExtra {
    let histogram: Option<Option<Vec<u64>>> =
        unstable!(m.poll_time_histogram_enabled().then(|| {
            (0..m.poll_time_histogram_num_buckets())
                .map(|b| m.poll_time_histogram_bucket_count(w, b))
                .collect()
        }));
    WorkerExtra {
        poll: unstable!(m.worker_poll_count(w)),
        noop: unstable!(m.worker_noop_count(w)),
        steal: unstable!(m.worker_steal_count(w)),
        steal_operations: unstable!(m.worker_steal_operations(w)),
        overflow: unstable!(m.worker_overflow_count(w)),
        local_schedule: unstable!(m.worker_local_schedule_count(w)),
        local_queue_depth: unstable!(m.worker_local_queue_depth(w)),
        mean_poll_time: unstable!(m.worker_mean_poll_time(w)),
        histogram: histogram.flatten(),
    }
}

#[cfg_attr(not(tokio_unstable), allow(unused_variables))]
pub(super) fn runtime(m: &RuntimeMetrics) -> RuntimeExtra {
    #[cfg(tokio_unstable)]
    let (histogram_bounds, unavailable) = {
        let enabled = m.poll_time_histogram_enabled();
        let buckets = m.poll_time_histogram_num_buckets();
        let bounds = enabled.then(|| {
            (0..buckets.saturating_sub(1))
                .map(|b| m.poll_time_histogram_bucket_range(b).end.as_secs_f64())
                .collect()
        });
        let mut unavailable = Vec::new();
        if !enabled {
            unavailable.push(
                "poll_time_histogram: build the runtime with \
                 tokio::runtime::Builder::enable_metrics_poll_time_histogram()"
                    .to_owned(),
            );
        }
        (bounds, unavailable)
    };
    #[cfg(not(tokio_unstable))]
    let (histogram_bounds, unavailable) = (
        None,
        UNAVAILABLE
            .iter()
            .map(|f| format!("{f}: {}", super::window::NEEDS_TOKIO_UNSTABLE))
            .collect(),
    );
    RuntimeExtra {
        spawned_tasks_total: unstable!(m.spawned_tasks_count()),
        remote_schedules_total: unstable!(m.remote_schedule_count()),
        budget_forced_yields_total: unstable!(m.budget_forced_yield_count()),
        blocking_threads: unstable!(m.num_blocking_threads()),
        idle_blocking_threads: unstable!(m.num_idle_blocking_threads()),
        blocking_queue_depth: unstable!(m.blocking_queue_depth()),
        histogram_bounds,
        unavailable,
    }
}

pub(super) fn window(i: &tokio_metrics::RuntimeMetrics) -> RuntimeWindow {
    let histogram: Option<Option<Vec<u64>>> =
        unstable!((!i.poll_time_histogram.is_empty()).then(|| i.poll_time_histogram.clone()));
    RuntimeWindow {
        elapsed_seconds: i.elapsed.as_secs_f64(),
        busy_seconds: i.total_busy_duration.as_secs_f64(),
        busy_seconds_max_worker: i.max_busy_duration.as_secs_f64(),
        busy_seconds_min_worker: i.min_busy_duration.as_secs_f64(),
        parks: i.total_park_count,
        polls: unstable!(i.total_polls_count),
        polls_per_second: unstable!(super::window::per_second(i.total_polls_count, i.elapsed)),
        mean_poll_time_seconds: unstable!(
            (i.total_polls_count > 0).then_some(i.mean_poll_duration.as_secs_f64())
        )
        .flatten(),
        steals: unstable!(i.total_steal_count),
        overflows: unstable!(i.total_overflow_count),
        remote_schedules: unstable!(i.num_remote_schedules),
        budget_forced_yields: unstable!(i.budget_forced_yield_count),
        poll_time_histogram: histogram.flatten(),
    }
}
