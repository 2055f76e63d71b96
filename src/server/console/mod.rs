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

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Json;

use super::guard::Identity;
use super::state::ServerState;
use crate::seam::download::{attachment, inline, SVG_CSP};
use crate::seam::{Access, ApiError, Params, Route, RouteSpec, StoredResult};
use crate::security::Scope;

pub(super) use page::escape;

/// The console page's CSP: scripts, styles, frames and requests from this origin only; no
/// inline script or style; only this origin may frame it.
pub(super) const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'";

/// The console (or the index as JSON).
pub(super) const PAGE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/",
    access: Access::Scope(Scope::Read),
    summary: |_| {
        "the console: live figures and forms for the probes (HTML); the index as JSON with Accept: application/json".into()
    },
};

/// The console's script.
pub(super) const SCRIPT_ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console.js",
    access: Access::Scope(Scope::Read),
    summary: |_| "the console's script (same origin, no inline script)".into(),
};

/// The console's style sheet.
pub(super) const STYLE_ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console.css",
    access: Access::Scope(Scope::Read),
    summary: |_| "the console's style sheet".into(),
};

/// The last CPU flamegraph.
pub(super) const LAST_CPU_SVG: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console/last/cpu.svg",
    access: Access::Scope(Scope::Profile),
    summary: |_| {
        "the last CPU flamegraph taken with ?format=svg, under its own CSP (accepts inferno's ?s=&x=&y=)".into()
    },
};

/// The pprof file of the last CPU flamegraph's profile.
pub(super) const LAST_CPU_PPROF: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console/last/cpu.pb.gz",
    access: Access::Scope(Scope::Profile),
    summary: |_| "the pprof file of that same CPU profile".into(),
};

/// The last heap flamegraph.
pub(super) const LAST_HEAP_SVG: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console/last/heap.svg",
    access: Access::Scope(Scope::Profile),
    summary: |_| {
        "the last heap flamegraph taken with ?format=svg, under its own CSP (accepts inferno's ?s=&x=&y=)".into()
    },
};

/// The pprof file of the last heap flamegraph's profile.
pub(super) const LAST_HEAP_PPROF: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/console/last/heap.pb.gz",
    access: Access::Scope(Scope::Profile),
    summary: |_| "the pprof file of that same heap profile".into(),
};

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// The page's route and the assets' routes, with their handlers.
pub(super) fn routes(state: &Arc<ServerState>) -> (Route, Vec<Route>) {
    let l = &state.limits;
    let page = Route::new(&PAGE, l, get(page).with_state(state.clone()));
    let last = |kind: &'static str, svg: bool| {
        let results = state.results.clone();
        get(move |RawQuery(q): RawQuery| async move {
            last_result(results.get(kind), kind, svg, q.as_deref())
        })
    };
    let assets = vec![
        Route::new(
            &SCRIPT_ROUTE,
            l,
            get(|RawQuery(q): RawQuery| async move {
                asset(q.as_deref(), SCRIPT, "text/javascript; charset=utf-8")
            }),
        ),
        Route::new(
            &STYLE_ROUTE,
            l,
            get(|RawQuery(q): RawQuery| async move {
                asset(q.as_deref(), STYLE, "text/css; charset=utf-8")
            }),
        ),
        Route::new(&LAST_CPU_SVG, l, last("cpu", true)),
        Route::new(&LAST_CPU_PPROF, l, last("cpu", false)),
        Route::new(&LAST_HEAP_SVG, l, last("heap", true)),
        Route::new(&LAST_HEAP_PPROF, l, last("heap", false)),
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
        return Json(serde_json::json!({
            "service": &*state.service_name,
            "version": env!("CARGO_PKG_VERSION"),
            "caller": caller.as_ref().map(|(name, scope)| serde_json::json!({ "token": name, "scope": scope })),
            "endpoints": state.table(),
            "probes": glances,
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

/// Every probe's glance, by probe name (all at once: the Tokio one samples a short window).
pub(super) async fn glances(state: &ServerState) -> serde_json::Map<String, serde_json::Value> {
    let pending = state.probes.iter().map(|p| {
        let name = p.spec().name;
        let glance = p.glance();
        async move { (name, glance.await) }
    });
    futures_util::future::join_all(pending)
        .await
        .into_iter()
        .filter_map(|(name, g)| Some((name.to_string(), g?)))
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

/// A kept flamegraph (`svg`) or its pprof file. The SVG accepts inferno's own parameters
/// (`s` search term, `x`/`y` zoomed frame), which it writes into its URL.
fn last_result(
    result: Option<Arc<StoredResult>>,
    kind: &str,
    svg: bool,
    q: Option<&str>,
) -> Response {
    let allowed: &[&str] = if svg { &["s", "x", "y"] } else { &[] };
    if let Err(e) = Params::parse(q, allowed) {
        return e.into_response();
    }
    let Some(r) = result else {
        let (what, path) = match kind {
            "cpu" => ("CPU", "/debug/pprof/profile?format=svg"),
            _ => ("heap", "/debug/pprof/heap?format=svg"),
        };
        return ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} flamegraph has been taken yet: GET {path} (the console's button) keeps the last one here"),
        )
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
