//! `GET /debug/pprof/`: Go's profile index, built from the endpoint table like the console
//! (so it lists exactly the `/debug/pprof/*` routes declared with a Go-index line), with the
//! counts the probes' glances declare for them (tasks for goroutine, OS threads for
//! threadcreate).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{Html, IntoResponse, Response};

use super::console::{escape, glances, secure_html};
use super::state::ServerState;
use crate::seam::{Access, Params, Route, RouteSpec, Value};
use crate::security::Scope;

/// The index's route.
pub(super) static ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "Go's profile index: a link and, where known, a count (tasks, threads) for each /debug/pprof/ profile compiled in".into()
    },
};

const CSP: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// The index with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    ROUTE.serve(&state.limits, index, state.clone())
}

async fn index(State(state): State<Arc<ServerState>>, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    let glances = glances(&state).await;
    // Go's counts: the figures that say which route they count, summed per route.
    let count = |path: &str| -> Option<u64> {
        let counts: Vec<Option<u64>> = glances
            .iter()
            .flat_map(|(_, g)| &g.figures)
            .filter(|f| f.counts.is_some_and(|r| r.path == path))
            .map(|f| match f.value {
                Value::Count(n) => n,
                _ => None,
            })
            .collect();
        if counts.is_empty() {
            None
        } else {
            counts.into_iter().sum()
        }
    };
    let mut rows = String::new();
    let mut notes = String::new();
    for e in state.table() {
        let (Some(name), Some(go)) = (e.path.strip_prefix("/debug/pprof/"), e.go) else {
            continue;
        };
        let count = count(&e.path).map(|n| n.to_string()).unwrap_or_default();
        let what = go.text;
        let cell = if e.available {
            format!("<a href=\"{}\">{}</a>", escape(go.link), escape(name))
        } else {
            format!(
                "{} <em>(not compiled in: feature <code>{}</code>)</em>",
                escape(name),
                e.feature.unwrap_or("?")
            )
        };
        rows.push_str(&format!("<tr><td>{count}</td><td>{cell}</td></tr>\n"));
        notes.push_str(&format!(
            "<li><div class=\"profile-name\">{}: </div> {}</li>\n",
            escape(name),
            escape(what)
        ));
    }
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>/debug/pprof/</title>\
<link rel=\"stylesheet\" href=\"../console.css\"></head>\n<body>\n\
/debug/pprof/ of {service}<br>\n\
<p>Set debug=1 as a query parameter to goroutine and threadcreate for the text forms; debug=2 for every task's stack.</p>\n\
<br>\nTypes of profiles available:\n\
<table>\n<thead><td>Count</td><td>Profile</td></thead>\n{rows}</table>\n\
<a href=\"goroutine?debug=2\">full goroutine stack dump</a>\n<br>\n\
<p>Profile Descriptions:</p>\n<ul>\n{notes}</ul>\n\
<p><a href=\"../\">the prodbg console</a> · <code>go tool pprof http://USER:SECRET@HOST/debug/pprof/profile?seconds=30</code></p>\n\
</body></html>\n",
        service = escape(&state.service_name),
    );
    let mut response = Html(body).into_response();
    secure_html(response.headers_mut(), CSP);
    response
}
