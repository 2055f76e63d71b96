//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

use crate::stack::thread_dump::{dump, DumpOptions, ThreadDump};

use std::time::Duration;

use axum::extract::{RawQuery, State};

use crate::seam::fair::Cap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::seam::{
    blocking, ready, Action, ApiError, BoxFuture, BundlePart, Glance, Params, Probe, ProbeContext,
    Route, Shows,
};

/// Stacks of every thread.
#[derive(Debug)]
pub(crate) struct Threads {
    cx: ProbeContext,
}

impl Threads {
    /// The threads probe.
    pub(crate) fn new(cx: &ProbeContext) -> Threads {
        Threads { cx: cx.clone() }
    }
}

/// JSON by default, a jstack-like text dump with `?format=text`.
async fn threads(State(cap): State<Cap>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format"])?;
    let format = params.choice("format", &["json", "text"], "json")?;
    let _cap = cap.take()?;
    let dump: ThreadDump = blocking("the thread dump", || dump(DumpOptions::default())).await?;
    Ok(match format {
        "text" => dump.to_text().into_response(),
        _ => Json(dump).into_response(),
    })
}

impl Probe for Threads {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![THREADS.serve(&self.cx.limits, threads, self.cx.fair.cap("thread dumps"))]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        ready(
            Glance::default().action(
                Action::new(
                    "threads",
                    "thread-dump",
                    "Thread dump",
                    &THREADS,
                    Shows::Text,
                )
                .fixed(&[("format", "text")]),
            ),
        )
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        vec![BundlePart::new("threads.txt", async {
            blocking("the thread dump", || {
                dump(DumpOptions::default()).to_text().into_bytes()
            })
            .await
            .map_err(|e| e.message)
        })]
    }
}
