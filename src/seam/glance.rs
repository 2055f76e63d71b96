//! What a probe shows on the console, typed: figures (label, value, unit, whether it is bad),
//! tables and actions (forms with bounded fields). The console renders any probe's glance
//! without knowing its insides, and the index JSON (`probes.<name>`) is the same data.

use serde::Serialize;

use super::RouteSpec;
use crate::security::Scope;

/// A card of the console; figures of several probes may share one (e.g. heap sampling sits
/// in "Memory"). Cards show in `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Card {
    /// Its heading.
    pub(crate) title: &'static str,
    /// Where it shows, smallest first.
    #[serde(skip)]
    pub(crate) order: u8,
    /// Whether it spans two columns.
    #[serde(skip)]
    pub(crate) wide: bool,
}

impl Card {
    /// Memory: RSS, allocator, heap sampling.
    pub(crate) const MEMORY: Card = Card::new("Memory", 10, false);
    /// Async runtimes.
    pub(crate) const RUNTIMES: Card = Card::new("Tokio runtimes", 20, true);
    /// Connection pools.
    pub(crate) const POOLS: Card = Card::new("Pools", 30, false);
    /// Requests in flight and errors.
    pub(crate) const REQUESTS: Card = Card::new("Requests", 40, false);
    /// The process: threads, profilers, deadlocks.
    pub(crate) const PROCESS: Card = Card::new("Process", 50, false);
    /// Run-time changes in force.
    pub(crate) const OVERRIDES: Card = Card::new("Overrides in force", 60, true);
    /// Probes compiled out.
    pub(crate) const NOT_COMPILED: Card = Card::new("Not compiled in", 90, false);

    /// A card titled `title`.
    pub(crate) const fn new(title: &'static str, order: u8, wide: bool) -> Card {
        Card { title, order, wide }
    }
}

/// A probe's glance: its figures and tables (each in a card) and its actions.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Glance {
    /// Single figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) figures: Vec<Figure>,
    /// Tables (one row per runtime, per override …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tables: Vec<Table>,
    /// Forms that run the probe's routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) actions: Vec<Action>,
}

impl Glance {
    /// Adds `figure`.
    pub(crate) fn figure(mut self, figure: Figure) -> Glance {
        self.figures.push(figure);
        self
    }

    /// Adds `table`.
    pub(crate) fn table(mut self, table: Table) -> Glance {
        self.tables.push(table);
        self
    }

    /// Adds `action`.
    pub(crate) fn action(mut self, action: Action) -> Glance {
        self.actions.push(action);
        self
    }
}

/// A value with its unit; `None` is a figure the probe cannot tell (shown as `—`, never 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "unit", content = "value", rename_all = "snake_case")]
pub(crate) enum Value {
    /// Bytes (shown as KiB, MiB …).
    Bytes(Option<u64>),
    /// A share, 0.0–1.0 (shown as a percentage).
    Ratio(Option<f64>),
    /// A count.
    Count(Option<u64>),
    /// A duration in seconds.
    Seconds(Option<f64>),
    /// A duration in milliseconds.
    Millis(Option<f64>),
    /// Text.
    Text(String),
}

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable id; the page's element is `fig-<id>`.
    pub(crate) id: &'static str,
    /// The card it shows in.
    pub(crate) card: Card,
    /// What it is.
    pub(crate) label: String,
    /// Its value.
    #[serde(flatten)]
    pub(crate) value: Value,
    /// Whether it needs attention.
    pub(crate) bad: bool,
    /// A short remark after the value ("in 9 checks"), or why the value is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// A link after the value: (path relative to `/debug/`, text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<(&'static str, &'static str)>,
    /// The route whose count this is in Go's `/debug/pprof/` index (tasks for `goroutine`).
    #[serde(skip)]
    pub(crate) counts: Option<&'static RouteSpec>,
}

impl Figure {
    /// A figure `id` in `card`: `label` = `value`.
    pub(crate) fn new(
        id: &'static str,
        card: Card,
        label: impl Into<String>,
        value: Value,
    ) -> Figure {
        Figure {
            id,
            card,
            label: label.into(),
            value,
            bad: false,
            note: None,
            link: None,
            counts: None,
        }
    }

    /// Marks it as needing attention when `bad`.
    pub(crate) fn bad(mut self, bad: bool) -> Figure {
        self.bad = bad;
        self
    }

    /// Adds a short remark after the value.
    pub(crate) fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }

    /// Adds a link after the value.
    pub(crate) fn link(mut self, path: &'static str, text: &'static str) -> Figure {
        self.link = Some((path, text));
        self
    }

    /// Makes it the count Go's index shows for `route`.
    pub(crate) fn counts(mut self, route: &'static RouteSpec) -> Figure {
        self.counts = Some(route);
        self
    }
}

/// A table of figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Table {
    /// Stable id; the page's element is `fig-<id>`.
    pub(crate) id: &'static str,
    /// The card it shows in.
    pub(crate) card: Card,
    /// Column headings.
    pub(crate) columns: Vec<&'static str>,
    /// The rows.
    pub(crate) rows: Vec<Row>,
    /// What an empty table says instead.
    pub(crate) empty: String,
}

/// A row of a [`Table`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// One value per column.
    pub(crate) cells: Vec<Value>,
    /// Whether it needs attention.
    pub(crate) bad: bool,
}

/// How the console shows an action's answer.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
pub(crate) enum Shows {
    /// A flamegraph SVG, kept by the server as the last result of this profile kind.
    Flame(&'static str),
    /// The body as text.
    Text,
    /// A status line from the JSON answer: `{a.b}` is replaced by that field.
    Status(&'static str),
}

/// A form field.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Field {
    /// The query parameter (or body) it fills; the input's id is `<action>-<name>`.
    pub(crate) name: &'static str,
    /// Text before it.
    pub(crate) label: &'static str,
    /// Its kind and bounds.
    pub(crate) kind: FieldKind,
}

/// A field's kind and bounds.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FieldKind {
    /// Whole seconds, `1..=max`.
    Seconds {
        /// The preset value.
        default: u64,
        /// The largest accepted.
        max: u64,
    },
    /// Free text of at most `max_len` bytes.
    Text {
        /// Shown while empty.
        placeholder: &'static str,
        /// The preset value.
        default: &'static str,
        /// Longest accepted, bytes.
        max_len: usize,
        /// Whether it must be filled.
        required: bool,
    },
}

/// A form that calls one route, as curl would.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Action {
    /// Stable id; the form is `<id>-form`.
    pub(crate) id: &'static str,
    /// The button's id.
    pub(crate) button: &'static str,
    /// The button's text.
    pub(crate) label: &'static str,
    /// The route it calls.
    #[serde(serialize_with = "route_line")]
    pub(crate) route: &'static RouteSpec,
    /// Query parameters always sent (e.g. `format=svg`).
    pub(crate) fixed: &'static [(&'static str, &'static str)],
    /// The fields, sent as query parameters except [`Action::body`].
    pub(crate) fields: Vec<Field>,
    /// The field sent as the request body, if any.
    pub(crate) body: Option<&'static str>,
    /// How the answer shows.
    pub(crate) shows: Shows,
    /// The scope it needs, when more than `profile` (the console notes it for weaker tokens).
    pub(crate) needs: Option<Scope>,
}

impl Action {
    /// An action `id` calling `route`, its button `button` reading `label`.
    pub(crate) fn new(
        id: &'static str,
        button: &'static str,
        label: &'static str,
        route: &'static RouteSpec,
        shows: Shows,
    ) -> Action {
        Action {
            id,
            button,
            label,
            route,
            fixed: &[],
            fields: Vec::new(),
            body: None,
            shows,
            needs: None,
        }
    }

    /// Always sends these query parameters.
    pub(crate) fn fixed(mut self, fixed: &'static [(&'static str, &'static str)]) -> Action {
        self.fixed = fixed;
        self
    }

    /// Adds a field.
    pub(crate) fn field(
        mut self,
        name: &'static str,
        label: &'static str,
        kind: FieldKind,
    ) -> Action {
        self.fields.push(Field { name, label, kind });
        self
    }

    /// Sends field `name` as the body.
    pub(crate) fn body(mut self, name: &'static str) -> Action {
        self.body = Some(name);
        self
    }

    /// Notes that it needs `scope`.
    pub(crate) fn needs(mut self, scope: Scope) -> Action {
        self.needs = Some(scope);
        self
    }
}

fn route_line<S: serde::Serializer>(route: &&'static RouteSpec, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{} {}", route.method, route.path))
}
