//! `GET /debug/bundle?seconds=N`: one tar.gz with every probe's parts, for the incident
//! ticket.
//!
//! Every registered probe contributes its parts; all run at once, so windowed parts (the CPU
//! profile) and instant ones show the same moment. A part that fails is listed in
//! `manifest.json` with why, and never fails the bundle.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::state::ServerState;
use crate::seam::{blocking, Access, ApiError, BundlePart, Params, Route, RouteSpec};
use crate::security::Scope;

/// Default length of a bundle's windowed parts, in seconds.
const DEFAULT_SECONDS: u64 = 10;

/// The bundle's route.
pub(super) static ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/bundle",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |l| {
        format!(
            "one tar.gz of everything (CPU profile for ?seconds=1..{max}, default {d}; heap, memory, threads, deadlocks, pools, metrics, the last 10 minutes' timeline, process) with a manifest",
            max = l.max_profile_seconds,
            d = DEFAULT_SECONDS.min(l.max_profile_seconds)
        )
    },
};

/// The bundle's route with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    ROUTE.serve(&state.limits, bundle, state.clone())
}

/// One entry of `manifest.json`.
#[derive(Debug, Serialize)]
struct ManifestPart {
    /// File name inside the archive.
    file: String,
    /// Whether the part was produced.
    ok: bool,
    /// Why not, when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Size of the file, bytes.
    bytes: usize,
    /// Time taken to produce it, milliseconds.
    duration_ms: f64,
}

/// `manifest.json`.
#[derive(Debug, Serialize)]
struct Manifest {
    /// The service's name.
    service: String,
    /// When the bundle was started.
    #[serde(serialize_with = "crate::encode::time::rfc3339")]
    created_at: SystemTime,
    /// Length of the windowed parts, seconds.
    cpu_profile_seconds: u64,
    /// prodbg's version.
    prodbg_version: &'static str,
    /// Every part, in archive order.
    parts: Vec<ManifestPart>,
}

/// Gathers every probe's parts (windowed ones over `seconds`, default 10) into one archive.
async fn bundle(
    State(state): State<Arc<ServerState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["seconds"])?;
    let max = state.limits.max_profile_seconds;
    let seconds = params.u64_in("seconds", 1..=max, DEFAULT_SECONDS.min(max))?;
    let _cap = state.fair.cap("bundles").take()?;
    let created = SystemTime::now();
    let window = Duration::from_secs(seconds);

    let produced = produce(parts(&state, window)).await;

    let mut files = Vec::new();
    let mut manifest_parts = Vec::new();
    for (file, took, body) in produced {
        let duration_ms = took.as_secs_f64() * 1e3;
        match body {
            Ok(bytes) => {
                manifest_parts.push(ManifestPart {
                    file: file.clone(),
                    ok: true,
                    error: None,
                    bytes: bytes.len(),
                    duration_ms,
                });
                files.push((file, bytes));
            }
            Err(e) => manifest_parts.push(ManifestPart {
                file,
                ok: false,
                error: Some(e),
                bytes: 0,
                duration_ms,
            }),
        }
    }
    let manifest = Manifest {
        service: state.service_name.to_string(),
        created_at: created,
        cpu_profile_seconds: seconds,
        prodbg_version: env!("CARGO_PKG_VERSION"),
        parts: manifest_parts,
    };
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let archive = blocking("packing the bundle", move || {
        tar_gz(&manifest, &files, created)
    })
    .await?
    .map_err(|e| ApiError::internal(format!("packing the bundle failed: {e}")))?;
    let name = crate::seam::download::file_name(&state.service_name, "bundle", created, "tar.gz");
    let mut response = ([(header::CONTENT_TYPE, "application/gzip")], archive).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        crate::seam::download::attachment(&name),
    );
    Ok(response)
}

/// Every probe's parts with windowed ones over `window`, then `metrics.txt` and the last 10
/// minutes' `timeline.json`: what a bundle and an incident hold.
pub(super) fn parts(state: &ServerState, window: Duration) -> Vec<BundlePart> {
    let mut parts: Vec<BundlePart> = state.probes.iter().flat_map(|p| p.bundle(window)).collect();
    let metrics = super::exposition::render(state, false)
        .map(String::into_bytes)
        .map_err(|e| e.message);
    parts.push(BundlePart::new("metrics.txt", async move { metrics }));
    let timeline = super::timeline::last(state, super::timeline::DEFAULT_SINCE, Duration::ZERO);
    parts.push(BundlePart::json("timeline.json", &timeline));
    parts
}

/// Runs every part at once; one `(file, time its part took, bytes or why not)` per file.
pub(super) async fn produce(
    parts: Vec<BundlePart>,
) -> Vec<(String, Duration, Result<Vec<u8>, String>)> {
    let timed = parts.into_iter().map(|part| async move {
        let started = Instant::now();
        let result = part.bytes.await;
        (part.files, started.elapsed(), result)
    });
    let mut out = Vec::new();
    for (names, took, result) in futures_util::future::join_all(timed).await {
        let count = names.len();
        let bodies: Vec<Result<Vec<u8>, String>> = match result {
            Ok(bodies) if bodies.len() == count => bodies.into_iter().map(Ok).collect(),
            Ok(bodies) => vec![
                Err(format!(
                    "the part yielded {} files for {count} names",
                    bodies.len()
                ));
                count
            ],
            Err(e) => vec![Err(e); count],
        };
        out.extend(names.into_iter().zip(bodies).map(|(f, b)| (f, took, b)));
    }
    out
}

fn tar_gz(
    manifest: &[u8],
    files: &[(String, Vec<u8>)],
    created: SystemTime,
) -> std::io::Result<Vec<u8>> {
    let all = std::iter::once(("manifest.json", manifest))
        .chain(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    crate::encode::archive::tar_gz("prodbg-bundle", all, created)
}
