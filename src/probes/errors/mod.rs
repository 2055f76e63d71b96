//! `GET /debug/errors`: `ERROR` and `WARN` events grouped by callsite, read from prodbg's
//! `tracing` layer (`crate::layer`) through the host's handle. This file is the probe's face;
//! `error_report.rs` builds the report from the layer's error groups.

mod error_report;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tracing::Level;

use crate::encode::prometheus::Families;
use crate::layer::{SpansHandle, NOT_INSTALLED};
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Unit, Value, Vitals,
};
use crate::security::Scope;

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

/// The errors probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "errors",
    feature: None,
    routes: &[&ERRORS],
    bundle_files: &["errors.json"],
};

type Handle = State<Option<SpansHandle>>;

/// The error groups, most recently seen first.
async fn errors(State(h): Handle, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let h = h
        .as_ref()
        .ok_or_else(|| ApiError::unavailable(NOT_INSTALLED))?;
    let report = error_report::report(h.shared());
    Ok(match format {
        "text" => report.to_string().into_response(),
        _ => Json(report).into_response(),
    })
}

/// `/debug/errors`, read through the host's [`SpansHandle`] when it gave one.
#[derive(Debug)]
pub(crate) struct ErrorsProbe {
    cx: ProbeContext,
    handle: Option<SpansHandle>,
}

impl ErrorsProbe {
    /// Reads `handle`'s layer; without one the route answers 503 saying how to install it.
    pub(crate) fn new(cx: &ProbeContext, handle: Option<SpansHandle>) -> ErrorsProbe {
        ErrorsProbe {
            cx: cx.clone(),
            handle,
        }
    }
}

impl Probe for ErrorsProbe {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![ERRORS.serve(&self.cx.limits, errors, self.handle.clone())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(ErrorsCollector(self.handle.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        match &self.handle {
            Some(h) => vec![BundlePart::json(
                "errors.json",
                &error_report::report(h.shared()),
            )],
            None => vec![BundlePart::failed("errors.json", NOT_INSTALLED)],
        }
    }

    /// ERROR and WARN events per second (a level the layer's filter keeps out is left out).
    fn vitals(&self, out: &mut Vitals) {
        if let Some(h) = &self.handle {
            let counts = crate::layer::shared::event_counts(h.shared());
            if let Some(n) = counts.error {
                out.counter("errors", Unit::PerSecond, n as f64);
            }
            if let Some(n) = counts.warn {
                out.counter("warnings", Unit::PerSecond, n as f64);
            }
            out.gauge(
                "error_callsites",
                Unit::Count,
                h.shared()
                    .errors
                    .as_ref()
                    .map_or(0, |g| g.error_callsites()) as f64,
            );
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        // Without the layer the spans probe's figure says how to install it.
        let Some(h) = &self.handle else {
            return ready(Glance::default());
        };
        let (mut errors, mut warnings, mut groups) = (0, 0, 0);
        if let Some(eg) = &h.shared().errors {
            let now = SystemTime::now();
            let st = eg.lock();
            groups = st.groups.len();
            for g in st.groups.values() {
                let n = g.last_minute(now);
                if *g.meta.level() == Level::ERROR {
                    errors += n;
                } else {
                    warnings += n;
                }
            }
        }
        ready(
            Glance::default()
                .figure(
                    Figure::new(
                        "errors",
                        Card::REQUESTS,
                        "errors last minute",
                        Value::Count(Some(errors)),
                    )
                    .bad(errors > 0)
                    .note(format!("in {groups} groups"))
                    .link("errors?format=text", "list"),
                )
                .figure(Figure::new(
                    "warnings",
                    Card::REQUESTS,
                    "warnings last minute",
                    Value::Count(Some(warnings)),
                )),
        )
    }
}

/// `prodbg_log_events_total{level}`, `prodbg_error_groups` and evictions. No samples without
/// the layer; a level the layer's filter keeps out has no sample.
#[derive(Debug)]
struct ErrorsCollector(Option<SpansHandle>);

impl Collector for ErrorsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(h) = &self.0 else { return Ok(()) };
        let sh = h.shared();
        let e = crate::layer::shared::event_counts(sh);
        let mut f = Families::new(encoder);
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
        let (held, evicted) = sh.errors.as_ref().map_or((0, 0), |e| {
            (
                e.len(),
                e.evicted.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        f.gauge(
            "prodbg_error_groups",
            "ERROR and WARN event groups held (one per callsite)",
            held as f64,
        )?;
        f.counter(
            "prodbg_error_groups_evicted",
            "error groups evicted, least recently seen first, to stay under the cap",
            evicted as f64,
        )
    }
}
