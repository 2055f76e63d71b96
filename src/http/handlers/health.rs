//! `GET /health/live` and `GET /health/ready`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::health::{run_checks, CheckStatus};

/// 200 while the admin server's own thread answers. Takes no parameters.
pub async fn live(RawQuery(q): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// Runs every readiness check; 200 when all pass, 503 listing each check otherwise. Takes no
/// parameters.
pub async fn ready(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    let results = run_checks(&shared.checks).await;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.status != CheckStatus::Ok)
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Json(serde_json::json!({ "status": "ok", "checks": results })).into_response()
    } else {
        let body = serde_json::json!({
            "error": "not_ready",
            "message": format!("readiness checks failed: {}", failed.join(", ")),
            "checks": results,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
