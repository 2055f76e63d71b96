//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

use detector::{DeadlockDetector, DeadlockReport};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use crate::encode::prometheus::Families;
use crate::seam::{
    blocking, ready, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, Route, Value,
};

/// Reports kept for `/debug/deadlocks`.
const KEEP_REPORTS: usize = 16;

/// The detector, when the host turned detection on.
#[derive(Debug)]
pub(crate) struct Deadlocks {
    cx: ProbeContext,
    detector: Option<Arc<DeadlockDetector>>,
}

impl Deadlocks {
    /// Starts a detector checking every `interval`, or none.
    pub(crate) fn new(
        cx: &ProbeContext,
        interval: Option<Duration>,
    ) -> Result<Deadlocks, crate::error::Error> {
        let detector = match interval {
            None => None,
            Some(i) => Some(Arc::new(DeadlockDetector::start(i, KEEP_REPORTS).map_err(
                |e| crate::error::Error::Start(format!("cannot start the deadlock detector: {e}")),
            )?)),
        };
        Ok(Deadlocks {
            cx: cx.clone(),
            detector,
        })
    }
}

/// The `/debug/deadlocks` JSON body.
#[derive(Debug, Serialize)]
struct DeadlocksReport {
    /// Checks run since start.
    checks_total: u64,
    /// Lock cycles found since start.
    detected_total: u64,
    /// The last reports, oldest first.
    reports: Vec<DeadlockReport>,
    /// What the detector can see.
    note: &'static str,
}

fn report(d: &DeadlockDetector) -> DeadlocksReport {
    DeadlocksReport {
        checks_total: d.checks_total(),
        detected_total: d.detected_total(),
        reports: d.reports(),
        note: "only parking_lot locks are seen",
    }
}

fn require(d: &Option<Arc<DeadlockDetector>>) -> Result<Arc<DeadlockDetector>, ApiError> {
    d.clone().ok_or_else(|| {
        ApiError::unavailable(
            "deadlock detection is off: enable it with Admin::builder().deadlock_detection(Duration::from_secs(10))",
        )
    })
}

/// Runs one check now (off the admin runtime's thread: symbolizing is CPU work), then the
/// last reports as JSON, or text with `?format=text`.
async fn deadlocks(
    State(d): State<Option<Arc<DeadlockDetector>>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let detector = require(&d)?;
    let check = detector.clone();
    blocking("the deadlock check", move || check.check()).await?;
    let r = report(&detector);
    if format == "text" {
        let mut text = format!(
            "deadlock detector: {} checks, {} cycles found; {} reports kept\n\n",
            r.checks_total,
            r.detected_total,
            r.reports.len()
        );
        if r.reports.is_empty() {
            text.push_str("no deadlock found (only parking_lot locks are seen)\n");
        }
        for rep in &r.reports {
            text.push_str(&rep.to_text());
            text.push('\n');
        }
        return Ok(text.into_response());
    }
    Ok(Json(r).into_response())
}

impl Probe for Deadlocks {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![DEADLOCKS.serve(&self.cx.limits, deadlocks, self.detector.clone())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        let d = self.detector.clone()?;
        Some(Box::new(DeadlockCollector(d)))
    }

    /// Lock cycles found since start (a level that only rises: the `deadlock` trigger's series).
    fn vitals(&self, out: &mut crate::seam::Vitals) {
        if let Some(d) = &self.detector {
            out.gauge(
                "deadlocks_found",
                crate::seam::Unit::Count,
                d.detected_total() as f64,
            );
        }
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        let Some(d) = self.detector.clone() else {
            return vec![BundlePart::failed(
                "deadlocks.json",
                "deadlock detection is off (Admin::builder().deadlock_detection(..))",
            )];
        };
        vec![BundlePart::new("deadlocks.json", async move {
            let r = blocking("the deadlock check", move || {
                d.check();
                report(&d)
            })
            .await
            .map_err(|e| e.message)?;
            serde_json::to_vec_pretty(&r).map_err(|e| e.to_string())
        })]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let figure = match &self.detector {
            None => Figure::new(
                "deadlocks",
                Card::PROCESS,
                "deadlocks detected",
                Value::Text("detection off: .deadlock_detection(..)".into()),
            ),
            Some(d) => {
                let n = d.detected_total();
                Figure::new(
                    "deadlocks",
                    Card::PROCESS,
                    "deadlocks detected",
                    Value::Count(Some(n)),
                )
                .note(format!("in {} checks", d.checks_total()))
                .bad(n > 0)
            }
        };
        ready(Glance::default().figure(figure))
    }
}

/// `prodbg_deadlocks_detected_total` and `prodbg_deadlock_checks_total`.
#[derive(Debug)]
struct DeadlockCollector(Arc<DeadlockDetector>);

impl Collector for DeadlockCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Families::new(encoder);
        f.counter(
            "prodbg_deadlocks_detected",
            "parking_lot lock cycles found since start",
            self.0.detected_total() as f64,
        )?;
        f.counter(
            "prodbg_deadlock_checks",
            "Deadlock checks run since start",
            self.0.checks_total() as f64,
        )
    }
}
