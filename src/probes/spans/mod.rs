//! `GET /debug/spans`: the spans open right now and the latency of recently closed ones, read
//! from prodbg's `tracing` layer (`crate::layer`) through the host's handle. This file is the
//! probe's face; `span_report.rs` builds the report from the layer's table and latency shards.

mod span_report;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::encode::prometheus::Families;
use crate::layer::{SpansHandle, NOT_INSTALLED};
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Unit, Value, Vitals,
};
use crate::security::Scope;
use span_report::{InFlightReport, LatencyReport, NameFilter, DEFAULT_LIMIT, MAX_LIMIT};

/// Longest `?min_age_ms=` accepted: one day.
const MAX_MIN_AGE_MS: u64 = 86_400_000;
/// Most names in `?name=` or `?hide=`, and the longest name, in bytes.
const MAX_NAMES: usize = 32;
const MAX_NAME_LEN: usize = 128;

/// `GET /debug/spans`.
pub(crate) static SPANS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/spans",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        let overdue = span_report::OVERDUE_FACTOR;
        format!(
                    "the tracing spans open now, oldest first (name, target, redacted fields, age, parent chain, the thread that entered them last, `overdue` when open over {overdue}× the p99 of its name), ?min_age_ms= 0–{MAX_MIN_AGE_MS} (default 0) &limit= 1–{MAX_LIMIT} (default {DEFAULT_LIMIT}: the oldest are listed, the rest counted in `omitted`) &name= (only these span names) &hide= (not these; each 1–{MAX_NAMES} comma-separated names); a `hint` when the log filter hides INFO spans; and per target and span name the latency of spans closed in the last 5 minutes (count, errors, p50/p90/p99, max, the slowest few with their fields); ?format=json|text (text reads like a stack of stuck requests); needs prodbg::spans::layer installed"
                )
    },
};

/// The spans probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "spans",
    feature: None,
    routes: &[&SPANS],
    bundle_files: &["spans.json"],
};

const FORMATS: &[&str] = &["json", "text"];

fn handle(h: &Option<SpansHandle>) -> Result<&SpansHandle, ApiError> {
    h.as_ref()
        .ok_or_else(|| ApiError::unavailable(NOT_INSTALLED))
}

type Handle = State<Option<SpansHandle>>;

/// The in-flight spans (at least `?min_age_ms=` old) and the latency summary.
async fn spans(State(h): Handle, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(
        q.as_deref(),
        &["min_age_ms", "limit", "format", "name", "hide"],
    )?;
    let min_age_ms = params.u64_in("min_age_ms", 0..=MAX_MIN_AGE_MS, 0)?;
    let limit = params.u64_in("limit", 1..=MAX_LIMIT as u64, DEFAULT_LIMIT as u64)? as usize;
    let format = params.choice("format", FORMATS, "json")?;
    let names = NameFilter {
        only: name_list(&params, "name")?,
        hide: name_list(&params, "hide")?,
    };
    let report = report(handle(&h)?, min_age_ms, limit, &names);
    Ok(match format {
        "text" => format!("{}\n{}", report.in_flight, report.latency).into_response(),
        _ => Json(report).into_response(),
    })
}

/// `?name=a,b`: at most [`MAX_NAMES`] names of at most [`MAX_NAME_LEN`] bytes each.
fn name_list(params: &Params, key: &str) -> Result<Vec<String>, ApiError> {
    let Some(v) = params.get(key) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() || names.len() > MAX_NAMES || names.iter().any(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::bad_parameter(format!(
            "{key} must be 1–{MAX_NAMES} comma-separated span names of at most {MAX_NAME_LEN} bytes each"
        )));
    }
    Ok(names)
}

/// `/debug/spans`: the in-flight spans and the latency summary, together.
#[derive(Debug, Clone, Serialize)]
struct SpansReport {
    /// Spans open now.
    in_flight: InFlightReport,
    /// Latency of recently closed spans.
    latency: LatencyReport,
}

/// Both halves of `/debug/spans`, at most `limit` in-flight spans (the oldest).
fn report(h: &SpansHandle, min_age_ms: u64, limit: usize, names: &NameFilter) -> SpansReport {
    SpansReport {
        in_flight: span_report::in_flight(h.shared(), min_age_ms, limit, names),
        latency: span_report::latency_report(h.shared(), names),
    }
}

/// `/debug/spans`, read through the host's [`SpansHandle`] when it gave one.
#[derive(Debug)]
pub(crate) struct SpansProbe {
    cx: ProbeContext,
    handle: Option<SpansHandle>,
}

impl SpansProbe {
    /// Reads `handle`'s layer; without one the routes answer 503 saying how to install it.
    pub(crate) fn new(cx: &ProbeContext, handle: Option<SpansHandle>) -> SpansProbe {
        SpansProbe {
            cx: cx.clone(),
            handle,
        }
    }
}

impl Probe for SpansProbe {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let l = &self.cx.limits;
        vec![SPANS.serve(l, spans, self.handle.clone())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(SpansCollector(self.handle.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        match &self.handle {
            Some(h) => vec![BundlePart::json(
                "spans.json",
                &report(h, 0, DEFAULT_LIMIT, &NameFilter::default()),
            )],
            None => vec![BundlePart::failed("spans.json", NOT_INSTALLED)],
        }
    }

    /// Spans in flight: a scan of the layer's table (one atomic load per slot).
    fn vitals(&self, out: &mut Vitals) {
        if let Some(h) = &self.handle {
            let n = h.shared().table.tracked();
            out.gauge("spans_in_flight", Unit::Count, n as f64);
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let Some(h) = &self.handle else {
            return ready(Glance::default().figure(Figure::new(
                "spans",
                Card::REQUESTS,
                "spans in flight",
                Value::Text(
                    "no span layer: prodbg::spans::layer(..) inside the host's filter, then .spans(handle)"
                        .into(),
                ),
            )));
        };
        let sh = h.shared();
        let ages = span_report::ages_ns(sh);
        let dropped = sh.table.dropped.load(Ordering::Relaxed);
        let overdue = span_report::overdue_count(sh);
        ready(
            Glance::default()
                .figure(Figure::new(
                    "spans",
                    Card::REQUESTS,
                    "spans in flight",
                    Value::Count(Some(ages.len() as u64)),
                ))
                .figure(Figure::new(
                    "spans-oldest",
                    Card::REQUESTS,
                    "oldest open for",
                    Value::Millis(ages.iter().max().map(|&ns| (ns / 1000) as f64 / 1000.0)),
                ))
                .figure(
                    Figure::new(
                        "spans-dropped",
                        Card::REQUESTS,
                        "spans not tracked (table full)",
                        Value::Count(Some(dropped)),
                    )
                    .bad(dropped > 0),
                )
                .figure(
                    Figure::new(
                        "spans-slow",
                        Card::REQUESTS,
                        format!(
                            "open over {}× their name's p99",
                            span_report::OVERDUE_FACTOR
                        ),
                        Value::Count(Some(overdue as u64)),
                    )
                    .bad(overdue > 0)
                    .link("spans?format=text", "list"),
                ),
        )
    }
}

/// `prodbg_spans_in_flight`, `prodbg_spans_dropped` and `prodbg_span_fields_truncated`. No
/// samples without the layer.
#[derive(Debug)]
struct SpansCollector(Option<SpansHandle>);

impl Collector for SpansCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(h) = &self.0 else { return Ok(()) };
        let sh = h.shared();
        let mut f = Families::new(encoder);
        f.gauge(
            "prodbg_spans_in_flight",
            "spans open now and tracked",
            sh.table.tracked() as f64,
        )?;
        f.counter(
            "prodbg_spans_dropped",
            "spans not tracked because the span table was full",
            sh.table.dropped.load(Ordering::Relaxed) as f64,
        )?;
        f.counter(
            "prodbg_span_fields_truncated",
            "span and event field values cut or left out for the byte caps",
            sh.truncated() as f64,
        )
    }
}
