//! `GET /debug/bundle?seconds=N`: one tar.gz with everything, for the incident ticket.
//!
//! Each part is taken on its own; a part that fails is listed in `manifest.json` with why, and
//! never fails the bundle.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::http::state::Shared;

/// Default CPU-profile length of a bundle, in seconds.
const DEFAULT_SECONDS: u64 = 10;

/// One entry of `manifest.json`.
#[derive(Debug, Serialize)]
struct Part {
    file: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    bytes: usize,
    duration_ms: f64,
}

/// The archive being assembled: files plus their manifest entries.
struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    parts: Vec<Part>,
}

impl Bundle {
    fn add(&mut self, file: &str, started: Instant, result: Result<Vec<u8>, String>) {
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(bytes) => {
                self.parts.push(Part {
                    file: file.into(),
                    ok: true,
                    error: None,
                    bytes: bytes.len(),
                    duration_ms,
                });
                self.files.push((file.into(), bytes));
            }
            Err(e) => self.parts.push(Part {
                file: file.into(),
                ok: false,
                error: Some(e),
                bytes: 0,
                duration_ms,
            }),
        }
    }
}

/// Takes a CPU profile for `seconds` (default 10) and gathers every other probe meanwhile.
pub async fn bundle(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["seconds"])?;
    let max = shared.limits.max_profile_seconds;
    let seconds = params.u64_in("seconds", 1..=max, DEFAULT_SECONDS.min(max))?;
    let created = SystemTime::now();
    let mut b = Bundle {
        files: Vec::new(),
        parts: Vec::new(),
    };

    // The CPU profile runs while the quick parts are read, so they show the same moment.
    let cpu = cpu_part(shared.clone(), seconds);
    let quick = quick_parts(shared.clone());
    let (cpu_files, quick_files) = tokio::join!(cpu, quick);
    for (file, started, result) in cpu_files.into_iter().chain(quick_files) {
        b.add(&file, started, result);
    }

    let started = Instant::now();
    let metrics = super::metrics::render(&shared, false)
        .await
        .map(String::into_bytes)
        .map_err(|e| e.message);
    b.add("metrics.txt", started, metrics);

    let manifest = serde_json::json!({
        "service": shared.service_name,
        "created_at": humantime::format_rfc3339_millis(created).to_string(),
        "cpu_profile_seconds": seconds,
        "prodbg_version": env!("CARGO_PKG_VERSION"),
        "parts": b.parts,
    });
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let files = std::mem::take(&mut b.files);
    let archive = tokio::task::spawn_blocking(move || tar_gz(&manifest, &files, created))
        .await
        .map_err(|e| ApiError::internal(format!("packing the bundle failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("packing the bundle failed: {e}")))?;
    let stamp = created
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name: String = shared
        .service_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = ([(header::CONTENT_TYPE, "application/gzip")], archive).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"prodbg-{name}-{stamp}.tar.gz\""
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

type PartResult = (String, Instant, Result<Vec<u8>, String>);

#[cfg(feature = "cpu")]
async fn cpu_part(shared: Arc<Shared>, seconds: u64) -> Vec<PartResult> {
    let started = Instant::now();
    let opts = crate::probes::cpu::CpuProfileOptions {
        duration: Duration::from_secs(seconds),
        frequency_hz: 99,
    };
    match super::cpu::take(opts).await {
        Err(e) => vec![
            ("cpu.pb.gz".into(), started, Err(e.message.clone())),
            ("cpu.svg".into(), started, Err(e.message)),
        ],
        Ok(profile) => {
            let service = shared.service_name.clone();
            let rendered = tokio::task::spawn_blocking(move || {
                let title = super::cpu::title(&service, &profile);
                (profile.pprof_gz(), profile.svg(&title))
            })
            .await;
            match rendered {
                Ok((pprof, svg)) => vec![
                    (
                        "cpu.pb.gz".into(),
                        started,
                        pprof.map_err(|e| e.to_string()),
                    ),
                    ("cpu.svg".into(), started, svg.map_err(|e| e.to_string())),
                ],
                Err(e) => vec![(
                    "cpu.pb.gz".into(),
                    started,
                    Err(format!("rendering failed: {e}")),
                )],
            }
        }
    }
}

#[cfg(not(feature = "cpu"))]
async fn cpu_part(_shared: Arc<Shared>, seconds: u64) -> Vec<PartResult> {
    let _ = Duration::from_secs(seconds);
    vec![(
        "cpu.pb.gz".into(),
        Instant::now(),
        Err("not compiled in: build prodbg with the `cpu` cargo feature".into()),
    )]
}

/// Every part that takes no window: read once, right away.
async fn quick_parts(shared: Arc<Shared>) -> Vec<PartResult> {
    let mut out: Vec<PartResult> = Vec::new();
    let mut json = |file: &str, started: Instant, v: Result<serde_json::Value, String>| {
        let bytes = v.and_then(|v| serde_json::to_vec_pretty(&v).map_err(|e| e.to_string()));
        out.push((file.to_string(), started, bytes));
    };

    let t = Instant::now();
    let info = tokio::task::spawn_blocking(crate::probes::process::info).await;
    json(
        "process.json",
        t,
        info.map(|i| super::process::report(&shared, i))
            .map_err(|e| e.to_string()),
    );
    // Without jemalloc the file still holds the process numbers and says why jemalloc's are missing.
    let t = Instant::now();
    json("memory.json", t, Ok(super::memory::report().1));
    let t = Instant::now();
    json("pools.json", t, Ok(super::pools::report(&shared)));
    out.extend(tokio_parts(&shared).await);
    out.push(deadlocks(&shared).await);
    out.push(threads().await);
    out.push(heap().await);
    out
}

/// Runtime metrics over a short window, and a task dump of each runtime (when compiled in).
async fn tokio_parts(shared: &Shared) -> Vec<PartResult> {
    let t = Instant::now();
    if shared.probes.runtimes.names().is_empty() {
        let why = "no Tokio runtime is registered (.tokio_runtime(..))".to_string();
        return vec![
            ("tokio.json".into(), t, Err(why.clone())),
            ("tasks.txt".into(), t, Err(why)),
        ];
    }
    let metrics = super::tokio_rt::report(shared, Duration::from_millis(500)).await;
    let mut out = vec![(
        "tokio.json".to_string(),
        t,
        serde_json::to_vec_pretty(&metrics).map_err(|e| e.to_string()),
    )];
    let t = Instant::now();
    let mut text = String::new();
    let mut failures = Vec::new();
    for name in shared.probes.runtimes.names() {
        match super::tokio_rt::dump(shared, &name, Duration::from_secs(5)).await {
            Ok(dump) => text.push_str(&dump),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    let result = if text.is_empty() {
        Err(failures.join("; "))
    } else {
        Ok(text.into_bytes())
    };
    out.push(("tasks.txt".into(), t, result));
    out
}

#[cfg(feature = "deadlock")]
async fn deadlocks(shared: &Shared) -> PartResult {
    let t = Instant::now();
    let value = match shared.probes.deadlock.clone() {
        None => {
            Err("deadlock detection is off (Admin::builder().deadlock_detection(..))".to_string())
        }
        Some(d) => match tokio::task::spawn_blocking(move || {
            d.check();
            super::deadlocks::report(&d)
        })
        .await
        {
            Ok(v) => serde_json::to_vec_pretty(&v).map_err(|e| e.to_string()),
            Err(e) => Err(format!("the deadlock check failed: {e}")),
        },
    };
    ("deadlocks.json".into(), t, value)
}

#[cfg(not(feature = "deadlock"))]
async fn deadlocks(_shared: &Shared) -> PartResult {
    (
        "deadlocks.json".into(),
        Instant::now(),
        Err("not compiled in: build prodbg with the `deadlock` cargo feature".into()),
    )
}

#[cfg(feature = "threads")]
async fn threads() -> PartResult {
    let t = Instant::now();
    let dump = tokio::task::spawn_blocking(|| {
        crate::probes::threads::dump(crate::probes::threads::DumpOptions::default()).to_text()
    })
    .await;
    (
        "threads.txt".into(),
        t,
        dump.map(String::into_bytes).map_err(|e| e.to_string()),
    )
}

#[cfg(not(feature = "threads"))]
async fn threads() -> PartResult {
    (
        "threads.txt".into(),
        Instant::now(),
        Err("not compiled in: build prodbg with the `threads` cargo feature".into()),
    )
}

#[cfg(feature = "heap")]
async fn heap() -> PartResult {
    let t = Instant::now();
    let result = match super::heap::snapshot().await {
        Ok(p) => tokio::task::spawn_blocking(move || p.pprof_gz().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        Err(e) => Err(e.message),
    };
    ("heap.pb.gz".into(), t, result)
}

#[cfg(not(feature = "heap"))]
async fn heap() -> PartResult {
    (
        "heap.pb.gz".into(),
        Instant::now(),
        Err("not compiled in: build prodbg with the `heap` cargo feature".into()),
    )
}

fn tar_gz(
    manifest: &[u8],
    files: &[(String, Vec<u8>)],
    created: SystemTime,
) -> std::io::Result<Vec<u8>> {
    let mtime = created
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let all = std::iter::once(("manifest.json", manifest))
        .chain(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    for (name, bytes) in all {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, format!("prodbg-bundle/{name}"), bytes)?;
    }
    tar.into_inner()?.finish()
}
