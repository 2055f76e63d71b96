//! `GET /debug/process`: pid, uptime, build info, command line, redacted environment, limits.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;

/// The process report as JSON.
pub async fn process(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let info = tokio::task::spawn_blocking(crate::probes::process::info)
        .await
        .map_err(|e| ApiError::internal(format!("the process probe failed: {e}")))?;
    Ok(Json(report(&shared, info)))
}

/// The `/debug/process` body (also a part of the bundle).
pub fn report(shared: &Shared, info: crate::probes::process::ProcessInfo) -> serde_json::Value {
    serde_json::json!({
        "service": shared.service_name,
        "build": shared.build_info,
        "prodbg_version": env!("CARGO_PKG_VERSION"),
        "process": info,
    })
}
