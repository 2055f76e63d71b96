//! `GET /debug/tokio` (runtime metrics, per worker, with rates) and `GET /debug/tokio/tasks`
//! (an async task dump).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::tokio_rt::{task_dump, TaskDumpError};

/// Longest sampling window for rates, in milliseconds.
const MAX_WINDOW_MS: u64 = 10_000;
/// Longest wait for a task dump, in milliseconds.
const MAX_DUMP_TIMEOUT_MS: u64 = 30_000;

/// Every registered runtime's metrics; rates over `?window_ms=` (0–10000, default 1000).
pub async fn metrics(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::parse(q.as_deref(), &["window_ms"])?;
    let window = params.u64_in("window_ms", 0..=MAX_WINDOW_MS, 1000)?;
    require_runtimes(&shared)?;
    Ok(Json(report(&shared, Duration::from_millis(window)).await))
}

/// The `/debug/tokio` body (also a part of the bundle).
pub async fn report(shared: &Shared, window: Duration) -> serde_json::Value {
    let runtimes = shared.probes.runtimes.snapshot(window).await;
    let mut body = serde_json::json!({ "runtimes": runtimes });
    if let Some(addr) = shared.probes.console_addr {
        body["tokio_console"] = format!("tokio-console http://{addr}").into();
    }
    body
}

/// A text dump of every task of `?runtime=` (default: the first registered), one trace per task.
pub async fn tasks(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["runtime", "timeout_ms"])?;
    let timeout = params.u64_in("timeout_ms", 100..=MAX_DUMP_TIMEOUT_MS, 5000)?;
    let names = require_runtimes(&shared)?;
    let name = match params.get("runtime") {
        Some(n) if names.iter().any(|r| r == n) => n.to_string(),
        Some(n) => {
            return Err(ApiError::bad_parameter(format!(
                "runtime={:?} is not registered; registered: {}",
                n.chars().take(64).collect::<String>(),
                names.join(", ")
            )))
        }
        None => names[0].clone(),
    };
    let text = dump(&shared, &name, Duration::from_millis(timeout))
        .await
        .map_err(dump_error)?;
    Ok(text.into_response())
}

/// One runtime's dump, headed by its name.
pub async fn dump(shared: &Shared, name: &str, timeout: Duration) -> Result<String, TaskDumpError> {
    let handle = shared.probes.runtimes.get(name).ok_or_else(|| {
        TaskDumpError::Failed(format!("runtime {name:?} is no longer registered"))
    })?;
    let text = task_dump(&handle, timeout).await?;
    Ok(format!("runtime {name:?}\n\n{text}"))
}

fn require_runtimes(shared: &Shared) -> Result<Vec<String>, ApiError> {
    let names = shared.probes.runtimes.names();
    if names.is_empty() {
        return Err(ApiError::unavailable(
            "no Tokio runtime is registered: add .tokio_runtime(\"main\", tokio::runtime::Handle::current()) to the builder",
        ));
    }
    Ok(names)
}

fn dump_error(e: TaskDumpError) -> ApiError {
    match e {
        TaskDumpError::NotCompiled => ApiError::not_compiled(e.to_string()),
        TaskDumpError::AlreadyRunning => ApiError::conflict(e.to_string()),
        TaskDumpError::Failed(_) => ApiError::internal(e.to_string()),
        _ => ApiError::unavailable(e.to_string()),
    }
}
