//! `GET /debug/pprof/heap` (and its alias `/debug/pprof/allocs`), and
//! `POST /debug/pprof/heap/activate` / `deactivate`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::http::error::ApiError;
use crate::http::guard::Identity;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::heap::{self, HeapError, HeapProfile};

/// Override kind recorded while heap sampling is switched on at run time.
const OVERRIDE_KIND: &str = "heap_sampling";

/// One growth profile at a time: each holds two dumps in memory for its window.
static GROWTH_RUNNING: AtomicBool = AtomicBool::new(false);

struct GrowthSlot;
impl GrowthSlot {
    fn take() -> Option<GrowthSlot> {
        (!GROWTH_RUNNING.swap(true, Ordering::AcqRel)).then_some(GrowthSlot)
    }
}
impl Drop for GrowthSlot {
    fn drop(&mut self) {
        GROWTH_RUNNING.store(false, Ordering::Release);
    }
}

/// The live heap of sampled allocations, or with `seconds=N` the growth over a window.
pub async fn profile(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format", "seconds"])?;
    let format = params
        .choice("format", &["pprof", "svg", "folded"], "pprof")?
        .to_string();
    let max = shared.limits.max_profile_seconds;
    let seconds = match params.get("seconds") {
        Some(_) => Some(params.u64_in("seconds", 1..=max, 0)?),
        None => None,
    };
    let state = heap::profiling_state().map_err(heap_error)?;
    let name = if uri.path().ends_with("allocs") {
        "allocs"
    } else {
        "heap"
    };
    let mut warning = None;
    if !state.active {
        if seconds.is_some() {
            return Err(ApiError::conflict(
                "heap sampling is inactive, so a growth profile would be empty: POST /debug/pprof/heap/activate first",
            ));
        }
        warning = Some("heap sampling is inactive: this shows allocations sampled while it was active; POST /debug/pprof/heap/activate");
    }
    let profile = match seconds {
        None => blocking(heap::snapshot).await?,
        Some(s) => {
            let _slot = GrowthSlot::take().ok_or_else(|| {
                ApiError::conflict("a heap growth profile is already running; retry when it ends")
            })?;
            let before = blocking(heap::snapshot).await?;
            tokio::time::sleep(Duration::from_secs(s)).await;
            let after = blocking(heap::snapshot).await?;
            heap::growth(&before, &after)
        }
    };
    let service = shared.service_name.clone();
    let what = if seconds.is_some() {
        "growth"
    } else {
        "in use"
    };
    let title = format!(
        "{service}: heap {what}{}, {} MB in {} stacks (sampled every {} KiB)",
        seconds.map(|s| format!(" over {s} s")).unwrap_or_default(),
        profile.total_bytes() / 1_000_000,
        profile.stack_count(),
        profile.sample_interval_bytes() / 1024,
    );
    let fmt = format.clone();
    let body = blocking(move || render(&profile, &fmt, &title)).await?;
    let (content_type, disposition) = match format.as_str() {
        "svg" => ("image/svg+xml", format!("inline; filename=\"{name}.svg\"")),
        "folded" => (
            "text/plain; charset=utf-8",
            format!("inline; filename=\"{name}.folded\""),
        ),
        _ => (
            "application/octet-stream",
            format!("attachment; filename=\"{name}\""),
        ),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(w) = warning {
        response.headers_mut().insert(
            HeaderName::from_static("x-prodbg-warning"),
            HeaderValue::from_static(w),
        );
    }
    Ok(response)
}

fn render(p: &HeapProfile, format: &str, title: &str) -> Result<Vec<u8>, HeapError> {
    match format {
        "svg" => p.svg(title),
        "folded" => Ok(p.folded().into_bytes()),
        _ => p.pprof_gz(),
    }
}

/// `POST /debug/pprof/heap/activate`: starts sampling allocations.
pub async fn activate(
    State(shared): State<Arc<Shared>>,
    identity: Extension<Identity>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    switch(&shared, &identity, true).await
}

/// `POST /debug/pprof/heap/deactivate`: stops sampling allocations.
pub async fn deactivate(
    State(shared): State<Arc<Shared>>,
    identity: Extension<Identity>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    switch(&shared, &identity, false).await
}

async fn switch(
    shared: &Shared,
    identity: &Identity,
    active: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    heap::set_active(active).map_err(heap_error)?;
    let by = match identity {
        Identity::Token(t) => t.name().to_string(),
        Identity::Anonymous => "anonymous".to_string(),
    };
    if active {
        shared
            .probes
            .overrides
            .record(OVERRIDE_KIND, "active".into(), &by, None);
    } else {
        shared.probes.overrides.clear(OVERRIDE_KIND);
    }
    tracing::info!(target: "prodbg", active, by = %by, "heap sampling switched");
    let state = heap::profiling_state().map_err(heap_error)?;
    Ok(Json(serde_json::json!({ "profiling": state })))
}

/// A snapshot of the live heap, taken off the admin runtime's thread.
pub async fn snapshot() -> Result<HeapProfile, ApiError> {
    blocking(heap::snapshot).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HeapError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the heap probe failed: {e}")))?
        .map_err(heap_error)
}

fn heap_error(e: HeapError) -> ApiError {
    match e {
        HeapError::NotJemalloc => ApiError::unavailable(e.to_string()),
        HeapError::ProfilingNotEnabled => ApiError::conflict(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}
