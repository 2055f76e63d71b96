//! [`SpansHandle`]: what the admin server reads the layer through, and the reports it builds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tracing::Level;

use super::clock;
use super::error_groups::ErrorGroups;
use super::error_report::{ErrorReport, LogEventCounts};
use super::labels::{self, LabelTableStats};
use super::shared::Shared;
use super::span_report::{InFlightReport, LatencyReport, NameFilter};

/// What the admin server reads the layer through: hand it to
/// [`AdminBuilder::spans`](crate::AdminBuilder::spans). Cheap to clone; clones read the same
/// layer.
#[derive(Debug, Clone)]
pub struct SpansHandle {
    shared: Arc<Shared>,
}

impl SpansHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> SpansHandle {
        SpansHandle { shared }
    }
}

/// The layer's counters, as plain numbers for `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Counters {
    /// `prodbg_log_events_total{level}`: events seen per level (count; `null` = level filtered out).
    pub(crate) log_events_total: LogEventCounts,
    /// `prodbg_error_groups`: error groups held now (count).
    pub(crate) error_groups: usize,
    /// Error groups evicted since start (count).
    pub(crate) error_groups_evicted_total: u64,
    /// Spans tracked now (count).
    pub(crate) spans_tracked: u64,
    /// Spans not tracked because of the cap, since start (count).
    pub(crate) spans_dropped_total: u64,
    /// Field values cut or left out for the byte caps, since start (count).
    pub(crate) fields_truncated_total: u64,
    /// Closed spans whose name had no latency slot, since start (count).
    pub(crate) untracked_name_closes_total: u64,
    /// Callsites past the callsite cache (their facts are recomputed per span) (count).
    pub(crate) uncached_callsites_total: u64,
    /// The process-wide label tables.
    pub(crate) labels: LabelTableStats,
}

/// The console's few figures, cheap to take: no field is decoded.
#[derive(Debug, Clone)]
pub(crate) struct Glance {
    /// Spans tracked now (count).
    pub(crate) in_flight: usize,
    /// Age of the oldest, in milliseconds; `None` when none is open.
    pub(crate) oldest_ms: Option<f64>,
    /// Spans open over their name's p99 × [`OVERDUE_FACTOR`](super::span_report::OVERDUE_FACTOR) (count).
    pub(crate) overdue: usize,
    /// Spans not tracked because of the cap, since start (count).
    pub(crate) dropped_spans_total: u64,
    /// Error groups held now (count).
    pub(crate) error_groups: usize,
    /// `ERROR` events in the last minute, over all groups (count).
    pub(crate) errors_last_minute: u64,
    /// `WARN` events in the last minute, over all groups (count).
    pub(crate) warnings_last_minute: u64,
}

/// `/debug/spans`: the in-flight spans and the latency summary, together.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SpansReport {
    /// Spans open now.
    pub(crate) in_flight: InFlightReport,
    /// Latency of recently closed spans.
    pub(crate) latency: LatencyReport,
}

impl SpansHandle {
    /// Spans open now at least `min_age_ms` milliseconds old, oldest first (all of them).
    #[cfg(test)]
    pub(crate) fn in_flight(&self, min_age_ms: u64) -> InFlightReport {
        self.in_flight_up_to(
            min_age_ms,
            super::span_report::MAX_LIMIT,
            &NameFilter::default(),
        )
    }

    /// The same, at most `limit` spans (the oldest).
    pub(crate) fn in_flight_up_to(
        &self,
        min_age_ms: u64,
        limit: usize,
        names: &NameFilter,
    ) -> InFlightReport {
        super::span_report::in_flight(&self.shared, min_age_ms, limit, names)
    }

    /// Latency per target and span name over the last [`WINDOW_MINUTES`](super::span_report::WINDOW_MINUTES).
    #[cfg(test)]
    pub(crate) fn latency(&self) -> LatencyReport {
        super::span_report::latency_report(&self.shared, &NameFilter::default())
    }

    /// Both halves of `/debug/spans`, at most `limit` in-flight spans.
    pub(crate) fn spans(&self, min_age_ms: u64, limit: usize, names: &NameFilter) -> SpansReport {
        SpansReport {
            in_flight: self.in_flight_up_to(min_age_ms, limit, names),
            latency: super::span_report::latency_report(&self.shared, names),
        }
    }

    /// The error groups, most recently seen first.
    pub(crate) fn errors(&self) -> ErrorReport {
        super::error_report::report(&self.shared)
    }

    /// The console's figures.
    pub(crate) fn glance(&self, now: SystemTime) -> Glance {
        let sh = &*self.shared;
        let starts = sh.table.starts();
        let t = clock::now();
        let ages: Vec<u64> = starts
            .iter()
            .map(|&s| clock::to_nanos(t.saturating_sub(s)))
            .collect();
        let (mut errors, mut warnings) = (0, 0);
        let mut groups = 0;
        if let Some(eg) = &sh.errors {
            let st = eg.lock();
            groups = st.groups.len();
            for g in st.groups.values() {
                let n = g.last_minute(now);
                if *g.meta.level() == Level::ERROR {
                    errors += n;
                } else {
                    warnings += n;
                }
            }
        }
        Glance {
            in_flight: ages.len(),
            oldest_ms: ages.iter().max().map(|&ns| (ns / 1000) as f64 / 1000.0),
            overdue: super::span_report::overdue_count(sh),
            dropped_spans_total: sh.table.dropped.load(Ordering::Relaxed),
            error_groups: groups,
            errors_last_minute: errors,
            warnings_last_minute: warnings,
        }
    }

    /// The counters for `/metrics`.
    pub(crate) fn counters(&self) -> Counters {
        let sh = &*self.shared;
        Counters {
            log_events_total: super::error_report::event_counts(sh),
            error_groups: sh.errors.as_ref().map_or(0, ErrorGroups::len),
            error_groups_evicted_total: sh
                .errors
                .as_ref()
                .map_or(0, |e| e.evicted.load(Ordering::Relaxed)),
            spans_tracked: sh.table.tracked(),
            spans_dropped_total: sh.table.dropped.load(Ordering::Relaxed),
            fields_truncated_total: sh.truncated(),
            untracked_name_closes_total: sh.untracked_name_closes.load(Ordering::Relaxed),
            uncached_callsites_total: sh.callsites.uncached.load(Ordering::Relaxed),
            labels: labels::label_table_stats(),
        }
    }
}
