//! `GET /health/live` and `GET /health/ready`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::state::Shared;
use crate::probes::health::{run_checks, CheckStatus};

/// 200 while the admin server's own thread answers.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Runs every readiness check; 200 when all pass, 503 listing each check otherwise.
pub async fn ready(State(shared): State<Arc<Shared>>) -> Response {
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
