//! `GET /metrics`: the Prometheus exposition of the registry — the host's metrics, the
//! server's RED metrics and every probe's collector.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::state::ServerState;
use crate::encode::prometheus::{encode, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::seam::{Access, ApiError, Params, Route, RouteSpec};

/// The scrape's route.
pub(super) static ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/metrics",
    access: Access::Scrape,
    go: None,
    summary: |_| {
        "Prometheus text (OpenMetrics with Accept): every numeric probe plus the server's own RED metrics".into()
    },
};

/// The scrape's route with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    ROUTE.serve(&state.limits, metrics, state.clone())
}

/// Text format 0.0.4 by default; OpenMetrics when the `Accept` header asks for it.
async fn metrics(
    State(state): State<Arc<ServerState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = render(&state, openmetrics)?;
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        TEXT_CONTENT_TYPE
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The `/metrics` body (also a part of the bundle).
pub(super) fn render(state: &ServerState, openmetrics: bool) -> Result<String, ApiError> {
    encode(&state.registry, openmetrics)
        .map_err(|_| ApiError::internal("cannot encode the metrics"))
}
