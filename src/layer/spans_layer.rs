//! The one `tracing` layer: in-flight spans, span latency, error groups and profile labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{Filtered, LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::callsite::{Callsites, NO_STAT};
use super::error_groups::{ErrorGroups, Recent};
use super::fields::{Recorder, Special};
use super::handle::SpansHandle;
use super::latency::{Latency, Slow};
use super::options::Options;
use super::shared::{level_index, Shared};
use super::table::{Table, FLAG_ERROR, FLAG_TRUNCATED};
use super::{clock, thread};
use crate::stack::labels::Labels;

/// prodbg's `tracing` layer, unfiltered: made by [`layer`], installed behind the host's global
/// filter or inside its per-layer filter (see the [module docs](crate::spans) for the three
/// ways). Installed unfiltered next to a per-layer-filtered host layer it would enable every
/// callsite of every crate.
///
/// What it does per span: on creation, one lock-free table insert, the field values copied
/// into a capped buffer and the chosen label fields interned; on enter/exit, one table lookup
/// and the thread's label slot written; on close, the duration added to the name's histogram.
/// An `ERROR` event marks the innermost tracked span the emitting thread is in (not its
/// ancestors) as failed.
#[derive(Debug, Clone)]
pub struct SpansLayer {
    shared: Arc<Shared>,
}

/// The per-layer filter of [`filtered_layer`]: [`Options::span_filter`] for spans,
/// [`Options::event_filter`] for events. Callsites it rejects are never enabled on its account.
#[derive(Debug, Clone)]
pub struct SpansFilter {
    spans: Targets,
    events: Targets,
}

impl SpansFilter {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        let t = if meta.is_span() {
            &self.spans
        } else {
            &self.events
        };
        t.would_enable(meta.target(), meta.level())
    }
}

impl<S> Filter<S> for SpansFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let s = Filter::<S>::max_level_hint(&self.spans);
        let e = Filter::<S>::max_level_hint(&self.events);
        s.zip(e).map(|(s, e)| s.max(e))
    }
}

/// The layer with its own per-layer filter ([`Options::span_filter`], default `INFO`+;
/// [`Options::event_filter`], default `WARN`+), and its handle. Works in any stack and never
/// changes what the host's own layers see, but costs more than [`layer`] (see the
/// [module docs](crate::spans)).
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// let (spans, handle) = prodbg::spans::filtered_layer(prodbg::spans::Options::default());
/// tracing_subscriber::registry().with(spans).with(tracing_subscriber::fmt::layer()).init();
/// let admin = prodbg::Admin::builder().spans(handle);
/// # drop(admin);
/// ```
pub fn filtered_layer<S>(opts: Options) -> (Filtered<SpansLayer, SpansFilter, S>, SpansHandle)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = SpansFilter {
        spans: opts.span_filter.clone(),
        events: opts.event_filter.clone(),
    };
    let (layer, handle) = SpansLayer::build(opts, true);
    (layer.with_filter(filter), handle)
}

/// The layer, unfiltered, and its handle: install it beside the host's layers behind its
/// global filter (the recommended way, below), or inside the host's per-layer filter
/// (`fmt::layer().and_then(spans).with_filter(filter)`). [`Options::span_filter`] and
/// [`Options::event_filter`] are not applied: the host's filter decides.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// let (filter, log_control) =
///     prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("info"));
/// let (spans, handle) = prodbg::spans::layer(prodbg::spans::Options::default());
/// tracing_subscriber::registry()
///     .with(filter)
///     .with(tracing_subscriber::fmt::layer())
///     .with(spans)
///     .init();
/// let admin = prodbg::Admin::builder().log_control(log_control).spans(handle);
/// # drop(admin);
/// ```
pub fn layer(opts: Options) -> (SpansLayer, SpansHandle) {
    SpansLayer::build(opts, false)
}

impl SpansLayer {
    fn build(opts: Options, filtered: bool) -> (SpansLayer, SpansHandle) {
        clock::init();
        let max_event = if filtered {
            opts.max_event_level()
        } else {
            LevelFilter::TRACE
        };
        let shared = Arc::new(Shared {
            callsites: Callsites::new(&opts.label_fields, opts.max_span_names),
            table: Table::new(opts.max_spans, opts.in_flight),
            latency: opts
                .latency
                .then(|| Latency::new(opts.max_span_names, opts.slowest)),
            errors: opts
                .errors
                .then(|| ErrorGroups::new(opts.max_error_groups, opts.recent_events)),
            redact: opts.redact,
            max_spans: opts.max_spans,
            max_field_bytes: opts.max_field_bytes,
            max_span_names: opts.max_span_names,
            keep_fields: opts.in_flight || (opts.latency && opts.slowest > 0),
            timing: opts.in_flight || opts.latency,
            in_flight: opts.in_flight,
            truncated: AtomicU64::new(0),
            untracked_name_closes: AtomicU64::new(0),
            levels: [const { AtomicU64::new(0) }; 5],
            max_event: if opts.errors {
                max_event
            } else {
                LevelFilter::OFF
            },
        });
        (
            SpansLayer {
                shared: shared.clone(),
            },
            SpansHandle::new(shared),
        )
    }
}

impl<S: Subscriber> Layer<S> for SpansLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let sh = &*self.shared;
        let meta = attrs.metadata();
        let packed = sh.callsites.get(meta);
        let top = thread::top_id();
        let parent = match attrs.parent() {
            Some(p) => p.into_u64(),
            None if attrs.is_contextual() => top,
            None => 0,
        };
        let start = if sh.timing { clock::now() } else { 0 };
        let (keep, cap) = (sh.keep_fields, sh.max_field_bytes);
        let mut truncated = 0;
        sh.table
            .insert(id.into_u64(), meta, packed, parent, start, |buf| {
                let info = super::callsite::unpack(packed);
                let visit = if keep {
                    !attrs.fields().is_empty()
                } else {
                    info.special.any()
                };
                if !visit {
                    return (Labels::pack(info.name_id, [0, 0]), 0);
                }
                let mut rec = Recorder::new(buf, cap, keep, info.special);
                attrs.record(&mut rec);
                truncated = rec.truncated;
                let flags = if rec.error { FLAG_ERROR } else { 0 }
                    | if rec.truncated > 0 { FLAG_TRUNCATED } else { 0 };
                (Labels::pack(info.name_id, rec.labels), flags)
            });
        sh.count_truncated(truncated);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let sh = &*self.shared;
        let id = id.into_u64();
        let Some((_, slot)) = sh.table.find(id) else {
            return;
        };
        let info = slot.info();
        let (labels, error, truncated) = {
            let mut buf = slot.lock();
            let mut rec = Recorder::new(&mut buf, sh.max_field_bytes, sh.keep_fields, info.special);
            values.record(&mut rec);
            (rec.labels, rec.error, rec.truncated)
        };
        if error {
            slot.set_flag(FLAG_ERROR);
        }
        if truncated > 0 {
            slot.set_flag(FLAG_TRUNCATED);
            sh.count_truncated(truncated);
        }
        if labels != [0, 0] {
            let old = slot.word.load(Ordering::Relaxed);
            let mut ids = [(old >> 16) as u16, (old >> 32) as u16];
            for (o, n) in ids.iter_mut().zip(labels) {
                if n != 0 {
                    *o = n;
                }
            }
            let word = Labels::pack(info.name_id, ids);
            slot.word.store(word, Ordering::Relaxed);
            thread::relabel(id, word);
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        let id = id.into_u64();
        match self.shared.table.find(id) {
            Some((idx, slot)) if self.shared.in_flight => {
                thread::enter(id, idx, |tid| slot.entered(tid));
            }
            Some((idx, slot)) => thread::push(id, idx, slot.word.load(Ordering::Relaxed)),
            None => thread::push(id, thread::NO_SLOT, 0),
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let id = id.into_u64();
        let table = &self.shared.table;
        let popped = thread::pop(id);
        if !self.shared.in_flight {
            // Only the in-flight list shows whether a span is entered.
            return;
        }
        match popped {
            thread::Popped::Slot(idx) => {
                if let Some(s) = table.at(idx, id) {
                    s.exited();
                }
            }
            thread::Popped::Untracked => {}
            thread::Popped::Unknown => {
                if let Some((_, s)) = table.find(id) {
                    s.exited();
                }
            }
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let sh = &*self.shared;
        let id = id.into_u64();
        let (shard, hint) = thread::closing(id);
        let Some(lat) = &sh.latency else {
            sh.table.close(id, hint, |_| {});
            return;
        };
        // The clock first: its latency then overlaps the lookup and the lock.
        let end = clock::now();
        sh.table.close(id, hint, |c| {
            if c.stat == NO_STAT {
                sh.untracked_name_closes.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let ns = clock::to_nanos(end.saturating_sub(c.start));
            let error = c.flags & FLAG_ERROR != 0;
            lat.record(
                shard,
                c.stat as usize,
                clock::to_nanos(end),
                ns,
                error,
                || Slow {
                    id: c.id,
                    ns,
                    end,
                    tid: c.last_tid,
                    error,
                    meta: c.meta,
                    fields: c.fields.to_vec(),
                },
            );
        });
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sh = &*self.shared;
        let Some(groups) = &sh.errors else { return };
        let meta = event.metadata();
        let level = meta.level();
        sh.levels[level_index(level)].fetch_add(1, Ordering::Relaxed);
        if *level > Level::WARN {
            return;
        }
        let here = match event.parent() {
            Some(p) => sh.table.find(p.into_u64()).map(|(_, s)| (p.into_u64(), s)),
            None if event.is_contextual() => {
                thread::top().and_then(|(id, idx)| sh.table.at(idx, id).map(|s| (id, s)))
            }
            None => None,
        };
        if *level == Level::ERROR {
            if let Some((_, s)) = here {
                s.set_flag(FLAG_ERROR);
            }
        }
        let mut fields = Vec::new();
        let mut rec = Recorder::new(&mut fields, sh.max_field_bytes, true, Special::NONE);
        event.record(&mut rec);
        let truncated = rec.truncated;
        sh.count_truncated(truncated);
        groups.record(
            meta,
            Recent {
                at: SystemTime::now(),
                fields,
                span: here.and_then(|(id, s)| s.meta().map(|m| (id, m.name()))),
                tid: thread::tid(),
            },
        );
    }
}
