//! What `/debug/spans` shows, and how it is built from the table and the latency shards.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::encode::time::rfc3339;
use crate::layer::callsite::{stat_of, NO_STAT};
use crate::layer::clock;
use crate::layer::fields::{decode, Fields};
use crate::layer::histogram::quantile;
use crate::layer::latency::WINDOW_MINUTES;
use crate::layer::shared::Shared;
use crate::layer::table::{FLAG_ERROR, FLAG_TRUNCATED};
use crate::layer::thread::ThreadRef;

/// Longest parent chain shown per span.
const MAX_PARENTS: usize = 32;

/// A parent span, nearest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ParentRef {
    /// The parent's span id.
    pub(crate) id: u64,
    /// Its name; `None` if the parent is not tracked (filtered out or over the cap).
    pub(crate) name: Option<&'static str>,
}

/// One span open now.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct InFlightSpan {
    /// The span's id (the registry's; reused after the span closes).
    pub(crate) id: u64,
    /// The span's name.
    pub(crate) name: &'static str,
    /// The span's target.
    pub(crate) target: &'static str,
    /// The span's level (`INFO`, …).
    pub(crate) level: &'static str,
    /// `file:line` where the span is created; `None` if unknown.
    pub(crate) callsite: Option<String>,
    /// Time since the span was created, in milliseconds (fractional).
    pub(crate) age_ms: f64,
    /// When it was created; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) started_at: SystemTime,
    /// Field values recorded so far, redacted; at most
    /// [`Options::max_field_bytes`](super::Options::max_field_bytes) in all.
    pub(crate) fields: Fields,
    /// Whether some value was cut or left out for the byte cap.
    pub(crate) fields_truncated: bool,
    /// Parent, grandparent, …: the tracked ancestors, nearest first.
    pub(crate) parents: Vec<ParentRef>,
    /// The thread that entered the span last; `None` if it was never entered.
    pub(crate) thread: Option<ThreadRef>,
    /// Whether some thread is inside the span now (for a future: being polled).
    pub(crate) entered: bool,
    /// Whether an `ERROR` event, an `error` field or `otel.status_code = "ERROR"` marked it.
    pub(crate) error: bool,
    /// The p99 of spans of the same target and name closed in the latency window, in
    /// milliseconds; `None` until [`MIN_CLOSES_FOR_P99`] of them have closed (a connection span
    /// that lives for hours has none).
    pub(crate) name_p99_ms: Option<f64>,
    /// Whether it is open longer than [`OVERDUE_FACTOR`] × its name's p99: old *for its kind*,
    /// whatever its absolute age.
    pub(crate) overdue: bool,
}

/// Closes of a name needed before its p99 marks a span as overdue.
pub(crate) const MIN_CLOSES_FOR_P99: u64 = 20;
/// A span is overdue when open longer than this many times its name's p99.
pub(crate) const OVERDUE_FACTOR: u64 = 2;

/// Which span names a report covers: `?name=` keeps only these, `?hide=` leaves these out
/// (comma-separated, exact names).
#[derive(Debug, Clone, Default)]
pub(crate) struct NameFilter {
    pub(crate) only: Vec<String>,
    pub(crate) hide: Vec<String>,
}

impl NameFilter {
    pub(crate) fn keeps(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|n| n == name))
            && !self.hide.iter().any(|n| n == name)
    }
}

/// Each latency slot's p99 over the window, computed once per report and slot.
struct P99s<'a> {
    shared: &'a Shared,
    now_ns: u64,
    cache: HashMap<u16, Option<u64>>,
}

impl P99s<'_> {
    /// The p99 of closed spans of `meta`'s target and name, in ns.
    fn of(&mut self, meta: &'static tracing::Metadata<'static>) -> Option<u64> {
        self.of_stat(stat_of(self.shared.callsites.get(meta)))
    }

    /// The p99 of latency slot `stat`, in ns; `None` for no slot or too few closes.
    fn of_stat(&mut self, stat: u16) -> Option<u64> {
        let lat = self.shared.latency.as_ref()?;
        if stat == NO_STAT {
            return None;
        }
        let now_ns = self.now_ns;
        *self.cache.entry(stat).or_insert_with(|| {
            let m = lat.merged(stat as usize, now_ns);
            let count: u64 = m.hist.iter().sum();
            (count >= MIN_CLOSES_FOR_P99)
                .then(|| quantile(&m.hist, 0.99, Some(m.max)))
                .flatten()
        })
    }
}

/// The ages of the spans open now, in nanoseconds; copies no field.
pub(crate) fn ages_ns(shared: &Shared) -> Vec<u64> {
    let now = clock::now();
    shared
        .table
        .starts()
        .iter()
        .map(|&s| clock::to_nanos(now.saturating_sub(s)))
        .collect()
}

/// Spans open now that are overdue for their name (see [`InFlightSpan::overdue`]); copies no
/// field and takes no slot lock, so the console can ask every few seconds.
pub(crate) fn overdue_count(shared: &Shared) -> usize {
    let live = shared.table.stats_and_starts();
    let now = clock::now();
    let mut p99s = P99s {
        shared,
        now_ns: clock::to_nanos(now),
        cache: HashMap::new(),
    };
    live.iter()
        .filter(|&&(stat, start)| {
            p99s.of_stat(stat).is_some_and(|p| {
                clock::to_nanos(now.saturating_sub(start)) > p.saturating_mul(OVERDUE_FACTOR)
            })
        })
        .count()
}

/// The in-flight half of `/debug/spans`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct InFlightReport {
    /// When the report was taken; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) taken_at: SystemTime,
    /// Only spans at least this old are listed, in milliseconds.
    pub(crate) min_age_ms: u64,
    /// Spans tracked now, of any age (count).
    pub(crate) tracked: u64,
    /// The cap on tracked spans (count): the table's slots. Spans may already be refused from
    /// about 85 % of it (no free slot near the span's home); every refusal is counted.
    pub(crate) max_spans: usize,
    /// Spans not tracked since start because the cap was reached (count).
    pub(crate) dropped_spans_total: u64,
    /// Field values cut or left out for the byte caps since start (count).
    pub(crate) truncated_fields_total: u64,
    /// The cap on field bytes per span, in bytes.
    pub(crate) max_field_bytes: usize,
    /// The most spans listed (`?limit=`); the oldest are kept.
    pub(crate) limit: usize,
    /// Whether the host's tracing filter lets `INFO` spans through by default now (for a
    /// target without a directive of its own). Spans it keeps out are never created, so
    /// never listed.
    pub(crate) info_spans_enabled: bool,
    /// Set when they are kept out: what to do about it.
    pub(crate) hint: Option<String>,
    /// Spans old enough to be listed but left out by `limit` (count).
    pub(crate) omitted: usize,
    /// The spans, oldest first.
    pub(crate) spans: Vec<InFlightSpan>,
}

/// One slow span of the window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SlowSpan {
    /// The span's id (already closed; the id may be reused).
    pub(crate) id: u64,
    /// How long it was open, in milliseconds (fractional).
    pub(crate) duration_ms: f64,
    /// When it closed; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) ended_at: SystemTime,
    /// Whether it was marked as an error.
    pub(crate) error: bool,
    /// `file:line` where it was created; `None` if unknown.
    pub(crate) callsite: Option<String>,
    /// Its fields, redacted.
    pub(crate) fields: Fields,
    /// The thread that entered it last; `None` if never entered.
    pub(crate) thread: Option<ThreadRef>,
}

/// Latency of one span name of one target over the window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NameLatency {
    /// The target (module path, unless the span names one) the spans are created in.
    pub(crate) target: &'static str,
    /// The span name.
    pub(crate) name: &'static str,
    /// Spans of this name closed in the window (count).
    pub(crate) count: u64,
    /// Of those, how many were marked as errors (count).
    pub(crate) errors: u64,
    /// Median duration, in milliseconds (bucket midpoint, ±11 %).
    pub(crate) p50_ms: Option<f64>,
    /// 90th percentile, in milliseconds.
    pub(crate) p90_ms: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub(crate) p99_ms: Option<f64>,
    /// Longest duration, in milliseconds (exact).
    pub(crate) max_ms: Option<f64>,
    /// The slowest few spans, slowest first, with their fields.
    pub(crate) slowest: Vec<SlowSpan>,
}

/// The latency half of `/debug/spans`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LatencyReport {
    /// When the report was taken; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) taken_at: SystemTime,
    /// Length of the sliding window, in seconds: the current (partial) minute and the
    /// [`WINDOW_MINUTES`]` - 1` whole minutes before it.
    pub(crate) window_s: u64,
    /// Span names with a latency slot (count).
    pub(crate) names_tracked: usize,
    /// The most names given a slot (count); later names are not summarised.
    pub(crate) max_span_names: usize,
    /// Spans closed whose name had no slot, since start (count).
    pub(crate) untracked_name_closes_total: u64,
    /// Per name with closes in the window, highest p99 first.
    pub(crate) names: Vec<NameLatency>,
}

fn callsite_of(meta: &tracing::Metadata<'_>) -> Option<String> {
    Some(format!("{}:{}", meta.file()?, meta.line()?))
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

/// The spans open for at least `min_age_ms`, oldest first, at most `limit` of them (only those
/// listed have their fields decoded).
/// Most spans one in-flight report lists (`?limit=`), and the default.
pub(crate) const MAX_LIMIT: usize = 16_384;
pub(crate) const DEFAULT_LIMIT: usize = 1_000;

pub(crate) fn in_flight(
    shared: &Shared,
    min_age_ms: u64,
    limit: usize,
    names_kept: &NameFilter,
) -> InFlightReport {
    clock::recalibrate();
    let copies = shared.table.snapshot();
    let (now, wall) = (clock::now(), SystemTime::now());
    let mut p99s = P99s {
        shared,
        now_ns: clock::to_nanos(now),
        cache: HashMap::new(),
    };
    let names: HashMap<u64, (&'static str, u64)> = copies
        .iter()
        .map(|c| (c.id, (c.meta.name(), c.parent)))
        .collect();
    let min_age_ns = min_age_ms.saturating_mul(1_000_000);
    let mut old: Vec<_> = copies
        .into_iter()
        .filter(|c| clock::to_nanos(now.saturating_sub(c.start)) >= min_age_ns)
        .filter(|c| names_kept.keeps(c.meta.name()))
        .collect();
    old.sort_by_key(|c| (c.start, c.id));
    let omitted = old.len().saturating_sub(limit);
    old.truncate(limit);
    let spans = old
        .into_iter()
        .map(|c| {
            let age_ns = clock::to_nanos(now.saturating_sub(c.start));
            let mut parents = Vec::new();
            let mut p = c.parent;
            while p != 0 && parents.len() < MAX_PARENTS {
                let known = names.get(&p);
                parents.push(ParentRef {
                    id: p,
                    name: known.map(|k| k.0),
                });
                p = known.map_or(0, |k| k.1);
            }
            let p99 = p99s.of(c.meta);
            InFlightSpan {
                name_p99_ms: p99.map(ms),
                overdue: p99.is_some_and(|p| age_ns > p.saturating_mul(OVERDUE_FACTOR)),
                id: c.id,
                name: c.meta.name(),
                target: c.meta.target(),
                level: c.meta.level().as_str(),
                callsite: callsite_of(c.meta),
                age_ms: ms(age_ns),
                started_at: clock::to_system(c.start, now, wall),
                fields: decode(&c.fields, c.meta.fields(), shared.redact),
                fields_truncated: c.flags & FLAG_TRUNCATED != 0,
                parents,
                thread: (c.last_tid != 0).then(|| ThreadRef::of(c.last_tid)),
                entered: c.entered > 0,
                error: c.flags & FLAG_ERROR != 0,
            }
        })
        .collect();
    InFlightReport {
        taken_at: wall,
        min_age_ms,
        tracked: shared.table.tracked(),
        max_spans: shared.table.size(),
        dropped_spans_total: shared
            .table
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        truncated_fields_total: shared.truncated(),
        max_field_bytes: shared.max_field_bytes,
        limit,
        omitted,
        spans,
        info_spans_enabled: info_enabled(),
        hint: (!info_enabled()).then(quiet_filter_hint),
    }
}

/// Whether the process's subscriber enables `INFO` for a target with no directive of its own:
/// the filter's default level, asked the way `tracing::enabled!` asks it (the global maximum
/// level would not do: prodbg's own `prodbg::audit=info` directive keeps it at `INFO`).
fn info_enabled() -> bool {
    tracing::enabled!(target: "prodbg_filter_probe", tracing::Level::INFO)
}

/// What to do when the filter keeps `INFO` spans from being created.
fn quiet_filter_hint() -> String {
    "the tracing filter's default level is above INFO, so INFO spans (of targets without a directive of their own) are not created and cannot be listed; for the incident, raise it for a while: curl -X PUT --data 'info' -H 'Authorization: Bearer <admin token>' '<this server>/debug/log-level?ttl=15m' (the host's own filter comes back after the ttl)".to_string()
}

pub(crate) fn latency_report(shared: &Shared, names_kept: &NameFilter) -> LatencyReport {
    clock::recalibrate();
    let (now, wall) = (clock::now(), SystemTime::now());
    let now_ns = clock::to_nanos(now);
    let slot_names = shared.callsites.stat_names();
    let mut names = Vec::new();
    if let Some(lat) = &shared.latency {
        for (stat, &(target, name)) in slot_names.iter().enumerate() {
            if !names_kept.keeps(name) {
                continue;
            }
            let m = lat.merged(stat, now_ns);
            if m.count == 0 {
                continue;
            }
            let max = Some(m.max);
            let q = |q| quantile(&m.hist, q, max).map(ms);
            names.push(NameLatency {
                target,
                name,
                count: m.count,
                errors: m.errors,
                p50_ms: q(0.5),
                p90_ms: q(0.9),
                p99_ms: q(0.99),
                max_ms: Some(ms(m.max)),
                slowest: m
                    .slowest
                    .into_iter()
                    .map(|s| SlowSpan {
                        callsite: callsite_of(s.meta),
                        id: s.id,
                        duration_ms: ms(s.ns),
                        ended_at: clock::to_system(s.end, now, wall),
                        error: s.error,
                        fields: decode(&s.fields, s.meta.fields(), shared.redact),
                        thread: (s.tid != 0).then(|| ThreadRef::of(s.tid)),
                    })
                    .collect(),
            });
        }
    }
    names.sort_by(|a, b| {
        b.p99_ms
            .partial_cmp(&a.p99_ms)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.name.cmp(b.name))
            .then(a.target.cmp(b.target))
    });
    LatencyReport {
        taken_at: wall,
        window_s: WINDOW_MINUTES as u64 * 60,
        names_tracked: slot_names.len(),
        max_span_names: shared.max_span_names,
        untracked_name_closes_total: shared
            .untracked_name_closes
            .load(std::sync::atomic::Ordering::Relaxed),
        names,
    }
}

impl fmt::Display for InFlightReport {
    /// Reads like a stack of stuck requests: one block per span, oldest first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} spans open for at least {} ms (tracked {}, cap {}, dropped {}, truncated fields {})",
            self.spans.len(),
            self.min_age_ms,
            self.tracked,
            self.max_spans,
            self.dropped_spans_total,
            self.truncated_fields_total
        )?;
        if let Some(h) = &self.hint {
            writeln!(f, "note: {h}")?;
        }
        for s in &self.spans {
            let thread = match &s.thread {
                Some(t) => format!(
                    "{} on {} (tid {})",
                    if s.entered { "running" } else { "last ran" },
                    t.name.as_deref().unwrap_or("?"),
                    t.tid
                ),
                None => "never entered".to_string(),
            };
            writeln!(
                f,
                "\n{:>10.1} ms  {}{{{}}}  [{}]{}{}",
                s.age_ms,
                s.name,
                s.fields,
                thread,
                if s.error { "  ERROR" } else { "" },
                match (s.overdue, s.name_p99_ms) {
                    (true, Some(p)) => format!("  OVERDUE (p99 of its name {p:.3} ms)"),
                    _ => String::new(),
                }
            )?;
            writeln!(
                f,
                "              at {} {}",
                s.target,
                s.callsite.as_deref().unwrap_or("")
            )?;
            for p in &s.parents {
                writeln!(
                    f,
                    "              in {} (id {})",
                    p.name.unwrap_or("?"),
                    p.id
                )?;
            }
        }
        if self.omitted > 0 {
            writeln!(
                f,
                "\n    … {} younger spans left out (?limit={}; raise it, up to {MAX_LIMIT}, or raise ?min_age_ms=)",
                self.omitted, self.limit
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "latency over the last {} s", self.window_s)?;
        let o = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for n in &self.names {
            writeln!(
                f,
                "{:<40} n={:<8} err={:<6} p50={} p90={} p99={} max={} ms",
                format!("{}::{}", n.target, n.name),
                n.count,
                n.errors,
                o(n.p50_ms),
                o(n.p90_ms),
                o(n.p99_ms),
                o(n.max_ms)
            )?;
        }
        Ok(())
    }
}
