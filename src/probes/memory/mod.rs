//! `GET /debug/memory`: what the kernel charges the process for, and what jemalloc holds
//! (feature `heap`); the `prodbg_jemalloc_*` Prometheus series.

mod stats;

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use serde::Serialize;

use stats::{process_memory, ProcessMemory};

use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Unit, Value, Vitals,
};
use crate::security::Scope;

/// `GET /debug/memory`.
pub(crate) static MEMORY: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/memory",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "jemalloc allocated/active/resident/mapped/retained/metadata, fragmentation, heap-profiling state, process RSS/VM".into()
    },
};

/// The memory probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "memory",
    feature: None,
    routes: &[&MEMORY],
    bundle_files: &["memory.json"],
};

/// The `/debug/memory` body. Without jemalloc (status 503) `error` and `message` say why and
/// `jemalloc` is absent; the process numbers are always there.
#[derive(Debug, Serialize)]
struct MemoryReport {
    /// The process's memory as the kernel sees it.
    process: ProcessMemory,
    /// jemalloc's numbers, when jemalloc is the allocator.
    #[serde(skip_serializing_if = "Option::is_none")]
    jemalloc: Option<Jemalloc>,
    /// `unavailable` when jemalloc's numbers are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// Why jemalloc's numbers are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[cfg(feature = "heap")]
type Jemalloc = crate::jemalloc::JemallocStats;
#[cfg(not(feature = "heap"))]
type Jemalloc = ();

fn report() -> MemoryReport {
    let process = process_memory();
    match jemalloc() {
        Ok(j) => MemoryReport {
            process,
            jemalloc: Some(j),
            error: None,
            message: None,
        },
        Err(message) => MemoryReport {
            process,
            jemalloc: None,
            error: Some("unavailable"),
            message: Some(message),
        },
    }
}

#[cfg(feature = "heap")]
fn jemalloc() -> Result<Jemalloc, String> {
    crate::jemalloc::jemalloc_stats().map_err(|e| format!("jemalloc stats are not available: {e}"))
}

#[cfg(not(feature = "heap"))]
fn jemalloc() -> Result<Jemalloc, String> {
    Err("jemalloc stats are not compiled in: build prodbg with the `heap` cargo feature".into())
}

/// jemalloc's numbers (after advancing its epoch) and the process's RSS/VM; 503 with the
/// reason when jemalloc is not the allocator, the process numbers still there.
async fn memory(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let body = report();
    let status = if body.jemalloc.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// Process memory and jemalloc's numbers.
#[derive(Debug)]
pub(crate) struct Memory {
    cx: ProbeContext,
}

impl Memory {
    /// The memory probe.
    pub(crate) fn new(cx: &ProbeContext) -> Memory {
        Memory { cx: cx.clone() }
    }
}

impl Probe for Memory {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![MEMORY.serve(&self.cx.limits, memory, ())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        #[cfg(feature = "heap")]
        return Some(Box::new(jemalloc_series::JemallocCollector));
        #[cfg(not(feature = "heap"))]
        None
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        // Without jemalloc the file still holds the process numbers and says why.
        vec![BundlePart::json("memory.json", &report())]
    }

    fn vitals(&self, out: &mut Vitals) {
        if let Some(rss) = process_memory().rss_bytes {
            out.gauge("rss_bytes", Unit::Bytes, rss as f64);
        }
        #[cfg(feature = "heap")]
        if let Ok(j) = crate::jemalloc::jemalloc_stats() {
            out.gauge(
                "jemalloc_allocated_bytes",
                Unit::Bytes,
                j.allocated_bytes as f64,
            );
            out.gauge(
                "jemalloc_resident_bytes",
                Unit::Bytes,
                j.resident_bytes as f64,
            );
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let r = report();
        let mut jemalloc = Figure::new(
            "jemalloc",
            Card::MEMORY,
            "jemalloc allocated",
            Value::Bytes(r.jemalloc.as_ref().map(allocated)),
        );
        if let Some(why) = r.message {
            jemalloc = jemalloc.note(why);
        }
        ready(
            Glance::default()
                .figure(Figure::new(
                    "rss",
                    Card::MEMORY,
                    "RSS",
                    Value::Bytes(r.process.rss_bytes),
                ))
                .figure(jemalloc),
        )
    }
}

#[cfg(feature = "heap")]
fn allocated(j: &Jemalloc) -> u64 {
    j.allocated_bytes
}

#[cfg(not(feature = "heap"))]
fn allocated(_: &Jemalloc) -> u64 {
    0
}

#[cfg(feature = "heap")]
mod jemalloc_series {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    use crate::encode::prometheus::Families;

    /// `prodbg_jemalloc_*_bytes` gauges and the heap-profiling state.
    #[derive(Debug)]
    pub(super) struct JemallocCollector;

    impl Collector for JemallocCollector {
        fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
            let Ok(j) = crate::jemalloc::jemalloc_stats() else {
                return Ok(());
            };
            let mut f = Families::new(encoder);
            let bytes = [
                (
                    "allocated",
                    "Bytes allocated by the application and not yet freed",
                    j.allocated_bytes,
                ),
                (
                    "active",
                    "Bytes in pages holding at least one live allocation",
                    j.active_bytes,
                ),
                (
                    "resident",
                    "Bytes of physical memory jemalloc holds",
                    j.resident_bytes,
                ),
                (
                    "mapped",
                    "Bytes in chunks jemalloc has mapped and uses",
                    j.mapped_bytes,
                ),
                (
                    "retained",
                    "Bytes of virtual memory kept mapped but returned to the OS",
                    j.retained_bytes,
                ),
                (
                    "metadata",
                    "Bytes jemalloc uses for its own bookkeeping",
                    j.metadata_bytes,
                ),
            ];
            for (name, help, v) in bytes {
                f.gauge(&format!("prodbg_jemalloc_{name}_bytes"), help, v as f64)?;
            }
            f.gauge(
                "prodbg_jemalloc_fragmentation_ratio",
                "(resident - allocated) / resident: share of jemalloc's memory not holding live data",
                j.fragmentation_ratio,
            )?;
            f.gauge(
                "prodbg_heap_profiling_enabled",
                "1 when jemalloc was started with prof:true",
                f64::from(u8::from(j.profiling.opt_prof)),
            )?;
            f.gauge(
                "prodbg_heap_profiling_active",
                "1 while jemalloc samples allocations (prof.active)",
                f64::from(u8::from(j.profiling.active)),
            )
        }
    }
}
