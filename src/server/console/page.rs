//! The console's HTML: the figures (from the probes' glances), the forms, the result area and
//! the endpoint table. Server-rendered, so the figures show without the script; the script
//! refreshes `#figures` by fetching this page again.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::seam::StoredResult;
use crate::security::Scope;
use crate::server::table::RouteRow;

/// What the page shows.
pub(super) struct PageInput<'a> {
    pub(super) service: &'a str,
    pub(super) caller: Option<(&'a str, Scope)>,
    pub(super) table: &'a [RouteRow],
    pub(super) glances: &'a Map<String, Value>,
    pub(super) results: &'a [Arc<StoredResult>],
    pub(super) max_seconds: u64,
    pub(super) now: SystemTime,
}

/// Links are relative to `/debug/`, so the page works under any mount prefix.
pub(super) fn relative_link(path: &str) -> String {
    match path.strip_prefix("/debug/") {
        Some("") => "./".to_string(),
        Some(rest) => rest.to_string(),
        None => format!("..{path}"),
    }
}

/// HTML-escapes text and attribute values.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn bytes(v: &Value) -> Option<String> {
    let b = v.as_f64()?;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    Some(if unit == 0 {
        format!("{b:.0} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    })
}

fn percent(v: &Value) -> Option<String> {
    Some(format!("{:.0} %", v.as_f64()? * 100.0))
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `—` for a figure a probe could not tell (JSON `null`): never a fake 0.
fn or_dash(v: Option<String>) -> String {
    v.map_or_else(|| "—".to_string(), |s| escape(&s))
}

/// `—` and a short reason, the whole reason as a tooltip.
fn unavailable(why: Option<&str>) -> String {
    let why = why.unwrap_or("unavailable");
    let short = if why.contains("not running on jemalloc") {
        "not running on jemalloc"
    } else if why.contains("not compiled in") {
        "not compiled in"
    } else {
        "unavailable"
    };
    format!("— <small title=\"{}\">{short}</small>", escape(why))
}

/// One figure: a label and a value, `bad` when it needs attention.
fn figure(id: &str, label: &str, value_html: &str, bad: bool) -> String {
    format!(
        "<div class=\"figure{}\" id=\"{id}\"><span class=\"label\">{label}</span> <span class=\"value\">{value_html}</span></div>\n",
        if bad { " bad" } else { "" }
    )
}

fn figures(input: &PageInput<'_>) -> String {
    let g = |probe: &str| input.glances.get(probe).cloned().unwrap_or(Value::Null);
    let mut out = String::new();

    // Memory.
    let memory = g("memory");
    let process = g("process");
    let rss = bytes(&memory["rss_bytes"]).or_else(|| bytes(&process["resident_bytes"]));
    out.push_str("<div class=\"card\"><h2>Memory</h2>\n");
    out.push_str(&figure("fig-rss", "RSS", &or_dash(rss), false));
    let allocated = match bytes(&memory["jemalloc_allocated_bytes"]) {
        Some(b) => escape(&b),
        None => unavailable(memory["jemalloc_unavailable"].as_str()),
    };
    out.push_str(&figure(
        "fig-jemalloc",
        "jemalloc allocated",
        &allocated,
        false,
    ));
    let heap = g("heap");
    let sampling = if heap.is_null() {
        "not compiled in (feature <code>heap</code>)".to_string()
    } else if let Some(why) = heap["unavailable"].as_str() {
        unavailable(Some(why))
    } else if heap["profiling_enabled"] == false {
        "off; start the host with <code>prof:true</code> to allow it".to_string()
    } else if heap["sampling_active"] == true {
        "active".to_string()
    } else {
        "inactive".to_string()
    };
    out.push_str(&figure(
        "fig-heap-sampling",
        "heap sampling",
        &sampling,
        false,
    ));
    out.push_str("</div>\n");

    // Tokio.
    out.push_str("<div class=\"card wide\"><h2>Tokio runtimes</h2>\n");
    let tokio = g("tokio");
    let runtimes = tokio["runtimes"].as_array().cloned().unwrap_or_default();
    if runtimes.is_empty() {
        out.push_str("<p id=\"fig-tokio\">no runtime registered: <code>.tokio_runtime(\"main\", Handle::current())</code></p>\n");
    } else {
        out.push_str("<table id=\"fig-tokio\"><tr><th>runtime</th><th>workers</th><th>busy</th><th>blocked workers</th><th>global queue</th><th>local queues</th><th>tasks</th></tr>\n");
        for r in &runtimes {
            let blocked = r["likely_blocked_workers"].as_u64().unwrap_or(0);
            let busy = r["busy_ratio"].as_f64().unwrap_or(0.0);
            let queue = r["global_queue_depth"].as_u64().unwrap_or(0);
            let bad = blocked > 0 || busy >= 0.9;
            out.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>\n",
                if bad { "bad" } else { "" },
                escape(r["name"].as_str().unwrap_or("?")),
                r["workers"],
                or_dash(percent(&r["busy_ratio"])),
                or_dash(r["likely_blocked_workers"].as_u64().map(|v| v.to_string())),
                if queue > 0 { "warn" } else { "" },
                queue,
                or_dash(r["local_queue_depth"].as_u64().map(|v| v.to_string())),
                r["alive_tasks"],
            ));
        }
        out.push_str("</table>\n");
    }
    if let Some(addr) = tokio["console_addr"].as_str() {
        out.push_str(&format!(
            "<p>tokio-console: <code>tokio-console http://{}</code></p>\n",
            escape(addr)
        ));
    }
    out.push_str("</div>\n");

    // Pools.
    out.push_str("<div class=\"card\"><h2>Pools</h2>\n");
    let pools = g("pools");
    let count = pools["pools"].as_u64().unwrap_or(0);
    let saturated: Vec<String> = pools["saturated"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).map(escape).collect())
        .unwrap_or_default();
    out.push_str(&figure(
        "fig-pools",
        "registered",
        &count.to_string(),
        false,
    ));
    out.push_str(&figure(
        "fig-pools-saturated",
        "saturated",
        &if saturated.is_empty() {
            "none".to_string()
        } else {
            saturated.join(", ")
        },
        !saturated.is_empty(),
    ));
    for p in pools["each"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<div class=\"sub\">{}: {} of {} in use, {} waiting</div>\n",
            escape(p["name"].as_str().unwrap_or("?")),
            or_dash(p["in_use"].as_u64().map(|v| v.to_string())),
            or_dash(p["max_size"].as_u64().map(|v| v.to_string())),
            or_dash(p["waiting"].as_u64().map(|v| v.to_string())),
        ));
    }
    out.push_str("</div>\n");

    out.push_str(&requests(&g("spans")));

    // Deadlocks, CPU, process.
    out.push_str("<div class=\"card\"><h2>Process</h2>\n");
    let deadlock = g("deadlock");
    let (deadlocks, bad) = if deadlock.is_null() {
        (
            "not compiled in (feature <code>deadlock</code>)".to_string(),
            false,
        )
    } else if deadlock["enabled"] == false {
        (
            "detection off: <code>.deadlock_detection(..)</code>".to_string(),
            false,
        )
    } else {
        let n = deadlock["detected_total"].as_u64().unwrap_or(0);
        (
            format!(
                "{n} <small>in {} checks</small>",
                deadlock["checks_total"].as_u64().unwrap_or(0)
            ),
            n > 0,
        )
    };
    out.push_str(&figure(
        "fig-deadlocks",
        "deadlocks detected",
        &deadlocks,
        bad,
    ));
    let cpu = g("cpu");
    let running = match cpu["profile_running"].as_bool() {
        None => "not compiled in (feature <code>cpu</code>)",
        Some(true) => "running",
        Some(false) => "idle",
    };
    out.push_str(&figure("fig-cpu", "CPU profiler", running, false));
    out.push_str(&figure(
        "fig-threads",
        "threads / open fds",
        &format!(
            "{} / {}",
            or_dash(process["threads"].as_u64().map(|v| v.to_string())),
            or_dash(process["open_fds"].as_u64().map(|v| v.to_string()))
        ),
        false,
    ));
    out.push_str(&figure(
        "fig-uptime",
        "pid / uptime",
        &format!(
            "{} / {}",
            or_dash(process["pid"].as_u64().map(|v| v.to_string())),
            or_dash(process["uptime_seconds"].as_f64().map(duration))
        ),
        false,
    ));
    if let Some(note) = process["debug_info_missing"].as_str() {
        out.push_str(&figure("fig-debug-info", "debug info", &escape(note), true));
    }
    out.push_str("</div>\n");

    // Overrides.
    out.push_str("<div class=\"card wide\"><h2>Overrides in force</h2>\n");
    let entries = g("overrides")["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        out.push_str("<p id=\"fig-overrides\">none: the service runs as configured</p>\n");
    } else {
        out.push_str("<ul id=\"fig-overrides\" class=\"warn\">\n");
        for e in &entries {
            out.push_str(&format!(
                "<li><b>{}</b> = <code>{}</code> by {} at {}, {}</li>\n",
                escape(e["kind"].as_str().unwrap_or("?")),
                escape(e["value"].as_str().unwrap_or("")),
                escape(e["set_by"].as_str().unwrap_or("?")),
                escape(e["set_at"].as_str().unwrap_or("?")),
                match e["expires_at"].as_str() {
                    Some(t) => format!("until {}", escape(t)),
                    None => "until undone".to_string(),
                }
            ));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</div>\n");
    out.push_str(&format!(
        "<p class=\"stamp\">as of <time id=\"fig-time\">{}</time></p>\n",
        crate::encode::time::format(input.now)
    ));
    out
}

/// The spans probe's card: requests in flight and error groups, with links to the lists.
fn requests(spans: &Value) -> String {
    let mut out = String::from("<div class=\"card\"><h2>Requests</h2>\n");
    if spans["installed"] != true {
        out.push_str("<p id=\"fig-spans\">no span layer: <code>prodbg::spans::layer(..)</code> inside the host's filter, then <code>.spans(handle)</code></p>\n</div>\n");
        return out;
    }
    let overdue = spans["overdue"].as_u64().unwrap_or(0);
    out.push_str(&figure(
        "fig-spans",
        "spans in flight",
        &format!(
            "{} <small>oldest {}</small>",
            or_dash(spans["in_flight"].as_u64().map(|v| v.to_string())),
            or_dash(spans["oldest_ms"].as_f64().map(duration_ms))
        ),
        false,
    ));
    out.push_str(&figure(
        "fig-spans-slow",
        &format!(
            "open over {}× their name's p99",
            spans["overdue_factor"].as_u64().unwrap_or(2)
        ),
        &format!("{overdue} <small><a href=\"spans?format=text\">list</a></small>"),
        overdue > 0,
    ));
    let errors = spans["errors_last_minute"].as_u64().unwrap_or(0);
    out.push_str(&figure(
        "fig-errors",
        "errors / warnings last minute",
        &format!(
            "{errors} / {} <small>in {} groups, <a href=\"errors?format=text\">list</a></small>",
            spans["warnings_last_minute"].as_u64().unwrap_or(0),
            spans["error_groups"].as_u64().unwrap_or(0)
        ),
        errors > 0,
    ));
    out.push_str("</div>\n");
    out
}

/// Milliseconds as `850 ms`, `12.3 s` or minutes and hours.
fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        duration(ms / 1000.0)
    }
}

fn actions(input: &PageInput<'_>) -> String {
    let max = input.max_seconds;
    let secs = |name: &str, default: u64| {
        format!(
            "<input name=\"seconds\" id=\"{name}-seconds\" type=\"number\" min=\"1\" max=\"{max}\" value=\"{}\" required> s",
            default.min(max)
        )
    };
    let available = |path: &str| input.table.iter().any(|r| r.path == path && r.available);
    let disabled = |path: &str| {
        if available(path) {
            ""
        } else {
            " disabled title=\"not compiled in\""
        }
    };
    let is_admin = input.caller.is_some_and(|(_, s)| s >= Scope::Admin);
    let admin_note = if is_admin {
        ""
    } else {
        " <small>(needs a token with scope admin)</small>"
    };
    format!(
        "<form class=\"action\" id=\"cpu-form\" method=\"get\" action=\"pprof/profile\">\
<input type=\"hidden\" name=\"format\" value=\"svg\">\
<button id=\"cpu-flame\" type=\"submit\"{cpu}>CPU flamegraph</button> for {cpu_secs}</form>\n\
<form class=\"action\" id=\"heap-form\" method=\"get\" action=\"pprof/heap\">\
<input type=\"hidden\" name=\"format\" value=\"svg\">\
<button id=\"heap-growth\" type=\"submit\"{heap}>Heap growth profile</button> over {heap_secs} \
<button id=\"heap-now\" type=\"button\"{heap}>Heap in use now</button></form>\n\
<form class=\"action\" id=\"heap-switch\" method=\"post\" action=\"pprof/heap/activate\">\
<button id=\"heap-on\" type=\"submit\" formaction=\"pprof/heap/activate\"{heap}>Heap sampling on</button> \
<button id=\"heap-off\" type=\"submit\" formaction=\"pprof/heap/deactivate\"{heap}>Heap sampling off</button>{admin_note}</form>\n\
<form class=\"action\" id=\"threads-form\" method=\"get\" action=\"threads\">\
<input type=\"hidden\" name=\"format\" value=\"text\">\
<button id=\"thread-dump\" type=\"submit\"{threads}>Thread dump</button></form>\n\
<form class=\"action\" id=\"tasks-form\" method=\"get\" action=\"tokio/tasks\">\
<button id=\"task-dump\" type=\"submit\">Task dump</button></form>\n\
<form class=\"action\" id=\"bundle-form\" method=\"get\" action=\"bundle\">\
<button id=\"bundle\" type=\"submit\">Download bundle</button> over {bundle_secs}</form>\n\
<form class=\"action\" id=\"log-form\">\
<label>log filter <input name=\"filter\" id=\"log-filter\" size=\"40\" placeholder=\"info,my_app::db=debug\" required></label> \
for <input name=\"ttl\" id=\"log-ttl\" size=\"5\" value=\"15m\"> \
<button id=\"log-set\" type=\"submit\">Set log level</button> \
<button id=\"log-reset\" type=\"button\">Reset</button>{admin_note}</form>\n",
        cpu = disabled("/debug/pprof/profile"),
        heap = disabled("/debug/pprof/heap"),
        threads = disabled("/debug/threads"),
        cpu_secs = secs("cpu", 10),
        heap_secs = secs("heap", 30),
        bundle_secs = secs("bundle", 10),
    )
}

fn results(input: &PageInput<'_>) -> String {
    let mut out = String::new();
    for r in input.results {
        out.push_str(&format!(
            "<li>{}: <a href=\"console/last/{k}.svg\" target=\"_blank\">{}</a> · <a href=\"console/last/{k}.pb.gz\" download>{}</a> <small>taken at {} by {}</small></li>\n",
            escape(r.kind),
            escape(&r.svg_name),
            escape(&r.pprof_name),
            crate::encode::time::format(r.taken_at),
            escape(&r.by),
            k = r.kind,
        ));
    }
    if out.is_empty() {
        "<p id=\"kept\">No flamegraph kept yet.</p>\n".to_string()
    } else {
        format!("<ul id=\"kept\">\n{out}</ul>\n")
    }
}

fn endpoints(list: &[RouteRow]) -> String {
    let mut rows = String::new();
    for e in list {
        let path = escape(&e.path);
        let link = if e.available && e.method == "GET" {
            format!("<a href=\"{}\">{path}</a>", escape(&relative_link(&e.path)))
        } else {
            path
        };
        let note = match (e.available, e.feature) {
            (false, Some(f)) => {
                format!(" <em>(not compiled in: enable the <code>{f}</code> feature)</em>")
            }
            _ => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{link}</td><td>{}</td><td>{}{note}</td></tr>\n",
            e.method,
            e.scope.map_or("none", Scope::as_str),
            escape(&e.summary),
        ));
    }
    format!("<table class=\"endpoints\"><tr><th>method</th><th>path</th><th>scope</th><th>what</th></tr>\n{rows}</table>\n")
}

/// The whole page.
pub(super) fn html(input: &PageInput<'_>) -> String {
    let s = escape(input.service);
    let who = match input.caller {
        Some((name, scope)) => format!(
            "signed in as <b id=\"caller\">{}</b> (scope {scope})",
            escape(name)
        ),
        None => "not signed in".to_string(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>prodbg: {s}</title><link rel=\"stylesheet\" href=\"console.css\">\
<script src=\"console.js\" defer></script></head>\n<body>\n\
<header><h1>prodbg: {s}</h1><p>{who} · prodbg {version} · <a href=\"pprof/\">/debug/pprof/</a> · <a href=\"../metrics\">/metrics</a> · \
<label><input type=\"checkbox\" id=\"auto-refresh\" checked> refresh every 10 s</label></p></header>\n\
<section id=\"figures\" class=\"cards\">\n{figures}</section>\n\
<section id=\"actions\"><h2>Take</h2>\n{actions}</section>\n\
<section id=\"result\"><p id=\"status\" role=\"status\">Every button calls the same guarded, audited endpoint as curl.</p>\
<p id=\"links\"></p>\
<iframe id=\"flame\" title=\"flamegraph\" sandbox=\"allow-scripts\" hidden></iframe><pre id=\"text\" hidden></pre>\n\
<h2>Kept flamegraphs</h2>\n{results}</section>\n\
<section id=\"endpoints\"><h2>Endpoints</h2>\n{endpoints}</section>\n\
</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        figures = figures(input),
        actions = actions(input),
        results = results(input),
        endpoints = endpoints(input.table),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_index() {
        assert_eq!(relative_link("/debug/"), "./");
        assert_eq!(relative_link("/debug/pprof/profile"), "pprof/profile");
        assert_eq!(relative_link("/metrics"), "../metrics");
    }

    #[test]
    fn figures_show_what_the_glances_say() {
        let glances: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "memory": { "rss_bytes": 50u64 << 20, "jemalloc_allocated_bytes": null, "jemalloc_unavailable": "not <jemalloc>" },
            "tokio": { "runtimes": [{ "name": "main", "workers": 2, "busy_ratio": 0.95, "likely_blocked_workers": 1, "global_queue_depth": 7, "local_queue_depth": null, "alive_tasks": 12 }] },
            "pools": { "pools": 2, "saturated": ["db"], "each": [] },
            "spans": { "installed": true, "in_flight": 3, "oldest_ms": 12_345.0, "overdue": 2, "overdue_factor": 2, "error_groups": 4, "errors_last_minute": 9, "warnings_last_minute": 1 },
            "deadlock": { "enabled": true, "detected_total": 1, "checks_total": 9 },
            "overrides": { "entries": [{ "kind": "log_level", "value": "debug", "set_by": "ops", "set_at": "t", "expires_at": null }] },
        }))
        .unwrap();
        let html = html(&PageInput {
            service: "svc<1>",
            caller: Some(("ops", Scope::Admin)),
            table: &[],
            glances: &glances,
            results: &[],
            max_seconds: 60,
            now: SystemTime::UNIX_EPOCH,
        });
        for want in [
            "prodbg: svc&lt;1&gt;",
            "50.0 MiB",
            "<small title=\"not &lt;jemalloc&gt;\">unavailable</small>",
            "<tr class=\"bad\"><td>main</td><td>2</td><td>95 %</td><td>1</td><td class=\"warn\">7</td><td>—</td><td>12</td></tr>",
            "id=\"fig-pools-saturated\"><span class=\"label\">saturated</span> <span class=\"value\">db</span>",
            "class=\"figure bad\" id=\"fig-deadlocks\"",
            "id=\"fig-spans\"><span class=\"label\">spans in flight</span> <span class=\"value\">3 <small>oldest 12.3 s</small>",
            "class=\"figure bad\" id=\"fig-spans-slow\"><span class=\"label\">open over 2× their name's p99</span> <span class=\"value\">2 ",
            "9 / 1 <small>in 4 groups",
            "<b>log_level</b> = <code>debug</code> by ops at t, until undone",
            "signed in as <b id=\"caller\">ops</b> (scope admin)",
        ] {
            assert!(html.contains(want), "{want} not in\n{html}");
        }
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "inline script or style"
        );
    }
}
