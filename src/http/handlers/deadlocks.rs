//! `GET /debug/deadlocks`: the parking_lot deadlock detector's reports.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::deadlock::DeadlockDetector;

/// Runs one check now, then returns the last reports as JSON (or text with `?format=text`).
pub async fn deadlocks(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let Some(detector) = shared.probes.deadlock.clone() else {
        return Err(ApiError::unavailable(
            "deadlock detection is off: enable it with Admin::builder().deadlock_detection(Duration::from_secs(10))",
        ));
    };
    let d = detector.clone();
    // Symbolizing backtraces is CPU work: keep it off the admin runtime's only thread.
    tokio::task::spawn_blocking(move || d.check())
        .await
        .map_err(|e| ApiError::internal(format!("the deadlock check failed: {e}")))?;
    let reports = detector.reports();
    if format == "text" {
        let mut text = format!(
            "deadlock detector: {} checks, {} cycles found; {} reports kept\n\n",
            detector.checks_total(),
            detector.detected_total(),
            reports.len()
        );
        if reports.is_empty() {
            text.push_str("no deadlock found (only parking_lot locks are seen)\n");
        }
        for r in &reports {
            text.push_str(&r.to_text());
            text.push('\n');
        }
        return Ok(text.into_response());
    }
    Ok(Json(report(&detector)).into_response())
}

/// The `/debug/deadlocks` JSON body (also a part of the bundle).
pub fn report(detector: &DeadlockDetector) -> serde_json::Value {
    serde_json::json!({
        "checks_total": detector.checks_total(),
        "detected_total": detector.detected_total(),
        "reports": detector.reports(),
        "note": "only parking_lot locks are seen",
    })
}
