//! `GET /debug/threads`: the stack of every OS thread.

use axum::extract::RawQuery;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::probes::threads::{dump, DumpOptions};

/// JSON by default, a jstack-like text dump with `?format=text`.
pub async fn threads(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let dump = tokio::task::spawn_blocking(|| dump(DumpOptions::default()))
        .await
        .map_err(|e| ApiError::internal(format!("the thread dump failed: {e}")))?;
    Ok(match format {
        "text" => dump.to_text().into_response(),
        _ => Json(dump).into_response(),
    })
}
