//! The one table of endpoints: it drives the router, the index page and the README check.
//!
//! An endpoint whose cargo feature is off stays in the table and answers 501 naming the feature.

use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, on, put, MethodFilter, MethodRouter};
use axum::Router;

use super::error::ApiError;
use super::guard::{authorize, RouteRule};
use super::handlers;
use super::state::Shared;
use crate::auth::Scope;

/// One endpoint of the admin server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// HTTP method(s), e.g. `GET` or `GET, PUT`.
    pub method: &'static str,
    /// Path template.
    pub path: String,
    /// Scope needed; `None` for the health probes (open unless configured otherwise).
    pub scope: Option<Scope>,
    /// One line on what it gives.
    pub summary: &'static str,
    /// The cargo feature it needs, if any.
    pub feature: Option<&'static str>,
    /// Whether its feature is compiled in.
    pub available: bool,
}

/// Picks the handler when the feature is compiled in, `None` otherwise.
macro_rules! with_feature {
    ($feature:literal, $handler:expr) => {{
        #[cfg(feature = $feature)]
        let h = Some($handler);
        #[cfg(not(feature = $feature))]
        let h = None;
        (Some($feature), h)
    }};
}

type Handler = MethodRouter<Arc<Shared>>;
/// A handler and the feature it needs; `None` handler when the feature is off.
type Gated = (Option<&'static str>, Option<Handler>);
/// One row of the table: method, path, scope, summary, gated handler.
type Row = (
    &'static str,
    &'static str,
    Option<Scope>,
    &'static str,
    Gated,
);

fn always(h: Handler) -> Gated {
    (None, Some(h))
}

/// Every built-in endpoint with its handler (`None`: feature not compiled in).
fn table() -> Vec<(Endpoint, Option<Handler>)> {
    use Scope::*;
    let rows: Vec<Row> = vec![
        ("GET", "/debug/", Some(Read), "this index (JSON with Accept: application/json)", always(get(handlers::index::index))),
        ("GET", "/health/live", None, "liveness: 200 while the admin server answers", always(get(handlers::health::live))),
        ("GET", "/health/ready", None, "readiness: runs the registered checks, 503 if one fails", always(get(handlers::health::ready))),
        ("GET", "/debug/pprof/profile", Some(Profile), "CPU profile: ?seconds=1..60 (30) &frequency=1..1000 (99) &format=pprof|svg|folded; gzipped profile.proto by default, like Go", with_feature!("cpu", get(handlers::cpu::profile))),
        ("GET", "/debug/pprof/heap", Some(Profile), "heap profile of sampled live allocations: ?format=pprof|svg|folded; ?seconds=1..60 gives the growth over that window (the leak finder)", with_feature!("heap", get(handlers::heap::profile))),
        ("GET", "/debug/pprof/allocs", Some(Profile), "alias of /debug/pprof/heap: the path Grafana Alloy and Pyroscope scrape", with_feature!("heap", get(handlers::heap::profile))),
        ("POST", "/debug/pprof/heap/activate", Some(Admin), "start sampling allocations (jemalloc prof.active)", with_feature!("heap", axum::routing::post(handlers::heap::activate))),
        ("POST", "/debug/pprof/heap/deactivate", Some(Admin), "stop sampling allocations", with_feature!("heap", axum::routing::post(handlers::heap::deactivate))),
        ("GET", "/debug/memory", Some(Read), "jemalloc allocated/active/resident/mapped/retained/metadata, fragmentation, heap-profiling state, process RSS/VM", always(get(handlers::memory::memory))),
        ("GET", "/debug/log-level", Some(Read), "the current tracing filter and any run-time override", always(get(handlers::log_level::show))),
        ("PUT", "/debug/log-level", Some(Admin), "replace the tracing filter (body: directives, e.g. info,my_app::db=debug) for ?ttl= (default 15m; ttl=0: until reset)", always(put(handlers::log_level::set))),
        ("DELETE", "/debug/log-level", Some(Admin), "revert the tracing filter to the host's own now", always(delete(handlers::log_level::reset))),
        ("GET", "/debug/overrides", Some(Read), "run-time changes still in force (log level, heap sampling): who made them and when they expire", always(get(handlers::log_level::overrides))),
        ("GET", "/debug/bundle", Some(Profile), "one tar.gz of everything (CPU profile for ?seconds=1..60, default 10; heap, memory, threads, deadlocks, pools, metrics, process) with a manifest", always(get(handlers::bundle::bundle))),
        ("GET", "/metrics", Some(Read), "Prometheus text (OpenMetrics with Accept): every numeric probe plus the server's own RED metrics", always(get(handlers::metrics::metrics))),
        ("GET", "/debug/pools", Some(Read), "every registered connection pool: max, size, idle, in use, waiting, utilisation, saturated", always(get(handlers::pools::pools))),
        ("GET", "/debug/tokio", Some(Read), "every registered Tokio runtime: workers, tasks, queues, per-worker busy ratio, polls, steals, with per-second rates over ?window_ms=0..10000 (1000)", always(get(handlers::tokio_rt::metrics))),
        ("GET", "/debug/tokio/tasks", Some(Profile), "async task dump, one trace per task (?runtime=, ?timeout_ms=); needs --cfg tokio_unstable", always(get(handlers::tokio_rt::tasks))),
        ("GET", "/debug/threads", Some(Profile), "stack of every OS thread with name, state and CPU time (?format=text for a jstack-like dump)", with_feature!("threads", get(handlers::threads::threads))),
        ("GET", "/debug/deadlocks", Some(Read), "parking_lot deadlock reports: cycles, threads, backtraces (?format=text)", with_feature!("deadlock", get(handlers::deadlocks::deadlocks))),
        ("GET", "/debug/process", Some(Read), "pid, uptime, build info, command line, environment (secrets redacted), limits, open fds", always(get(handlers::process::process))),
    ];
    rows.into_iter()
        .map(|(method, path, scope, summary, (feature, handler))| {
            let endpoint = Endpoint {
                method,
                path: path.to_string(),
                scope,
                summary,
                feature,
                available: handler.is_some(),
            };
            (endpoint, handler)
        })
        .collect()
}

/// The built-in endpoints, for the index page and documentation.
pub fn endpoints() -> Vec<Endpoint> {
    table().into_iter().map(|(e, _)| e).collect()
}

/// A host-supplied endpoint, guarded and audited like the built-in ones.
#[derive(Debug)]
pub struct CustomEndpoint {
    /// Its row in the index.
    pub endpoint: Endpoint,
    /// Its handler.
    pub handler: MethodRouter<()>,
}

/// Builds the guarded router: every route with its scope check, then the shared layers.
pub fn router(shared: Arc<Shared>, custom: Vec<CustomEndpoint>) -> Router {
    let mut app: Router<Arc<Shared>> = Router::new();
    for (endpoint, handler) in table() {
        let rule = RouteRule {
            template: Arc::from(endpoint.path.as_str()),
            scope: shared.scope_for(&endpoint),
        };
        let handler = handler
            .unwrap_or_else(|| not_compiled(endpoint.method, endpoint.feature.unwrap_or("?")));
        app = app.route(
            &endpoint.path,
            handler.layer(from_fn_with_state(rule, authorize)),
        );
    }
    app = app.route(
        "/debug",
        get(|| async { axum::response::Redirect::permanent("debug/") }).layer(from_fn_with_state(
            RouteRule {
                template: Arc::from("/debug"),
                scope: Some(Scope::Read),
            },
            authorize,
        )),
    );
    let mut app: Router = app.with_state(shared.clone());
    for c in custom {
        let rule = RouteRule {
            template: Arc::from(c.endpoint.path.as_str()),
            scope: c.endpoint.scope,
        };
        app = app.route(
            &c.endpoint.path,
            c.handler.layer(from_fn_with_state(rule, authorize)),
        );
    }
    let limits = &shared.limits;
    app.fallback(super::guard::not_found)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_panic| {
            axum::response::IntoResponse::into_response(ApiError::internal(
                "the handler panicked; the admin server is still serving (the panic is in the host's stderr)",
            ))
        }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(axum::middleware::from_fn(super::guard::json_errors))
        .layer(from_fn_with_state(shared, super::guard::guard))
}

fn not_compiled(method: &str, feature: &'static str) -> Handler {
    let answer = move || async move {
        ApiError::not_compiled(format!(
            "this endpoint is not compiled in: build prodbg with the `{feature}` cargo feature"
        ))
    };
    let filter = match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    };
    on(filter, answer)
}
