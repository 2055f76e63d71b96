//! The stand-in for a probe whose cargo feature is off: its routes answer 501 naming the
//! feature, and its bundle files are listed as not compiled in.

use std::time::Duration;

use axum::routing::on;

use super::{
    ready, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Probe, ProbeContext, ProbeSpec,
    Route, Value,
};
use crate::config::Limits;

/// Registers `spec`'s routes and bundle files without the probe behind them.
#[derive(Debug)]
#[cfg_attr(all_probes, allow(dead_code))]
pub(crate) struct NotCompiled {
    spec: &'static ProbeSpec,
    limits: Limits,
}

#[cfg_attr(all_probes, allow(dead_code))]
impl NotCompiled {
    /// The stand-in for `spec`.
    pub(crate) fn new(spec: &'static ProbeSpec, cx: &ProbeContext) -> NotCompiled {
        NotCompiled {
            spec,
            limits: cx.limits.clone(),
        }
    }

    fn why(&self) -> String {
        match self.spec.feature {
            Some(f) => format!("not compiled in: build prodbg with the `{f}` cargo feature"),
            None => "not compiled in".to_string(),
        }
    }
}

impl Probe for NotCompiled {
    fn spec(&self) -> &'static ProbeSpec {
        self.spec
    }

    fn routes(&self) -> Vec<Route> {
        self.spec
            .routes
            .iter()
            .map(|spec| {
                let why = format!("this endpoint is {}", self.why());
                let handler = on(spec.method_filter(), move || async move {
                    ApiError::not_compiled(why)
                });
                Route {
                    available: false,
                    ..spec.answered_by(&self.limits, handler)
                }
            })
            .collect()
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        ready(Glance::default().figure(Figure::new(
            self.spec.name,
            Card::NOT_COMPILED,
            self.spec.name,
            Value::Text(self.why()),
        )))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        self.spec
            .bundle_files
            .iter()
            .map(|file| BundlePart::failed(file, self.why()))
            .collect()
    }
}
