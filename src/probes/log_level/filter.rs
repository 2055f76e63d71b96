//! The host's `EnvFilter` behind an atomically swapped pointer: a run-time change replaces the
//! whole filter at once, and the hot path (every `enabled`, `new_span`, `enter`, `exit`,
//! `close` and event) reads the pointer without taking a lock.
//!
//! `tracing_subscriber::reload` takes an `RwLock` read on each of those callbacks; on a
//! span-heavy service with 16 threads that shared lock word alone cost several per cent of
//! throughput (`benches/service_overhead.rs`). Here a read is one `ArcSwap::load`: a
//! thread-local debt slot, no write to a line other threads share.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::EnvFilter;

/// The host's [`EnvFilter`], made swappable by [`reloadable`](super::reloadable).
///
/// Install it as a global filter, in front of the host's layers
/// (`registry().with(filter).with(fmt::layer()).with(spans)`), or as a per-layer filter
/// (`layer.with_filter(filter)`): it is both a [`Layer`] and a [`Filter`]. Dropping it makes
/// the matching [`LogControl`](super::LogControl) answer that the filter can no longer change.
pub struct ReloadableFilter {
    current: Arc<ArcSwap<EnvFilter>>,
}

impl std::fmt::Debug for ReloadableFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableFilter")
            .field("filter", &self.current.load().to_string())
            .finish()
    }
}

/// The control's end: swaps the filter while a [`ReloadableFilter`] is alive.
pub(super) struct Swapper {
    current: Weak<ArcSwap<EnvFilter>>,
}

impl ReloadableFilter {
    /// Wraps `filter`; the [`Swapper`] changes it later.
    pub(super) fn new(filter: EnvFilter) -> (ReloadableFilter, Swapper) {
        let current = Arc::new(ArcSwap::from_pointee(filter));
        let swapper = Swapper {
            current: Arc::downgrade(&current),
        };
        (ReloadableFilter { current }, swapper)
    }
}

impl Swapper {
    /// Puts `new` in force and returns the filter it replaced; `None` when the subscriber that
    /// held the filter is gone. Every callsite's cached interest is rebuilt, as `reload` does,
    /// so callsites the old filter disabled are asked again.
    pub(super) fn swap(&self, new: Arc<EnvFilter>) -> Option<Arc<EnvFilter>> {
        let current = self.current.upgrade()?;
        let old = current.swap(new);
        drop(current);
        tracing::callsite::rebuild_interest_cache();
        Some(old)
    }
}

impl<S: Subscriber> Layer<S> for ReloadableFilter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&**self.current.load(), metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&**self.current.load(), metadata, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::event_enabled(&**self.current.load(), event, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_new_span(&**self.current.load(), attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        Layer::<S>::on_record(&**self.current.load(), id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_enter(&**self.current.load(), id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_exit(&**self.current.load(), id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_close(&**self.current.load(), id, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&**self.current.load())
    }
}

impl<S> Filter<S> for ReloadableFilter {
    fn enabled(&self, meta: &Metadata<'_>, ctx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&**self.current.load(), meta, ctx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        Filter::<S>::callsite_enabled(&**self.current.load(), meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&**self.current.load())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        Filter::<S>::on_new_span(&**self.current.load(), attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        Filter::<S>::on_record(&**self.current.load(), id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        Filter::<S>::on_enter(&**self.current.load(), id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        Filter::<S>::on_exit(&**self.current.load(), id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        Filter::<S>::on_close(&**self.current.load(), id, ctx)
    }
}
