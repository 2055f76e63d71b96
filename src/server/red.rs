//! The admin server's own RED metrics: requests by endpoint and status, their duration,
//! refused requests and authentication failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0, 60.0, 120.0])
}

/// Counters and histograms the HTTP layer updates on every request.
#[derive(Debug, Clone)]
pub(crate) struct ServerMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    auth_failures: Counter,
    /// Requests answered, all endpoints together (the timeline's `admin_requests`).
    answered: Arc<AtomicU64>,
}

impl ServerMetrics {
    /// Creates the metrics and registers them in `registry` under `prodbg_`.
    pub(crate) fn new(registry: &mut Registry) -> ServerMetrics {
        let m = ServerMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            auth_failures: Counter::default(),
            answered: Arc::default(),
        };
        registry.register(
            "prodbg_http_requests",
            "Requests to the admin server, by endpoint template, method and status",
            m.requests.clone(),
        );
        registry.register(
            "prodbg_http_request_duration_seconds",
            "Time to answer a request to the admin server, by endpoint template",
            m.durations.clone(),
        );
        registry.register(
            "prodbg_auth_failures",
            "Requests refused for a missing or invalid token",
            m.auth_failures.clone(),
        );
        m
    }

    /// Records one answered request.
    pub(crate) fn observe(&self, endpoint: &str, method: &str, status: u16, seconds: f64) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// Requests answered so far, all endpoints together.
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Records one authentication failure.
    pub(crate) fn auth_failure(&self) {
        self.auth_failures.inc();
    }
}
