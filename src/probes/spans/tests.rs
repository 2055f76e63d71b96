//! The spans reader fed by a real layer: in-flight spans and their caps, latency, and the three
//! ways to install the layer. Each test runs its own subscriber with `with_default`, so tests
//! never share a layer.

mod in_flight;
mod install;
mod labels_tokio;
mod latency;

use crate::layer::test_support::{dispatch, with};

use super::span_report::{self, InFlightReport, LatencyReport, NameFilter, MAX_LIMIT};
use crate::layer::SpansHandle;

/// The spans reader's two reports, as the tests read them.
trait Read {
    /// Spans open now at least `min_age_ms` milliseconds old, oldest first (all of them).
    fn in_flight(&self, min_age_ms: u64) -> InFlightReport;
    /// The same, at most `limit` spans (the oldest).
    fn in_flight_up_to(&self, min_age_ms: u64, limit: usize, names: &NameFilter) -> InFlightReport;
    /// Latency per target and span name over the window.
    fn latency(&self) -> LatencyReport;
}

impl Read for SpansHandle {
    fn in_flight(&self, min_age_ms: u64) -> InFlightReport {
        self.in_flight_up_to(min_age_ms, MAX_LIMIT, &NameFilter::default())
    }

    fn in_flight_up_to(&self, min_age_ms: u64, limit: usize, names: &NameFilter) -> InFlightReport {
        span_report::in_flight(self.shared(), min_age_ms, limit, names)
    }

    fn latency(&self) -> LatencyReport {
        span_report::latency_report(self.shared(), &NameFilter::default())
    }
}
