//! The console's HTML: the figures (from the probes' glances), the forms, the result area and
//! the endpoint table. Server-rendered, so the figures show without the script; the script
//! refreshes `#figures` by fetching this page again.

use std::sync::Arc;
use std::time::SystemTime;

use crate::seam::{Action, Card, FieldKind, Figure, Glance, Shows, StoredResult, Table, Value};
use crate::security::Scope;
use crate::server::table::RouteRow;

/// What the page shows.
pub(super) struct PageInput<'a> {
    pub(super) service: &'a str,
    pub(super) caller: Option<(&'a str, Scope)>,
    pub(super) table: &'a [RouteRow],
    pub(super) glances: &'a [(&'static str, Glance)],
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

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
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

/// A value as HTML: `—` for one the probe could not tell (never a fake 0).
fn value_html(v: &Value) -> String {
    let text = match v {
        Value::Bytes(b) => b.map(bytes),
        Value::Ratio(r) => r.map(|r| format!("{:.0} %", r * 100.0)),
        Value::Count(n) => n.map(|n| n.to_string()),
        Value::Seconds(s) => s.map(duration),
        Value::Millis(ms) => ms.map(duration_ms),
        Value::Text(t) => Some(t.clone()),
    };
    text.map_or_else(|| "—".to_string(), |t| escape(&t))
}

/// One figure: a label and a value, `bad` when it needs attention.
fn figure(f: &Figure) -> String {
    let mut value = value_html(&f.value);
    if let Some(note) = &f.note {
        value.push_str(&format!(" <small>{}</small>", escape(note)));
    }
    if let Some((href, text)) = f.link {
        value.push_str(&format!(
            " <small><a href=\"{}\">{}</a></small>",
            escape(href),
            escape(text)
        ));
    }
    format!(
        "<div class=\"figure{}\" id=\"fig-{}\"><span class=\"label\">{}</span> <span class=\"value\">{value}</span></div>\n",
        if f.bad { " bad" } else { "" },
        f.id,
        escape(&f.label),
    )
}

fn table(t: &Table) -> String {
    if t.rows.is_empty() {
        return format!("<p id=\"fig-{}\">{}</p>\n", t.id, escape(&t.empty));
    }
    let mut out = format!("<table id=\"fig-{}\"><tr>", t.id);
    for c in &t.columns {
        out.push_str(&format!("<th>{}</th>", escape(c)));
    }
    out.push_str("</tr>\n");
    for r in &t.rows {
        out.push_str(&format!(
            "<tr class=\"{}\">",
            if r.bad { "bad" } else { "" }
        ));
        for c in &r.cells {
            out.push_str(&format!("<td>{}</td>", value_html(c)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// The cards: every probe's figures and tables, grouped by card, cards in their order.
fn figures(input: &PageInput<'_>) -> String {
    let mut cards: Vec<(Card, String)> = Vec::new();
    let mut add = |card: Card, html: String| match cards.iter_mut().find(|(c, _)| *c == card) {
        Some((_, body)) => body.push_str(&html),
        None => cards.push((card, html)),
    };
    for (_, g) in input.glances {
        for f in &g.figures {
            add(f.card, figure(f));
        }
        for t in &g.tables {
            add(t.card, table(t));
        }
    }
    cards.sort_by_key(|(c, _)| c.order);
    let mut out = String::new();
    for (card, body) in cards {
        out.push_str(&format!(
            "<div class=\"card{}\"><h2>{}</h2>\n{body}</div>\n",
            if card.wide { " wide" } else { "" },
            escape(card.title)
        ));
    }
    out.push_str(&format!(
        "<p class=\"stamp\">as of <time id=\"fig-time\">{}</time></p>\n",
        crate::encode::time::format(input.now)
    ));
    out
}

fn field(action: &Action, f: &crate::seam::glance::Field) -> String {
    let id = format!("{}-{}", action.id, f.name);
    let input = match &f.kind {
        FieldKind::Seconds { default, max } => format!(
            "<input name=\"{n}\" id=\"{id}\" type=\"number\" min=\"1\" max=\"{max}\" value=\"{}\" required> s",
            (*default).min(*max),
            n = f.name,
        ),
        FieldKind::Text {
            placeholder,
            default,
            max_len,
            required,
        } => format!(
            "<input name=\"{n}\" id=\"{id}\" size=\"{}\" maxlength=\"{max_len}\" placeholder=\"{}\" value=\"{}\"{}>",
            (*max_len).min(40),
            escape(placeholder),
            escape(default),
            if *required { " required" } else { "" },
            n = f.name,
        ),
    };
    if f.label.is_empty() {
        format!(" {input}")
    } else {
        format!(" <label>{} {input}</label>", escape(f.label))
    }
}

/// The forms: each calls its route as curl would; the script reads the data attributes.
fn actions(input: &PageInput<'_>) -> String {
    let mut out = String::new();
    for (_, g) in input.glances {
        for a in &g.actions {
            let method = a.route.method.as_str();
            let (show, done) = match a.shows {
                Shows::Flame(kind) => (format!("flame:{kind}"), ""),
                Shows::Text => ("text".to_string(), ""),
                Shows::Status(template) => ("status".to_string(), template),
            };
            let fixed: String = a
                .fixed
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                        escape(v)
                    )
                })
                .collect();
            let fields: String = a.fields.iter().map(|f| field(a, f)).collect();
            let note = match (a.needs, input.caller) {
                (Some(scope), Some((_, have))) if have >= scope => String::new(),
                (Some(scope), _) => format!(" <small>(needs a token with scope {scope})</small>"),
                (None, _) => String::new(),
            };
            out.push_str(&format!(
                "<form class=\"action\" id=\"{id}-form\" data-method=\"{method}\" data-path=\"{path}\" data-show=\"{show}\" data-done=\"{done}\" data-body=\"{body}\">{fixed}\
<button id=\"{button}\" type=\"submit\">{label}</button>{fields}{note}</form>\n",
                id = a.id,
                path = escape(&relative_link(a.route.path)),
                done = escape(done),
                body = a.body.unwrap_or(""),
                button = a.button,
                label = escape(a.label),
            ));
        }
    }
    out
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
<section id=\"timeline\"><h2>Last 10 minutes</h2><p class=\"sub\">Drag across a chart for the CPU flamegraph of that window.</p><div id=\"charts\" class=\"charts\"></div></section>\n\
<section id=\"actions\"><h2>Take</h2>\n{actions}\
<form id=\"bundle-form\" method=\"get\" action=\"bundle\"><button id=\"bundle\" type=\"submit\">Download bundle</button> over \
<input name=\"seconds\" id=\"bundle-seconds\" type=\"number\" min=\"1\" max=\"{max}\" value=\"{bundle_secs}\" required> s</form>\n</section>\n\
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
        max = input.max_seconds,
        bundle_secs = 10.min(input.max_seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::{Access, RouteSpec};
    use axum::http::Method;

    static SWITCH: RouteSpec = RouteSpec {
        method: Method::PUT,
        path: "/debug/switch",
        access: Access::Scope(Scope::Admin),
        go: None,
        summary: |_| "switches".into(),
    };
    static PROFILE: RouteSpec = RouteSpec {
        method: Method::GET,
        path: "/debug/pprof/thing",
        access: Access::Scope(Scope::Profile),
        go: None,
        summary: |_| "profiles".into(),
    };

    fn page(glances: &[(&'static str, Glance)], caller: Scope) -> String {
        html(&PageInput {
            service: "svc<&>",
            caller: Some(("ops", caller)),
            table: &[],
            glances,
            results: &[],
            max_seconds: 60,
            now: SystemTime::UNIX_EPOCH,
        })
    }

    /// The page shows what the glances say and nothing it was not given: figures grouped in
    /// their cards (in card order, whichever probe came first), values in their units, marks,
    /// notes and links; forms with their route, bounded fields and the scope they need.
    #[test]
    fn figures_and_forms_come_from_the_glances() {
        let process = Glance::default()
            .figure(
                Figure::new(
                    "hostile",
                    Card::PROCESS,
                    "<script>x</script>",
                    Value::Count(Some(3)),
                )
                .bad(true)
                .note("in 2 groups")
                .link("errors?format=text", "list"),
            )
            .action(
                Action::new(
                    "thing",
                    "thing-flame",
                    "Thing flamegraph",
                    &PROFILE,
                    Shows::Flame("thing"),
                )
                .fixed(&[("format", "svg")])
                .field(
                    "seconds",
                    "for",
                    FieldKind::Seconds {
                        default: 90,
                        max: 60,
                    },
                ),
            );
        let memory = Glance::default()
            .figure(Figure::new(
                "rss",
                Card::MEMORY,
                "resident",
                Value::Bytes(Some(3 << 20)),
            ))
            .figure(Figure::new(
                "unknown",
                Card::MEMORY,
                "unknown",
                Value::Ratio(None),
            ))
            .action(
                Action::new(
                    "switch",
                    "switch-on",
                    "Switch",
                    &SWITCH,
                    Shows::Status("now {state.on}"),
                )
                .needs(Scope::Admin),
            );
        let html = page(&[("process", process), ("memory", memory)], Scope::Read);

        // Cards in their order (Memory before Process), whatever the probes' order.
        let memory_card = html.find("<h2>Memory</h2>").expect("memory card");
        let process_card = html.find("<h2>Process</h2>").expect("process card");
        assert!(memory_card < process_card, "{html}");
        assert!(html.contains("<h1>prodbg: svc&lt;&amp;&gt;</h1>"), "{html}");
        assert!(html.contains(
            "<div class=\"figure bad\" id=\"fig-hostile\"><span class=\"label\">&lt;script&gt;x&lt;/script&gt;</span> <span class=\"value\">3 <small>in 2 groups</small> <small><a href=\"errors?format=text\">list</a></small></span></div>"
        ), "{html}");
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("id=\"fig-rss\"><span class=\"label\">resident</span> <span class=\"value\">3.0 MiB</span>"), "{html}");
        assert!(html.contains("id=\"fig-unknown\"><span class=\"label\">unknown</span> <span class=\"value\">—</span>"), "{html}");

        // The profile form: its route, the hidden format, seconds bounded by the limit.
        assert!(html.contains("<form class=\"action\" id=\"thing-form\" data-method=\"GET\" data-path=\"pprof/thing\" data-show=\"flame:thing\""), "{html}");
        assert!(
            html.contains("<input type=\"hidden\" name=\"format\" value=\"svg\">"),
            "{html}"
        );
        assert!(html.contains("<input name=\"seconds\" id=\"thing-seconds\" type=\"number\" min=\"1\" max=\"60\" value=\"60\" required>"), "{html}");
        // The admin form says what it needs to a read token, and not to an admin one.
        assert!(html.contains("data-method=\"PUT\" data-path=\"switch\" data-show=\"status\" data-done=\"now {state.on}\""), "{html}");
        assert!(html.contains("(needs a token with scope admin)"), "{html}");
        let admin = page(
            &[(
                "memory",
                Glance::default().action(
                    Action::new("switch", "switch-on", "Switch", &SWITCH, Shows::Text)
                        .needs(Scope::Admin),
                ),
            )],
            Scope::Admin,
        );
        assert!(!admin.contains("needs a token"), "{admin}");
        // The timeline's empty container: the script draws the charts.
        assert!(
            html.contains("<section id=\"timeline\"><h2>")
                && html.contains("<div id=\"charts\" class=\"charts\"></div></section>"),
            "{html}"
        );
    }

    #[test]
    fn links_are_relative_to_the_index() {
        assert_eq!(relative_link("/debug/"), "./");
        assert_eq!(relative_link("/debug/pprof/profile"), "pprof/profile");
        assert_eq!(relative_link("/metrics"), "../metrics");
    }
}
