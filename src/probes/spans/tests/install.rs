//! The ways to install the layer: its own per-layer filter, inside the host's per-layer
//! filter, and unfiltered under a global filter.

use super::Read as _;
use crate::layer::{filtered_layer, layer, Options};
use tracing::Dispatch;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::prelude::*;

struct Host;
impl<S: tracing::Subscriber> Layer<S> for Host {}

#[test]
fn inside_the_host_filter_tracks_what_the_host_logs() {
    let (layer, h) = layer(Options::default());
    let host_filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("db", LevelFilter::DEBUG);
    let d = Dispatch::new(
        tracing_subscriber::registry().with(Host.and_then(layer).with_filter(host_filter)),
    );
    super::with(&d, || {
        let _a = tracing::info_span!("request", route = "/r").entered();
        let _b = tracing::debug_span!(target: "db", "query").entered();
        let _c = tracing::debug_span!(target: "http", "noise").entered();
        tracing::error!("boom");
        let names: Vec<_> = h.in_flight(0).spans.iter().map(|s| s.name).collect();
        assert_eq!(names, ["request", "query"]);
        assert_eq!(h.in_flight(0).spans[1].parents[0].name, Some("request"));
    });
    let errors = h.shared().errors.as_ref().expect("error groups kept");
    assert_eq!(errors.len(), 1, "the host's filter lets the ERROR through");
}

#[test]
fn own_filter_does_not_widen_or_narrow_the_host() {
    // The host logs DEBUG for everything; prodbg tracks INFO spans only.
    let (layer, h) = filtered_layer(Options::default());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let d = Dispatch::new(
        tracing_subscriber::registry()
            .with(layer)
            .with(Count(seen.clone()).with_filter(LevelFilter::DEBUG)),
    );
    super::with(&d, || {
        let _a = tracing::info_span!("a").entered();
        let _b = tracing::debug_span!("b").entered();
        let _c = tracing::trace_span!("c").entered();
        assert_eq!(
            h.in_flight(0).spans.len(),
            1,
            "only the INFO span is tracked"
        );
    });
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the host sees its INFO and DEBUG spans, and no TRACE span is created for prodbg"
    );
}

#[test]
fn unfiltered_under_a_global_filter() {
    let (layer, h) = layer(Options::default());
    let d = Dispatch::new(
        tracing_subscriber::registry()
            .with(LevelFilter::DEBUG)
            .with(layer)
            .with(Host),
    );
    super::with(&d, || {
        let _a = tracing::debug_span!("a").entered();
        let _b = tracing::trace_span!("b").entered();
        tracing::info!("counted");
        assert_eq!(h.in_flight(0).spans.len(), 1);
    });
    let c = crate::layer::shared::event_counts(h.shared());
    assert_eq!(c.info, Some(1));
}
