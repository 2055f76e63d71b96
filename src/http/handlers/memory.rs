//! `GET /debug/memory`: allocator stats and process memory.

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::probes::memory::process_memory;

/// jemalloc's numbers (after advancing its epoch) and the process's RSS/VM. When jemalloc is
/// not there, 503 with the reason, and the process numbers still come back.
pub async fn memory(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let (ok, body) = report();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// The `/debug/memory` body, and whether jemalloc's part is there (also a part of the bundle).
pub fn report() -> (bool, serde_json::Value) {
    let process = process_memory();
    match jemalloc() {
        Ok(jemalloc) => (
            true,
            serde_json::json!({ "process": process, "jemalloc": jemalloc }),
        ),
        Err(message) => (
            false,
            serde_json::json!({ "error": "unavailable", "message": message, "process": process }),
        ),
    }
}

#[cfg(feature = "heap")]
fn jemalloc() -> Result<serde_json::Value, String> {
    crate::probes::memory::jemalloc_stats()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .map_err(|e| format!("jemalloc stats are not available: {e}"))
}

#[cfg(not(feature = "heap"))]
fn jemalloc() -> Result<serde_json::Value, String> {
    Err("jemalloc stats are not compiled in: build prodbg with the `heap` cargo feature".into())
}
