//! The stand-in for a probe whose cargo feature is off: its routes answer 501 naming the
//! feature, and its bundle files are listed as not compiled in.

use std::time::Duration;

use axum::routing::{on, MethodFilter};

use super::{ApiError, BundlePart, Probe, ProbeContext, ProbeSpec, Route};
use crate::config::Limits;

/// Registers `spec`'s routes and bundle files without the probe behind them.
#[derive(Debug)]
#[cfg_attr(
    all(
        feature = "cpu",
        feature = "heap",
        feature = "threads",
        feature = "deadlock"
    ),
    allow(dead_code)
)]
pub(crate) struct NotCompiled {
    spec: &'static ProbeSpec,
    limits: Limits,
}

#[cfg_attr(
    all(
        feature = "cpu",
        feature = "heap",
        feature = "threads",
        feature = "deadlock"
    ),
    allow(dead_code)
)]
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
                let filter =
                    MethodFilter::try_from(spec.method.clone()).unwrap_or(MethodFilter::GET);
                let handler = on(filter, move || async move { ApiError::not_compiled(why) });
                Route {
                    available: false,
                    ..Route::new(spec, &self.limits, handler)
                }
            })
            .collect()
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        self.spec
            .bundle_files
            .iter()
            .map(|file| BundlePart::failed(file, self.why()))
            .collect()
    }
}
