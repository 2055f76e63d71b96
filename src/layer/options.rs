//! What the layer tracks, and its bounds.

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};

/// Default cap on spans tracked at once: 16 384 (the span table's slots, ~1.4 MiB).
pub const DEFAULT_MAX_SPANS: usize = 16_384;
/// Default cap on recorded field bytes per span (and per kept event): 512.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 512;
/// Default number of span names given a latency summary: 256.
pub const DEFAULT_MAX_SPAN_NAMES: usize = 256;
/// Default number of slowest spans kept per name and minute: 5.
pub const DEFAULT_SLOWEST: usize = 5;
/// Default cap on error groups: 1000.
pub const DEFAULT_MAX_ERROR_GROUPS: usize = 1000;
/// Default number of recent events kept per error group: 5.
pub const DEFAULT_RECENT_EVENTS: usize = 5;

/// An extra redaction rule: `(field name, value already redacted by prodbg's rules) -> value
/// to show`. See [`Options::redact`].
pub type RedactFn = fn(&str, &str) -> String;

/// Configuration of [`layer`](super::layer) and [`filtered_layer`](super::filtered_layer).
/// `Options::default()`: the caps below; under [`filtered_layer`](super::filtered_layer),
/// spans at `INFO` and above and `WARN`/`ERROR` events from every target; profile labels from
/// the `route` and `http.route` fields; field values redacted with the rules of
/// `/debug/process`.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) span_filter: Targets,
    pub(crate) event_filter: Targets,
    pub(crate) max_spans: usize,
    pub(crate) max_field_bytes: usize,
    pub(crate) max_span_names: usize,
    pub(crate) slowest: usize,
    pub(crate) max_error_groups: usize,
    pub(crate) recent_events: usize,
    pub(crate) label_fields: Vec<String>,
    pub(crate) redact: Option<RedactFn>,
    pub(crate) in_flight: bool,
    pub(crate) latency: bool,
    pub(crate) errors: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            span_filter: Targets::new().with_default(Level::INFO),
            event_filter: Targets::new().with_default(Level::WARN),
            max_spans: DEFAULT_MAX_SPANS,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            max_span_names: DEFAULT_MAX_SPAN_NAMES,
            slowest: DEFAULT_SLOWEST,
            max_error_groups: DEFAULT_MAX_ERROR_GROUPS,
            recent_events: DEFAULT_RECENT_EVENTS,
            label_fields: vec!["route".to_string(), "http.route".to_string()],
            redact: None,
            in_flight: true,
            latency: true,
            errors: true,
        }
    }
}

impl Options {
    /// Under [`filtered_layer`](super::filtered_layer) only: which spans are tracked (in
    /// flight, latency, labels). Spans this filter rejects cost the layer nothing, and are not
    /// even created unless another layer wants them: it is a per-layer filter, independent of
    /// the host's log filter. E.g. to add tower-http's
    /// `DEBUG` request spans: `Targets::new().with_default(Level::INFO)
    /// .with_target("tower_http", Level::DEBUG)`.
    pub fn span_filter(mut self, filter: Targets) -> Options {
        self.span_filter = filter;
        self
    }

    /// Under [`filtered_layer`](super::filtered_layer) only: which events are seen: `WARN`
    /// and `ERROR` ones are grouped, `ERROR` ones mark their span
    /// as failed, all are counted by level. Default: `WARN` and above.
    pub fn event_filter(mut self, filter: Targets) -> Options {
        self.event_filter = filter;
        self
    }

    /// Cap on spans tracked at once (count), rounded up to a power of two (at least 16): the
    /// span table's size. Spans that find no free slot are not tracked, and counted; that can
    /// start from ~85 % occupancy.
    pub fn max_spans(mut self, n: usize) -> Options {
        self.max_spans = n.max(1);
        self
    }

    /// Cap on recorded field bytes per span and per kept event (bytes); values past it are
    /// cut or left out, and counted.
    pub fn max_field_bytes(mut self, n: usize) -> Options {
        self.max_field_bytes = n;
        self
    }

    /// How many distinct span names get a latency summary (count, at most 65 534).
    pub fn max_span_names(mut self, n: usize) -> Options {
        self.max_span_names = n.min(65_534);
        self
    }

    /// How many slowest spans are kept per name and minute (count).
    pub fn slowest(mut self, n: usize) -> Options {
        self.slowest = n;
        self
    }

    /// Cap on error groups (count); the least recently seen is evicted, and counted.
    pub fn max_error_groups(mut self, n: usize) -> Options {
        self.max_error_groups = n.max(1);
        self
    }

    /// How many recent events each error group keeps (count).
    pub fn recent_events(mut self, n: usize) -> Options {
        self.recent_events = n;
        self
    }

    /// The (at most two) span fields whose values label profile samples, beside the span name.
    pub fn label_fields(mut self, names: &[&str]) -> Options {
        self.label_fields = names.iter().take(2).map(|s| s.to_string()).collect();
        self
    }

    /// A rule applied to every field value a report shows, after prodbg's own (those of
    /// `/debug/process`: secret-looking names and values), which it cannot undo: it sees the
    /// already-redacted value. Runs when a report is built, never on the host's hot path.
    pub fn redact(mut self, f: RedactFn) -> Options {
        self.redact = Some(f);
        self
    }

    /// Only the profilers' span labels: no in-flight table contents, latency or error groups.
    /// Spans are still looked up by id, but no clock is read and no field but the label fields
    /// is formatted.
    pub fn labels_only(mut self) -> Options {
        self.in_flight = false;
        self.latency = false;
        self.errors = false;
        self
    }

    /// Turns the in-flight span list on or off.
    pub fn in_flight(mut self, on: bool) -> Options {
        self.in_flight = on;
        self
    }

    /// Turns the latency summary on or off.
    pub fn latency(mut self, on: bool) -> Options {
        self.latency = on;
        self
    }

    /// Turns error grouping and event counting on or off.
    pub fn errors(mut self, on: bool) -> Options {
        self.errors = on;
        self
    }

    pub(crate) fn max_event_level(&self) -> LevelFilter {
        let mut max = self
            .event_filter
            .default_level()
            .unwrap_or(LevelFilter::OFF);
        for (_, l) in self.event_filter.iter() {
            max = max.max(l);
        }
        max
    }
}
