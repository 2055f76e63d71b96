//! `GET /debug/pprof/profile`: a CPU profile as pprof (default, like Go), SVG or folded stacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::cpu::{self, CpuError, CpuProfile, CpuProfileOptions, MAX_FREQUENCY_HZ};

/// Go's default profile length.
const DEFAULT_SECONDS: u64 = 30;
/// pprof-rs's and the Linux perf tools' usual rate: not a multiple of common timer periods.
const DEFAULT_FREQUENCY: u64 = 99;

/// Samples for `seconds`, then answers in `format`. Dropping the request (client gone) drops the
/// running profile, which stops sampling.
pub async fn profile(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["seconds", "frequency", "format"])?;
    let max = shared.limits.max_profile_seconds;
    let seconds = params.u64_in("seconds", 1..=max, DEFAULT_SECONDS.min(max))?;
    let frequency = params.u64_in(
        "frequency",
        1..=u64::from(MAX_FREQUENCY_HZ),
        DEFAULT_FREQUENCY,
    )?;
    let format = params.choice("format", &["pprof", "svg", "folded"], "pprof")?;
    let opts = CpuProfileOptions {
        duration: Duration::from_secs(seconds),
        frequency_hz: frequency as u32,
    };
    let profile = take(opts).await?;
    let service = shared.service_name.clone();
    let format = format.to_string();
    let (profile, body, render_ms) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let body = match format.as_str() {
            "svg" => profile.svg(&title(&service, &profile))?,
            "folded" => profile.folded().into_bytes(),
            _ => profile.pprof_gz()?,
        };
        Ok::<_, CpuError>((profile, body, start.elapsed().as_secs_f64() * 1e3))
    })
    .await
    .map_err(|e| ApiError::internal(format!("rendering the profile failed: {e}")))?
    .map_err(cpu_error)?;
    tracing::info!(
        target: "prodbg",
        seconds, frequency, samples = profile.samples, effective_rate_hz = profile.effective_rate_hz,
        format = params.get("format").unwrap_or("pprof"), render_ms,
        "CPU profile taken"
    );
    let (content_type, disposition) = match params.get("format").unwrap_or("pprof") {
        "svg" => ("image/svg+xml", "inline; filename=\"cpu.svg\""),
        "folded" => (
            "text/plain; charset=utf-8",
            "inline; filename=\"cpu.folded\"",
        ),
        _ => (
            "application/octet-stream",
            "attachment; filename=\"profile\"",
        ),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-prodbg-samples", profile.samples.to_string());
    set("x-prodbg-requested-hz", frequency.to_string());
    set(
        "x-prodbg-effective-sample-rate",
        format!("{:.1}", profile.effective_rate_hz),
    );
    if let Some(w) = profile.warnings.first() {
        set(
            "x-prodbg-warning",
            w.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), " "),
        );
    }
    Ok(response)
}

/// Samples for `opts.duration` and returns the symbolized profile. Dropping the future stops
/// sampling.
pub async fn take(opts: CpuProfileOptions) -> Result<CpuProfile, ApiError> {
    // The first start reads the binary's debug info: keep it off the admin runtime's thread.
    let running = tokio::task::spawn_blocking(move || cpu::start(opts))
        .await
        .map_err(|e| ApiError::internal(format!("starting the profiler failed: {e}")))?
        .map_err(cpu_error)?;
    tokio::time::sleep(opts.duration).await;
    tokio::task::spawn_blocking(move || running.stop())
        .await
        .map_err(|e| ApiError::internal(format!("stopping the profiler failed: {e}")))?
        .map_err(cpu_error)
}

/// The flamegraph title: service, length, rate and sample count.
pub fn title(service: &str, p: &CpuProfile) -> String {
    format!(
        "{service}: CPU {} s at {} Hz, {} samples",
        p.duration.as_secs(),
        p.frequency_hz,
        p.samples
    )
}

fn cpu_error(e: CpuError) -> ApiError {
    match e {
        CpuError::Busy { remaining } => ApiError::conflict(format!(
            "a CPU profile is already running (one at a time per process); it ends in {} s — retry after that",
            remaining.as_secs().max(1)
        )),
        CpuError::Start(m) => ApiError::internal(format!("cannot start the CPU profiler: {m}")),
        CpuError::Report(m) => ApiError::internal(format!("cannot build the CPU profile: {m}")),
    }
}
