//! Probe data → Prometheus samples, with the documented metric names.

use super::prometheus::Scrape;
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
