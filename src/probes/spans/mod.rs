//! `GET /debug/spans` and `GET /debug/errors`, from one `tracing` layer prodbg provides: the
//! spans open right now and the latency of recently closed ones, `WARN`/`ERROR` events grouped
//! by callsite, and (for the CPU and wall profilers) a signal-safe per-thread span-label slot,
//! [`labels`].
//!
//! This file is the probes' face; the rest of the folder is the layer and its cores, with no
//! HTTP: `layer.rs` (the `Layer` impl and its handle), `options.rs`, `fields.rs` (the capped
//! field buffer), `callsite.rs` (per-callsite facts), `thread.rs` (per-thread span stack),
//! `clock.rs`, `table.rs` (the in-flight table), `latency.rs` + `histogram.rs` (the sliding
//! window), `span_report.rs`, `error_groups.rs` + `error_report.rs`, `labels.rs`.
//!
//! # Installing it: three ways
//!
//! * **Behind the host's global filter (recommended)**:
//!   `registry().with(filter).with(fmt::layer()).with(spans)` with
//!   `let (spans, handle) = prodbg::spans::layer(opts)` and the filter from
//!   [`reloadable`](crate::log_level::reloadable). It tracks exactly what the host's log filter
//!   lets through, and costs least (no per-layer filtering; reading the filter takes no lock).
//! * Inside the host's per-layer filter, sharing it:
//!   `fmt::layer().and_then(spans).with_filter(filter)`. Never install it unfiltered next to
//!   a host layer that has a per-layer filter: `tracing-subscriber` would then enable every
//!   callsite of every crate for it.
//! * With its own per-layer filter, [`filtered_layer`] ([`Options::span_filter`], default
//!   `INFO`+; [`Options::event_filter`], default `WARN`+): works in any stack and never changes
//!   what the host's own layers see, but `tracing-subscriber`'s per-layer filtering costs
//!   ~100 ns per span on its own (a registry lookup on every enter, exit and close).
//!
//! # Bounds
//!
//! Spans tracked at once: [`Options::max_spans`] (default [`DEFAULT_MAX_SPANS`]), a fixed table
//! allocated once; a span that finds no slot is not tracked, and counted. Field bytes per span
//! and per kept event: [`Options::max_field_bytes`] (default [`DEFAULT_MAX_FIELD_BYTES`]), one
//! value at most [`MAX_VALUE_BYTES`]; cut values end in `…` and are counted. Span names with a
//! latency summary: [`Options::max_span_names`] (default [`DEFAULT_MAX_SPAN_NAMES`]); closes of
//! other names are counted. Error groups: [`Options::max_error_groups`] (default
//! [`DEFAULT_MAX_ERROR_GROUPS`]), the least recently seen evicted and counted, each keeping
//! its last [`Options::recent_events`] events (default [`DEFAULT_RECENT_EVENTS`]).

mod callsite;
mod clock;
mod error_groups;
mod error_report;
mod fields;
mod handle;
mod histogram;
pub(crate) mod labels;
mod latency;
mod layer;
mod options;
mod shared;
mod span_report;
mod table;
mod thread;

#[cfg(test)]
mod tests;

pub use fields::MAX_VALUE_BYTES;
pub use handle::SpansHandle;
pub use layer::{filtered_layer, layer, SpansFilter, SpansLayer};
pub use options::{
    Options, RedactFn, DEFAULT_MAX_ERROR_GROUPS, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_SPANS,
    DEFAULT_MAX_SPAN_NAMES, DEFAULT_RECENT_EVENTS, DEFAULT_SLOWEST,
};

use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::encode::prometheus::Families;
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Value,
};
use crate::security::Scope;
use span_report::{NameFilter, DEFAULT_LIMIT, MAX_LIMIT};

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

/// `GET /debug/errors`.
pub(crate) static ERRORS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/errors",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "ERROR and WARN events grouped by callsite (target + file:line + message template, not the formatted values): level, count, first and last seen, rate over the last minute, the last few events' redacted fields; most recently seen first; ?format=json|text; needs prodbg::spans::layer installed".into()
    },
};

/// The spans and errors probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "spans",
    feature: None,
    routes: &[&SPANS, &ERRORS],
    bundle_files: &["spans.json", "errors.json"],
};

const FORMATS: &[&str] = &["json", "text"];

const NOT_INSTALLED: &str = "no span layer is installed: create it with `let (spans, handle) = prodbg::spans::layer(Default::default())`, install it behind the host's filter (`registry().with(filter).with(fmt::layer()).with(spans)`), and pass the handle to the builder's .spans(handle)";

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
    let report = handle(&h)?.spans(min_age_ms, limit, &names);
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

/// The error groups, most recently seen first.
async fn errors(State(h): Handle, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", FORMATS, "json")?;
    let report = handle(&h)?.errors();
    Ok(match format {
        "text" => report.to_string().into_response(),
        _ => Json(report).into_response(),
    })
}

/// `/debug/spans` and `/debug/errors`, read through the host's [`SpansHandle`] when it gave one.
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
        vec![
            SPANS.serve(l, spans, self.handle.clone()),
            ERRORS.serve(l, errors, self.handle.clone()),
        ]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(SpansCollector(self.handle.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        match &self.handle {
            Some(h) => vec![
                BundlePart::json(
                    "spans.json",
                    &h.spans(0, DEFAULT_LIMIT, &NameFilter::default()),
                ),
                BundlePart::json("errors.json", &h.errors()),
            ],
            None => vec![
                BundlePart::failed("spans.json", NOT_INSTALLED),
                BundlePart::failed("errors.json", NOT_INSTALLED),
            ],
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
        let g = h.glance(SystemTime::now());
        ready(
            Glance::default()
                .figure(Figure::new(
                    "spans",
                    Card::REQUESTS,
                    "spans in flight",
                    Value::Count(Some(g.in_flight as u64)),
                ))
                .figure(Figure::new(
                    "spans-oldest",
                    Card::REQUESTS,
                    "oldest open for",
                    Value::Millis(g.oldest_ms),
                ))
                .figure(
                    Figure::new(
                        "spans-dropped",
                        Card::REQUESTS,
                        "spans not tracked (table full)",
                        Value::Count(Some(g.dropped_spans_total)),
                    )
                    .bad(g.dropped_spans_total > 0),
                )
                .figure(
                    Figure::new(
                        "spans-slow",
                        Card::REQUESTS,
                        format!(
                            "open over {}× their name's p99",
                            span_report::OVERDUE_FACTOR
                        ),
                        Value::Count(Some(g.overdue as u64)),
                    )
                    .bad(g.overdue > 0)
                    .link("spans?format=text", "list"),
                )
                .figure(
                    Figure::new(
                        "errors",
                        Card::REQUESTS,
                        "errors last minute",
                        Value::Count(Some(g.errors_last_minute)),
                    )
                    .bad(g.errors_last_minute > 0)
                    .note(format!("in {} groups", g.error_groups))
                    .link("errors?format=text", "list"),
                )
                .figure(Figure::new(
                    "warnings",
                    Card::REQUESTS,
                    "warnings last minute",
                    Value::Count(Some(g.warnings_last_minute)),
                )),
        )
    }
}

/// `prodbg_log_events_total{level}`, `prodbg_error_groups` and the layer's bounds counters. No
/// samples without the layer; a level the layer's filter keeps out has no sample.
#[derive(Debug)]
struct SpansCollector(Option<SpansHandle>);

impl Collector for SpansCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(h) = &self.0 else { return Ok(()) };
        let c = h.counters();
        let mut f = Families::new(encoder);
        let e = c.log_events_total;
        let levels = [
            ("error", e.error),
            ("warn", e.warn),
            ("info", e.info),
            ("debug", e.debug),
            ("trace", e.trace),
        ];
        f.counters(
            "prodbg_log_events",
            "tracing events seen by prodbg's span layer, by level",
            levels.iter().filter_map(|(l, n)| {
                Some((vec![("level".to_string(), l.to_string())], (*n)? as f64))
            }),
        )?;
        f.gauge(
            "prodbg_error_groups",
            "ERROR and WARN event groups held (one per callsite)",
            c.error_groups as f64,
        )?;
        f.counter(
            "prodbg_error_groups_evicted",
            "error groups evicted, least recently seen first, to stay under the cap",
            c.error_groups_evicted_total as f64,
        )?;
        f.gauge(
            "prodbg_spans_in_flight",
            "spans open now and tracked",
            c.spans_tracked as f64,
        )?;
        f.counter(
            "prodbg_spans_dropped",
            "spans not tracked because the span table was full",
            c.spans_dropped_total as f64,
        )?;
        f.counter(
            "prodbg_span_fields_truncated",
            "span and event field values cut or left out for the byte caps",
            c.fields_truncated_total as f64,
        )
    }
}
