//! `GET /metrics`: Prometheus exposition of everything numeric the probes know.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::render::prometheus::{Scrape, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// Text format 0.0.4 by default; OpenMetrics when the `Accept` header asks for it.
pub async fn metrics(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = render(&shared, openmetrics).await?;
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        TEXT_CONTENT_TYPE
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The `/metrics` body (also a part of the bundle).
pub async fn render(shared: &Shared, openmetrics: bool) -> Result<String, ApiError> {
    let runtimes = shared
        .probes
        .runtimes
        .snapshot(std::time::Duration::ZERO)
        .await;
    let mut scrape = Scrape::new();
    crate::render::metrics::tokio(&mut scrape, &runtimes);
    crate::render::metrics::process(&mut scrape, &crate::probes::process::stats());
    crate::render::metrics::pools(&mut scrape, &shared.probes.pools.snapshot());
    #[cfg(feature = "heap")]
    if let Ok(j) = crate::probes::memory::jemalloc_stats() {
        crate::render::metrics::jemalloc(&mut scrape, &j);
    }
    #[cfg(feature = "deadlock")]
    if let Some(d) = &shared.probes.deadlock {
        crate::render::metrics::deadlocks(&mut scrape, d.detected_total(), d.checks_total());
    }
    scrape.counter(
        "prodbg_audit_records",
        "Audit records appended since start",
        shared.audit.records() as f64,
    );
    scrape.counter(
        "prodbg_audit_write_errors",
        "Audit records that could not be written to the audit file",
        shared.audit.write_errors() as f64,
    );
    scrape
        .encode(&[&shared.registry], openmetrics)
        .map_err(|_| ApiError::internal("cannot encode the metrics"))
}
