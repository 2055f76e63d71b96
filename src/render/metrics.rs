//! Probe data → Prometheus samples, with the documented metric names.

use super::prometheus::{HistogramSample, Scrape};
use crate::probes::pools::PoolSnapshot;
use crate::probes::process::ProcessStats;

/// The standard `process_*` metrics (same names as the Prometheus client libraries).
pub fn process(s: &mut Scrape, p: &ProcessStats) {
    s.counter(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        p.cpu_seconds,
    );
    s.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        p.resident_bytes as f64,
    );
    s.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        p.virtual_bytes as f64,
    );
    s.gauge(
        "process_open_fds",
        "Number of open file descriptors",
        p.open_fds as f64,
    );
    s.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors",
        p.max_fds as f64,
    );
    s.gauge(
        "process_threads",
        "Number of OS threads in the process",
        p.threads as f64,
    );
    s.gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        p.start_time_seconds,
    );
}

/// `prodbg_pool_*` gauges and counters, one sample per pool (label `pool`). A number the pool
/// cannot tell has no sample.
pub fn pools(s: &mut Scrape, pools: &[(String, PoolSnapshot)]) {
    type Field = fn(&PoolSnapshot) -> Option<f64>;
    let gauges: [(&str, &str, Field); 7] = [
        (
            "prodbg_pool_max_connections",
            "Most connections the pool will open",
            |p| p.max_size.map(|v| v as f64),
        ),
        (
            "prodbg_pool_connections",
            "Connections the pool holds, idle plus in use",
            |p| p.size.map(|v| v as f64),
        ),
        (
            "prodbg_pool_idle_connections",
            "Open connections idle in the pool",
            |p| p.idle.map(|v| v as f64),
        ),
        (
            "prodbg_pool_in_use_connections",
            "Connections checked out by the application",
            |p| p.in_use.map(|v| v as f64),
        ),
        (
            "prodbg_pool_waiting_acquirers",
            "Callers waiting for a connection",
            |p| p.waiting.map(|v| v as f64),
        ),
        (
            "prodbg_pool_utilisation_ratio",
            "In-use connections divided by the maximum",
            |p| p.utilisation(),
        ),
        (
            "prodbg_pool_saturated",
            "1 when every connection is in use and callers wait",
            |p| p.saturated().map(|b| if b { 1.0 } else { 0.0 }),
        ),
    ];
    let label = |name: &str| vec![("pool".to_string(), name.to_string())];
    for (metric, help, field) in gauges {
        s.gauges(
            metric,
            help,
            pools
                .iter()
                .filter_map(|(n, p)| Some((label(n), field(p)?))),
        );
    }
    s.counters(
        "prodbg_pool_acquire_timeouts",
        "Acquires that timed out",
        pools
            .iter()
            .filter_map(|(n, p)| Some((label(n), p.acquire_timeouts_total? as f64))),
    );
    s.histograms(
        "prodbg_pool_acquire_wait_seconds",
        "Time acquires waited for a connection, in seconds",
        pools.iter().filter_map(|(n, p)| {
            let h = p.acquire_wait.as_ref()?;
            let sample = HistogramSample {
                cumulative: h.buckets.iter().map(|b| (b.le_seconds, b.count)).collect(),
                count: h.count,
                sum: h.sum_seconds,
            };
            Some((label(n), sample))
        }),
    );
}

/// `prodbg_deadlocks_detected_total` and `prodbg_deadlock_checks_total`.
pub fn deadlocks(s: &mut Scrape, detected: u64, checks: u64) {
    s.counter(
        "prodbg_deadlocks_detected",
        "parking_lot lock cycles found since start",
        detected as f64,
    );
    s.counter(
        "prodbg_deadlock_checks",
        "Deadlock checks run since start",
        checks as f64,
    );
}

/// `prodbg_jemalloc_*_bytes` gauges and the heap-profiling state.
#[cfg(feature = "heap")]
pub fn jemalloc(s: &mut Scrape, j: &crate::probes::memory::JemallocStats) {
    let bytes = [
        (
            "allocated",
            "Bytes allocated by the application and not yet freed",
            j.allocated_bytes,
        ),
        (
            "active",
            "Bytes in pages holding at least one live allocation",
            j.active_bytes,
        ),
        (
            "resident",
            "Bytes of physical memory jemalloc holds",
            j.resident_bytes,
        ),
        (
            "mapped",
            "Bytes in chunks jemalloc has mapped and uses",
            j.mapped_bytes,
        ),
        (
            "retained",
            "Bytes of virtual memory kept mapped but returned to the OS",
            j.retained_bytes,
        ),
        (
            "metadata",
            "Bytes jemalloc uses for its own bookkeeping",
            j.metadata_bytes,
        ),
    ];
    for (name, help, v) in bytes {
        s.gauge(&format!("prodbg_jemalloc_{name}_bytes"), help, v as f64);
    }
    s.gauge(
        "prodbg_jemalloc_fragmentation_ratio",
        "(resident - allocated) / resident: share of jemalloc's memory not holding live data",
        j.fragmentation_ratio,
    );
    s.gauge(
        "prodbg_heap_profiling_enabled",
        "1 when jemalloc was started with prof:true",
        f64::from(u8::from(j.profiling.opt_prof)),
    );
    s.gauge(
        "prodbg_heap_profiling_active",
        "1 while jemalloc samples allocations (prof.active)",
        f64::from(u8::from(j.profiling.active)),
    );
}

/// `prodbg_tokio_*`: per runtime (label `runtime`) and per worker (labels `runtime`, `worker`).
/// A metric this build cannot read (it needs `--cfg tokio_unstable`) has no samples.
pub fn tokio(s: &mut Scrape, runtimes: &[crate::probes::tokio_rt::RuntimeReport]) {
    use crate::probes::tokio_rt::{RuntimeReport, WorkerReport};
    let rt = |r: &RuntimeReport| vec![("runtime".to_string(), r.name.clone())];
    type RtField = fn(&RuntimeReport) -> Option<f64>;
    let per_runtime: [(&str, &str, RtField); 4] = [
        (
            "prodbg_tokio_workers",
            "Worker threads of the runtime",
            |r| Some(r.workers as f64),
        ),
        (
            "prodbg_tokio_alive_tasks",
            "Tasks spawned and not yet finished",
            |r| Some(r.alive_tasks as f64),
        ),
        (
            "prodbg_tokio_global_queue_depth",
            "Tasks waiting in the runtime's global queue",
            |r| Some(r.global_queue_depth as f64),
        ),
        (
            "prodbg_tokio_blocking_threads",
            "Threads of the blocking pool",
            |r| r.blocking_threads.map(|v| v as f64),
        ),
    ];
    for (name, help, field) in per_runtime {
        s.gauges(
            name,
            help,
            runtimes.iter().filter_map(|r| Some((rt(r), field(r)?))),
        );
    }
    let workers = || {
        runtimes.iter().flat_map(|r| {
            r.per_worker.iter().map(move |w| {
                let labels = vec![
                    ("runtime".to_string(), r.name.clone()),
                    ("worker".to_string(), w.index.to_string()),
                ];
                (labels, w)
            })
        })
    };
    type WField = fn(&WorkerReport) -> Option<f64>;
    let counters: [(&str, &str, WField); 5] = [
        (
            "prodbg_tokio_worker_busy_seconds",
            "Time the worker spent polling tasks, in seconds",
            |w| Some(w.busy_seconds_total),
        ),
        (
            "prodbg_tokio_worker_parks",
            "Times the worker parked (went idle)",
            |w| Some(w.park_count as f64),
        ),
        (
            "prodbg_tokio_worker_polls",
            "Task polls by the worker",
            |w| w.poll_count.map(|v| v as f64),
        ),
        (
            "prodbg_tokio_worker_steals",
            "Tasks the worker stole from other workers",
            |w| w.steal_count.map(|v| v as f64),
        ),
        (
            "prodbg_tokio_worker_overflows",
            "Times the worker's local queue overflowed into the global queue",
            |w| w.overflow_count.map(|v| v as f64),
        ),
    ];
    for (name, help, field) in counters {
        s.counters(
            name,
            help,
            workers().filter_map(|(l, w)| Some((l, field(w)?))),
        );
    }
    let gauges: [(&str, &str, WField); 2] = [
        (
            "prodbg_tokio_worker_local_queue_depth",
            "Tasks in the worker's local queue",
            |w| w.local_queue_depth.map(|v| v as f64),
        ),
        (
            "prodbg_tokio_worker_mean_poll_time_seconds",
            "Exponentially weighted mean poll time, in seconds",
            |w| w.mean_poll_time_seconds,
        ),
    ];
    for (name, help, field) in gauges {
        s.gauges(
            name,
            help,
            workers().filter_map(|(l, w)| Some((l, field(w)?))),
        );
    }
}
