//! `GET /debug/`: the console — a small HTML page with the live figures an on-call engineer
//! wants at a glance and forms that run the probes — or, with `Accept: application/json`, the
//! index as JSON (`endpoints`, `probes`). Its script and style are separate same-origin files
//! (`/debug/console.js`, `/debug/console.css`) under a strict CSP: no inline script or style,
//! nothing from another origin, so it works offline and behind `kubectl port-forward`.
//!
//! Every action of the page calls the same guarded, audited endpoint curl would. The one thing
//! the console adds is a place to show a flamegraph from: the profiling probes keep their last
//! SVG (and the pprof file of the same profile) in [`Results`](crate::seam::Results), served
//! here under `/debug/console/last/` with the SVG's own CSP, so the page can frame it and
//! inferno's search and zoom work (they rewrite the frame's URL with `?s=&x=&y=`, which these
//! routes accept; reloading the frame shows the same profile, it never starts a new one).

mod page;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::guard::Identity;
use super::state::ServerState;
use crate::seam::download::{attachment, inline, SVG_CSP};
use crate::seam::{Access, ApiError, Glance, Params, Results, Route, RouteSpec, StoredResult};
use crate::security::Scope;

pub(super) use page::escape;

/// The console page's CSP: scripts, styles, frames and requests from this origin only; no
/// inline script or style; only this origin may frame it.
pub(super) const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'";

/// The console (or the index as JSON).
pub(super) static PAGE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "the console: live figures and forms for the probes (HTML); the index as JSON with Accept: application/json".into()
    },
};

/// The console's script.
pub(super) static SCRIPT_ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console.js",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| "the console's script (same origin, no inline script)".into(),
};

/// The console's style sheet.
pub(super) static STYLE_ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console.css",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| "the console's style sheet".into(),
};

/// The last result of each profile kind.
pub(super) static LAST: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console/last/{file}",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        "the last profile of each kind taken with ?format=svg: <kind>.svg (under its own CSP; accepts inferno's ?s=&x=&y=) or <kind>.pb.gz, the pprof file of the same profile".into()
    },
};

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// The page's route and the assets' routes, with their handlers.
pub(super) fn routes(state: &Arc<ServerState>) -> (Route, Vec<Route>) {
    let l = &state.limits;
    let page = PAGE.serve(l, page, state.clone());
    let assets = vec![
        SCRIPT_ROUTE.serve(
            l,
            |RawQuery(q): RawQuery| async move {
                asset(q.as_deref(), SCRIPT, "text/javascript; charset=utf-8")
            },
            (),
        ),
        STYLE_ROUTE.serve(
            l,
            |RawQuery(q): RawQuery| async move {
                asset(q.as_deref(), STYLE, "text/css; charset=utf-8")
            },
            (),
        ),
        LAST.serve(l, last_result, state.results.clone()),
    ];
    (page, assets)
}

fn asset(q: Option<&str>, body: &'static str, content_type: &'static str) -> Response {
    match Params::parse(q, &[]) {
        Ok(_) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The console page, or the index as JSON with `Accept: application/json`.
async fn page(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    if let Err(e) = Params::parse(req.uri().query(), &[]) {
        return e.into_response();
    }
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let caller = match req.extensions().get::<Identity>() {
        Some(Identity::Token(t)) => Some((t.name().to_string(), t.scope())),
        _ => None,
    };
    drop(req);
    let glances = glances(&state).await;
    if wants_json {
        let results: Vec<_> = state
            .results
            .list()
            .iter()
            .map(|r| result_json(r))
            .collect();
        let probes: serde_json::Map<String, serde_json::Value> = glances
            .iter()
            .map(|(name, g)| {
                (
                    name.to_string(),
                    serde_json::to_value(g).unwrap_or_default(),
                )
            })
            .collect();
        return Json(serde_json::json!({
            "service": &*state.service_name,
            "version": env!("CARGO_PKG_VERSION"),
            "caller": caller.as_ref().map(|(name, scope)| serde_json::json!({ "token": name, "scope": scope })),
            "endpoints": state.table(),
            "probes": probes,
            "results": results,
        }))
        .into_response();
    }
    let body = page::html(&page::PageInput {
        service: &state.service_name,
        caller: caller.as_ref().map(|(n, s)| (n.as_str(), *s)),
        table: state.table(),
        glances: &glances,
        results: &state.results.list(),
        max_seconds: state.limits.max_profile_seconds,
        now: std::time::SystemTime::now(),
    });
    let mut response = Html(body).into_response();
    secure_html(response.headers_mut(), PAGE_CSP);
    response
}

/// The headers of an HTML page of the server: its CSP, no referrer.
pub(super) fn secure_html(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("SAMEORIGIN"),
    );
}

/// Every probe's glance with its probe's name, in registration order (all at once: the Tokio
/// one samples a short window).
pub(super) async fn glances(state: &ServerState) -> Vec<(&'static str, Glance)> {
    let pending = state.probes.iter().map(|p| {
        let name = p.spec().name;
        let glance = p.glance();
        async move { (name, glance.await) }
    });
    futures_util::future::join_all(pending)
        .await
        .into_iter()
        .filter_map(|(name, g)| Some((name, g?)))
        .collect()
}

fn result_json(r: &StoredResult) -> serde_json::Value {
    serde_json::json!({
        "kind": r.kind,
        "title": r.title,
        "taken_at": crate::encode::time::format(r.taken_at),
        "by": r.by,
        "svg": format!("console/last/{}.svg", r.kind),
        "svg_name": r.svg_name,
        "pprof": format!("console/last/{}.pb.gz", r.kind),
        "pprof_name": r.pprof_name,
    })
}

/// `GET /debug/console/last/{file}`: the kept flamegraph of a kind (`<kind>.svg`) or the pprof
/// file of the same profile (`<kind>.pb.gz`). The SVG accepts inferno's own parameters (`s`
/// search term, `x`/`y` zoomed frame), which it writes into its URL.
async fn last_result(
    State(results): State<Results>,
    Path(file): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (kind, svg) = match (file.strip_suffix(".svg"), file.strip_suffix(".pb.gz")) {
        (Some(kind), _) => (Some(kind), true),
        (_, Some(kind)) => (Some(kind), false),
        _ => (None, false),
    };
    let allowed: &[&str] = if svg { &["s", "x", "y"] } else { &[] };
    if let Err(e) = Params::parse(q.as_deref(), allowed) {
        return e.into_response();
    }
    let Some(kind) = kind else {
        return ApiError::not_found(format!(
            "no such file {:?}: ask for <kind>.svg or <kind>.pb.gz (kinds kept now: {})",
            file.chars().take(64).collect::<String>(),
            kinds(&results)
        ))
        .into_response();
    };
    let Some(r) = results.get(kind) else {
        return ApiError::not_found(format!(
            "no {:?} profile has been kept: a profile taken with ?format=svg (the console's buttons) is kept here; kinds kept now: {}",
            kind.chars().take(64).collect::<String>(),
            kinds(&results)
        ))
        .into_response();
    };
    let mut response = if svg {
        let mut r2 = ([(header::CONTENT_TYPE, "image/svg+xml")], r.svg.clone()).into_response();
        r2.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
        r2.headers_mut()
            .insert(header::CONTENT_DISPOSITION, inline(&r.svg_name));
        r2
    } else {
        let mut r2 = (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            r.pprof.clone(),
        )
            .into_response();
        r2.headers_mut()
            .insert(header::CONTENT_DISPOSITION, attachment(&r.pprof_name));
        r2
    };
    if let Ok(v) = HeaderValue::from_str(&crate::encode::time::format(r.taken_at)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-prodbg-taken-at"), v);
    }
    response
}

/// The kinds kept, for an error message.
fn kinds(results: &Results) -> String {
    let kinds: Vec<&str> = results.list().iter().map(|r| r.kind).collect();
    if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join(", ")
    }
}
