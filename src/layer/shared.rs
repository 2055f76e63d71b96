//! What the layer and its handle share: the span table, latency window, error groups, caps and
//! counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;

use super::callsite::Callsites;
use super::error_groups::ErrorGroups;
use super::latency::Latency;
use super::options::RedactFn;
use super::table::Table;

pub(crate) struct Shared {
    pub(crate) callsites: Callsites,
    pub(crate) table: Table,
    pub(crate) latency: Option<Latency>,
    pub(crate) errors: Option<ErrorGroups>,
    pub(crate) redact: Option<RedactFn>,
    pub(crate) max_spans: usize,
    pub(crate) max_field_bytes: usize,
    pub(crate) max_span_names: usize,
    pub(crate) keep_fields: bool,
    pub(crate) timing: bool,
    pub(crate) in_flight: bool,
    pub(crate) truncated: AtomicU64,
    pub(crate) untracked_name_closes: AtomicU64,
    pub(crate) levels: [AtomicU64; 5],
    /// The most verbose level this layer's own filter lets events through at.
    pub(crate) max_event: LevelFilter,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_spans", &self.max_spans)
            .field("max_field_bytes", &self.max_field_bytes)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    pub(crate) fn count_truncated(&self, n: u32) {
        if n > 0 {
            self.truncated.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

pub(crate) fn level_index(l: &Level) -> usize {
    match *l {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        _ => 4,
    }
}

/// Events seen per level since the layer was installed. A level the layer's event filter
/// never lets through is `None` (JSON `null`): unknown, not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct LogEventCounts {
    /// `ERROR` events (count).
    pub(crate) error: Option<u64>,
    /// `WARN` events (count).
    pub(crate) warn: Option<u64>,
    /// `INFO` events (count).
    pub(crate) info: Option<u64>,
    /// `DEBUG` events (count).
    pub(crate) debug: Option<u64>,
    /// `TRACE` events (count).
    pub(crate) trace: Option<u64>,
}

/// Counts per level; a level that this layer's filter, or every filter of the subscriber
/// (`LevelFilter::current()`), keeps out is `None`.
pub(crate) fn event_counts(sh: &Shared) -> LogEventCounts {
    let max = sh.max_event.min(LevelFilter::current());
    let levels = [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ];
    let c = |i: usize| (max >= levels[i]).then(|| sh.levels[i].load(Ordering::Relaxed));
    LogEventCounts {
        error: c(0),
        warn: c(1),
        info: c(2),
        debug: c(3),
        trace: c(4),
    }
}
