//! `GET /debug/pprof/`: Go's profile index, built from the endpoint table like the console
//! (so it lists exactly the `/debug/pprof/*` routes compiled in), with Go's counts where
//! prodbg can tell them cheaply: tasks (goroutine) and OS threads (threadcreate).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::console::{escape, glances, secure_html};
use super::state::ServerState;
use crate::seam::{Access, Params, Route, RouteSpec};
use crate::security::Scope;

/// The index's route.
pub(super) const ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/",
    access: Access::Scope(Scope::Read),
    summary: |_| {
        "Go's profile index: a link and, where known, a count (tasks, threads) for each /debug/pprof/ profile compiled in".into()
    },
};

const CSP: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// The index with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    Route::new(&ROUTE, &state.limits, get(index).with_state(state.clone()))
}

/// What Go's page says of each profile, and the link it gives (relative to `/debug/pprof/`).
fn describe(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "allocs" => (
            "allocs",
            "Sampled live allocations (jemalloc; the same profile as heap, the path Alloy and Parca scrape). ?seconds=N gives the growth over N seconds.",
        ),
        "cmdline" => ("cmdline", "The command line of this program, arguments separated by NUL bytes, secrets redacted."),
        "goroutine" => ("goroutine?debug=1", "Stack traces of all current Tokio tasks (the async task dump), grouped by stack. Needs --cfg tokio_unstable."),
        "heap" => ("heap", "Sampled live allocations (jemalloc). ?format=svg for a flamegraph; ?seconds=N for the growth over N seconds."),
        "profile" => ("profile", "CPU profile. ?seconds=N (default 30) sets the duration; ?format=svg for a flamegraph. Downloads a file for go tool pprof."),
        "wall" => ("wall", "Wall-clock profile of every thread, running or not, each sample labelled with the thread's state (running, runnable, futex, io, sleeping, stopped). ?seconds=N (default 30); ?format=svg for a flamegraph rooted at the states."),
        "threadcreate" => ("threadcreate?debug=1", "The OS threads of the process (from /proc; their creation stacks are not recorded)."),
        _ => return None,
    })
}

async fn index(State(state): State<Arc<ServerState>>, RawQuery(q): RawQuery) -> Response {
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    let glances = glances(&state).await;
    let tasks: Option<u64> = glances
        .get("tokio")
        .and_then(|t| t["runtimes"].as_array())
        .map(|rs| rs.iter().filter_map(|r| r["alive_tasks"].as_u64()).sum());
    let threads = glances.get("process").and_then(|p| p["threads"].as_u64());
    let mut rows = String::new();
    let mut notes = String::new();
    for e in state.table() {
        let Some(name) = e.path.strip_prefix("/debug/pprof/") else {
            continue;
        };
        let Some((href, what)) = describe(name) else {
            continue;
        };
        if e.method != "GET" {
            continue;
        }
        let count = match name {
            "goroutine" => tasks.map(|n| n.to_string()),
            "threadcreate" => threads.map(|n| n.to_string()),
            _ => None,
        }
        .unwrap_or_default();
        let cell = if e.available {
            format!("<a href=\"{}\">{name}</a>", escape(href))
        } else {
            format!(
                "{name} <em>(not compiled in: feature <code>{}</code>)</em>",
                e.feature.unwrap_or("?")
            )
        };
        rows.push_str(&format!("<tr><td>{count}</td><td>{cell}</td></tr>\n"));
        notes.push_str(&format!(
            "<li><div class=\"profile-name\">{name}: </div> {}</li>\n",
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
