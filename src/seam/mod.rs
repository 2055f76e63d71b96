//! The seam between probes and the server: a probe contributes its routes, its Prometheus
//! series, its bundle parts and its vital signs through [`Probe`]; the server builds the router,
//! the index, `/metrics`, `/debug/bundle` and the timeline by iterating over the registered
//! probes and knows nothing of their insides.
//!
//! A probe is one folder under `src/probes/`: core files that know no HTTP, and a `mod.rs`
//! (the probe's face) holding its [`ProbeSpec`] and its [`Probe`] impl. A probe whose cargo
//! feature is off is registered as [`NotCompiled`](not_compiled::NotCompiled), which answers its routes with 501 naming
//! the feature. See `CONTRIBUTING.md` for a worked example.

mod api_error;
mod caller;
pub(crate) mod download;
pub(crate) mod fair;
pub(crate) mod glance;
pub(crate) mod not_compiled;
pub(crate) mod overrides;
mod params;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) mod profile;
pub(crate) mod results;
pub(crate) mod vitals;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::response::{IntoResponseParts, ResponseParts};
use axum::routing::{on, MethodFilter, MethodRouter};
use prometheus_client::collector::Collector;

pub(crate) use api_error::ApiError;
pub(crate) use caller::Caller;
pub(crate) use glance::{Action, Card, FieldKind, Figure, Glance, Row, Shows, Table, Value};
pub(crate) use params::Params;

use crate::config::Limits;
use crate::security::Scope;
pub(crate) use overrides::Overrides;
pub(crate) use results::{Results, StoredResult};
pub(crate) use vitals::{Unit, Vitals};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A token holding at least this scope.
    Scope(Scope),
    /// A health probe: open unless the host set `health_requires_token(true)` (then `read`).
    Health,
    /// The Prometheus scrape: `read` unless the host set `metrics_requires_token(false)`.
    Scrape,
}

/// What a route is, known even when its probe is not compiled in: the router, the index, the
/// README check and the 501 stand-in are all built from these.
#[derive(Debug, Clone)]
pub(crate) struct RouteSpec {
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path, e.g. `/debug/pprof/profile`.
    pub(crate) path: &'static str,
    /// Who may call it.
    pub(crate) access: Access,
    /// One line on what it gives, from the configured limits (so ranges are the real ones).
    pub(crate) summary: fn(&Limits) -> String,
    /// How Go's `/debug/pprof/` index lists it (routes under `/debug/pprof/` only).
    pub(crate) go: Option<GoIndex>,
}

/// A route's line in Go's `/debug/pprof/` index: the link (relative to the index, with the
/// query Go's page uses) and the description under "Profile Descriptions".
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoIndex {
    /// The link, e.g. `goroutine?debug=1`.
    pub(crate) link: &'static str,
    /// What Go's page says of it.
    pub(crate) text: &'static str,
}

impl RouteSpec {
    /// This route answered by `handler` with `state` (`()` for none); the method is the
    /// declared one, so a route is declared once.
    pub(crate) fn serve<H, T, S>(&'static self, limits: &Limits, handler: H, state: S) -> Route
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
        S: Clone + Send + Sync + 'static,
    {
        self.answered_by(limits, on(self.method_filter(), handler).with_state(state))
    }

    /// This route answered by a ready `MethodRouter` (the 501 stand-in, host endpoints).
    pub(crate) fn answered_by(&self, limits: &Limits, handler: MethodRouter<()>) -> Route {
        Route {
            method: self.method.clone(),
            path: self.path.to_string(),
            access: self.access,
            summary: (self.summary)(limits),
            go: self.go,
            available: true,
            handler,
        }
    }

    /// The method as axum's filter.
    pub(crate) fn method_filter(&self) -> MethodFilter {
        MethodFilter::try_from(self.method.clone()).unwrap_or(MethodFilter::GET)
    }
}

/// What a probe is: its name, the cargo feature it needs, its routes and its bundle files.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSpec {
    /// Short name, e.g. `cpu`.
    pub(crate) name: &'static str,
    /// The cargo feature that compiles it in, if any.
    pub(crate) feature: Option<&'static str>,
    /// Its routes, each a `static` of its probe's module.
    pub(crate) routes: &'static [&'static RouteSpec],
    /// The files it adds to the bundle (listed as failed by its stand-in when compiled out).
    #[cfg_attr(all_probes, allow(dead_code))]
    pub(crate) bundle_files: &'static [&'static str],
}

/// A route with its handler; the handler carries its own state (`with_state`).
#[derive(Debug)]
pub(crate) struct Route {
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path.
    pub(crate) path: String,
    /// Who may call it.
    pub(crate) access: Access,
    /// One line on what it gives.
    pub(crate) summary: String,
    /// Its line in Go's `/debug/pprof/` index, if it has one.
    pub(crate) go: Option<GoIndex>,
    /// `false` for a stand-in answering 501 (its feature is off).
    pub(crate) available: bool,
    /// Answers it.
    pub(crate) handler: MethodRouter<()>,
}

/// Files of the incident bundle, being produced together (a profile's pprof and SVG come from
/// one profile). An `Err` is listed in the manifest for each of its files with why; it never
/// fails the bundle.
pub(crate) struct BundlePart {
    /// File names inside the archive, e.g. `cpu.pb.gz`, in the order the future yields them.
    pub(crate) files: Vec<String>,
    /// Produces the files' bytes, one per name.
    pub(crate) bytes: BoxFuture<Result<Vec<Vec<u8>>, String>>,
}

impl BundlePart {
    /// One file produced by `future`.
    pub(crate) fn new(
        file: impl Into<String>,
        future: impl Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    ) -> BundlePart {
        BundlePart {
            files: vec![file.into()],
            bytes: Box::pin(async move { future.await.map(|b| vec![b]) }),
        }
    }

    /// Several files produced together by `future`, which yields one body per name in `files`.
    pub(crate) fn several(
        files: &[&str],
        future: impl Future<Output = Result<Vec<Vec<u8>>, String>> + Send + 'static,
    ) -> BundlePart {
        BundlePart {
            files: files.iter().map(|f| f.to_string()).collect(),
            bytes: Box::pin(future),
        }
    }

    /// A part whose bytes are `value` as pretty JSON.
    pub(crate) fn json<T: serde::Serialize>(file: &str, value: &T) -> BundlePart {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string());
        BundlePart::new(file, async move { bytes })
    }

    /// A part that could not be produced, with why.
    pub(crate) fn failed(file: &str, why: impl Into<String>) -> BundlePart {
        let why = why.into();
        BundlePart::new(file, async move { Err(why) })
    }
}

/// What a mutating handler changed, for the request's audit record (`details`): the previous
/// value, the new one, a TTL — never a secret. Return it next to the body, e.g.
/// `(AuditDetails::new().with("previous", old), Json(new))` (or wrapped in axum's
/// `Extension`); the server moves it into the record. In a host endpoint's record each value
/// is kept up to 1 KiB of JSON (longer ones become a clipped string), 32 entries at most, and
/// `request_body` is prodbg's own (see the README's audit section).
#[derive(Debug, Clone, Default)]
pub struct AuditDetails(pub(crate) serde_json::Map<String, serde_json::Value>);

impl AuditDetails {
    /// No details yet.
    pub fn new() -> AuditDetails {
        AuditDetails::default()
    }

    /// Adds `key: value` (any JSON value: `"info"`, `900`, `serde_json::json!({..})`).
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> AuditDetails {
        self.0.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponseParts for AuditDetails {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A glance that is ready now, for a [`Probe::glance`].
pub(crate) fn ready(glance: Glance) -> BoxFuture<Option<Glance>> {
    Box::pin(std::future::ready(Some(glance)))
}

/// What every probe may use when it is built: the host's name, the limits, the overrides, the
/// console's last results.
#[derive(Debug, Clone)]
pub(crate) struct ProbeContext {
    /// The service's name, for titles and file names.
    pub(crate) service_name: Arc<str>,
    /// Timeouts and caps; parameters are bounded by them.
    pub(crate) limits: Limits,
    /// Run-time changes in force; mutating probes record theirs here.
    pub(crate) overrides: Overrides,
    /// The concurrency caps; an expensive probe takes its kind's cap before working.
    pub(crate) fair: Arc<fair::FairShare>,
    /// The last flamegraph of each kind, for the console; profiling probes put theirs here.
    pub(crate) results: Results,
}

/// One probe, as the server sees it.
pub(crate) trait Probe: Send + Sync + 'static {
    /// What it is.
    fn spec(&self) -> &'static ProbeSpec;

    /// Its routes with their handlers, one per [`ProbeSpec::routes`] entry.
    fn routes(&self) -> Vec<Route>;

    /// Its Prometheus series, encoded on each scrape.
    fn collector(&self) -> Option<Box<dyn Collector>> {
        None
    }

    /// Its bundle files; `window` is how long windowed parts (profiles) sample.
    fn bundle(&self, window: Duration) -> Vec<BundlePart> {
        let _ = window;
        Vec::new()
    }

    /// A few live figures and the actions for the console and the index JSON
    /// (`probes.<name>`), e.g. RSS, busy ratios; `None` if it has none. A future, so that a
    /// figure over a short window (a busy ratio) can wait for it; keep it well under a second.
    fn glance(&self) -> BoxFuture<Option<Glance>> {
        Box::pin(std::future::ready(None))
    }

    /// This second's vital signs for the timeline (`GET /debug/timeline`), called once a
    /// second on the admin runtime: a few cheap reads (no directory walk, no dump), each a
    /// [`Vitals::gauge`] or [`Vitals::counter`]; a number it cannot tell now is left out.
    fn vitals(&self, out: &mut Vitals) {
        let _ = out;
    }
}

/// Blocking probe jobs (dumps, symbolization, rendering) running at once, whoever asked.
const MAX_BLOCKING_JOBS: usize = 2;
static BLOCKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_BLOCKING_JOBS);

/// Runs blocking probe work off the admin runtime's thread, at most [`MAX_BLOCKING_JOBS`] at
/// once (a request waits its turn; the request timeout bounds the wait). The slot moves into
/// the job, so work whose request was cancelled stays counted until it really ends. A panic
/// becomes a 500 that says what failed.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let slot = BLOCKING
        .acquire()
        .await
        .map_err(|_| ApiError::internal(format!("{what} failed: the blocking pool is closed")))?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    })
    .await
    .map_err(|e| ApiError::internal(format!("{what} failed: {e}")))
}

impl From<fair::Busy> for ApiError {
    fn from(b: fair::Busy) -> ApiError {
        ApiError::too_many(b.to_string())
    }
}
