//! `GET /debug/fds`: the process's open file descriptors by kind (sockets, pipes, files,
//! eventfds …) against `RLIMIT_NOFILE`; the `prodbg_open_fds{kind}` Prometheus series.

mod table;

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use table::{FdReport, MAX_ENTRIES};

use crate::encode::prometheus::Families;
use crate::seam::{
    blocking, ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Value,
};
use crate::security::Scope;

/// `GET /debug/fds`.
pub(crate) static FDS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/fds",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "open file descriptors by kind (socket, pipe, file, directory, device, eventfd …), RLIMIT_NOFILE soft/hard and the share used (?format=text for a short list)".into()
    },
};

/// The fds probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "fds",
    feature: None,
    routes: &[&FDS],
    bundle_files: &["fds.json"],
};

/// A used share of the soft limit above this is marked bad on the console.
const BAD_RATIO: f64 = 0.8;

/// Reads the table off the admin runtime's thread; 503 when `/proc/self/fd` is unreadable.
async fn report() -> Result<FdReport, ApiError> {
    blocking("the fd table", || table::read(MAX_ENTRIES))
        .await?
        .map_err(|e| ApiError::unavailable(format!("cannot read /proc/self/fd: {e}")))
}

/// JSON by default, a short list with `?format=text`.
async fn fds(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let report = report().await?;
    Ok(match format {
        "text" => report.to_text().into_response(),
        _ => Json(report).into_response(),
    })
}

/// The process's file descriptors.
#[derive(Debug)]
pub(crate) struct Fds {
    cx: ProbeContext,
}

impl Fds {
    /// The fds probe.
    pub(crate) fn new(cx: &ProbeContext) -> Fds {
        Fds { cx: cx.clone() }
    }
}

impl Probe for Fds {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![FDS.serve(&self.cx.limits, fds, ())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(FdsCollector))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        vec![BundlePart::new("fds.json", async {
            let report = report().await.map_err(|e| e.message)?;
            serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())
        })]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let (open, limit, used) = table::used(MAX_ENTRIES);
        let note = match (open, limit.soft) {
            (Some(open), Some(soft)) => format!("{open} of {soft}"),
            _ => "limit unknown".to_string(),
        };
        ready(
            Glance::default().figure(
                Figure::new(
                    "fds-used",
                    Card::PROCESS,
                    "fd limit used",
                    Value::Ratio(used),
                )
                .bad(used.is_some_and(|u| u > BAD_RATIO))
                .note(note)
                .link("fds?format=text", "by kind"),
            ),
        )
    }
}

/// `prodbg_open_fds{kind}`; no sample when the table could not be read whole.
#[derive(Debug)]
struct FdsCollector;

impl Collector for FdsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(r) = table::read(MAX_ENTRIES) else {
            return Ok(());
        };
        if r.truncated {
            return Ok(());
        }
        Families::new(encoder).gauges(
            "prodbg_open_fds",
            "Open file descriptors of the process, by kind",
            r.by_kind
                .into_iter()
                .map(|(kind, n)| (vec![("kind".to_string(), kind)], n as f64)),
        )
    }
}
