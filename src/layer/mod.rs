//! The `tracing` layer prodbg provides, on its own: it records the spans open now, the latency
//! of recently closed ones, `WARN`/`ERROR` events grouped by callsite, and each thread's span
//! labels for the profilers. Its readers live elsewhere: the spans probe (`/debug/spans`), the
//! errors probe (`/debug/errors`), and the CPU and wall-clock profilers through the
//! signal-safe label slots in `crate::stack::labels`. No HTTP here.
//!
//! `spans_layer.rs` (the `Layer` impl), `handle.rs` (what readers hold), `options.rs`, `fields.rs`
//! (the capped field buffer), `callsite.rs` (per-callsite facts), `thread.rs` (per-thread span
//! stack), `clock.rs`, `table.rs` (the in-flight table), `latency.rs` + `histogram.rs` (the
//! sliding window), `error_groups.rs`, `shared.rs` (what the layer and its readers share).
//!
//! # Installing it: three ways
//!
//! * **Behind the host's global filter (recommended)**:
//!   `registry().with(filter).with(fmt::layer()).with(spans)` with
//!   `let (spans, handle) = prodbg::spans::layer(opts)` and the filter from
//!   [`reloadable`](crate::log_level::reloadable). It tracks exactly what the host's log filter
//!   lets through, and costs least (no per-layer filtering; reading the filter takes no lock).
//! * Inside the host's per-layer filter, sharing it:
//!   `fmt::layer().and_then(spans).with_filter(filter)`. Never install it unfiltered next to
//!   a host layer that has a per-layer filter: `tracing-subscriber` would then enable every
//!   callsite of every crate for it.
//! * With its own per-layer filter, [`filtered_layer`] ([`Options::span_filter`], default
//!   `INFO`+; [`Options::event_filter`], default `WARN`+): works in any stack and never changes
//!   what the host's own layers see, but `tracing-subscriber`'s per-layer filtering costs
//!   ~70 ns per span on its own (a registry lookup on every enter, exit and close).
//!
//! # Bounds
//!
//! Spans tracked at once: [`Options::max_spans`] (default [`DEFAULT_MAX_SPANS`]), a fixed table
//! allocated once; a span that finds no slot is not tracked, and counted. Field bytes per span
//! and per kept event: [`Options::max_field_bytes`] (default [`DEFAULT_MAX_FIELD_BYTES`]), one
//! value at most [`MAX_VALUE_BYTES`]; cut values end in `…` and are counted. Span names with a
//! latency summary: [`Options::max_span_names`] (default [`DEFAULT_MAX_SPAN_NAMES`]); closes of
//! other names are counted. Error groups: [`Options::max_error_groups`] (default
//! [`DEFAULT_MAX_ERROR_GROUPS`]), the least recently seen evicted and counted, each keeping
//! its last [`Options::recent_events`] events (default [`DEFAULT_RECENT_EVENTS`]).

pub(crate) mod callsite;
pub(crate) mod clock;
pub(crate) mod error_groups;
pub(crate) mod fields;
mod handle;
pub(crate) mod histogram;
pub(crate) mod latency;
mod options;
pub(crate) mod shared;
mod spans_layer;
pub(crate) mod table;
pub(crate) mod thread;

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub use fields::MAX_VALUE_BYTES;
pub use handle::SpansHandle;
pub use options::{
    Options, RedactFn, DEFAULT_MAX_ERROR_GROUPS, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_SPANS,
    DEFAULT_MAX_SPAN_NAMES, DEFAULT_RECENT_EVENTS, DEFAULT_SLOWEST,
};
pub use spans_layer::{filtered_layer, layer, SpansFilter, SpansLayer};

/// What a reader answers when the host installed no layer.
pub(crate) const NOT_INSTALLED: &str = "no span layer is installed: create it with `let (spans, handle) = prodbg::spans::layer(Default::default())`, install it behind the host's filter (`registry().with(filter).with(fmt::layer()).with(spans)`), and pass the handle to the builder's .spans(handle)";
