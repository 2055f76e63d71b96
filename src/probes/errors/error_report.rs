//! What `/debug/errors` shows.

use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::encode::time::rfc3339;
use crate::layer::fields::{decode, Fields};
use crate::layer::shared::{event_counts, LogEventCounts, Shared};
use crate::layer::thread::ThreadRef;

/// One recent event of a group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorEvent {
    /// When it happened; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) at: SystemTime,
    /// Its formatted message (redacted, capped); `None` if it had none.
    pub(crate) message: Option<String>,
    /// Its other fields, redacted, each value at most
    /// [`MAX_VALUE_BYTES`](super::fields::MAX_VALUE_BYTES) bytes.
    pub(crate) fields: Fields,
    /// The innermost tracked span the emitting thread was in: `{id, name}`; `None` outside spans.
    pub(crate) span: Option<SpanName>,
    /// The emitting thread.
    pub(crate) thread: ThreadRef,
}

/// A span named by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SpanName {
    /// The span's id (the registry's, reused after the span closes).
    pub(crate) id: u64,
    /// The span's name.
    pub(crate) name: &'static str,
}

/// Events of one callsite.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorGroup {
    /// 16 hex digits, stable across restarts: a hash of level, target, module, file, line and
    /// the callsite's name.
    pub(crate) fingerprint: String,
    /// `ERROR` or `WARN`.
    pub(crate) level: &'static str,
    /// The event's target (module path unless set).
    pub(crate) target: &'static str,
    /// `file:line` of the `error!`/`warn!` call; `None` if the metadata lacks it.
    pub(crate) callsite: Option<String>,
    /// The message of the latest event (redacted, capped).
    pub(crate) message: Option<String>,
    /// Events in the group since it was created (count).
    pub(crate) count: u64,
    /// First event; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) first_seen: SystemTime,
    /// Latest event; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) last_seen: SystemTime,
    /// Events in the last 60 seconds (count; 5-second resolution).
    pub(crate) last_minute: u64,
    /// `last_minute / 60`, in events per second.
    pub(crate) rate_per_s: f64,
    /// The latest few events, oldest first.
    pub(crate) recent: Vec<ErrorEvent>,
}

/// The `/debug/errors` answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorReport {
    /// When the report was taken; RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub(crate) taken_at: SystemTime,
    /// Groups held now (count); also the `prodbg_error_groups` gauge.
    pub(crate) groups_total: usize,
    /// The most groups held at once (count).
    pub(crate) max_groups: usize,
    /// Groups evicted (least recently seen first) to make room, since start (count).
    pub(crate) evicted_total: u64,
    /// `prodbg_log_events_total{level}`.
    pub(crate) events_total: LogEventCounts,
    /// The groups, most recently seen first.
    pub(crate) groups: Vec<ErrorGroup>,
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} error groups (max {}, evicted {})",
            self.groups_total, self.max_groups, self.evicted_total
        )?;
        for g in &self.groups {
            writeln!(
                f,
                "{:5} x{:<6} {:>6.2}/s  last {}  {} {}  {}",
                g.level,
                g.count,
                g.rate_per_s,
                humantime::format_rfc3339_millis(g.last_seen),
                g.target,
                g.callsite.as_deref().unwrap_or("?"),
                g.message.as_deref().unwrap_or(""),
            )?;
        }
        Ok(())
    }
}

pub(crate) fn report(shared: &Shared) -> ErrorReport {
    let taken_at = SystemTime::now();
    let mut groups = Vec::new();
    let (mut groups_total, mut max_groups, mut evicted_total) = (0, 0, 0);
    if let Some(eg) = &shared.errors {
        max_groups = eg.max_groups();
        evicted_total = eg.evicted.load(std::sync::atomic::Ordering::Relaxed);
        let st = eg.lock();
        groups_total = st.groups.len();
        for g in st.groups.values() {
            let meta = g.meta;
            let recent: Vec<ErrorEvent> = g
                .recent
                .iter()
                .map(|r| {
                    let mut fields = decode(&r.fields, meta.fields(), shared.redact);
                    let message = fields
                        .0
                        .iter()
                        .position(|(k, _)| *k == "message")
                        .map(|i| fields.0.remove(i).1);
                    ErrorEvent {
                        at: r.at,
                        message,
                        fields,
                        span: r.span.map(|(id, name)| SpanName { id, name }),
                        thread: ThreadRef::of(r.tid),
                    }
                })
                .collect();
            let last_minute = g.last_minute(taken_at);
            groups.push(ErrorGroup {
                fingerprint: fingerprint(meta),
                level: meta.level().as_str(),
                target: meta.target(),
                callsite: meta
                    .file()
                    .zip(meta.line())
                    .map(|(f, l)| format!("{f}:{l}")),
                message: recent.last().and_then(|e| e.message.clone()),
                count: g.count,
                first_seen: g.first_seen,
                last_seen: g.last_seen,
                last_minute,
                rate_per_s: last_minute as f64 / 60.0,
                recent,
            });
        }
    }
    groups.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(b.count.cmp(&a.count)));
    ErrorReport {
        taken_at,
        groups_total,
        max_groups,
        evicted_total,
        events_total: event_counts(shared),
        groups,
    }
}

/// A stable hash of what identifies a callsite, as 16 hex digits.
fn fingerprint(meta: &tracing::Metadata<'_>) -> String {
    let mut h = 0;
    for part in [
        meta.level().as_str(),
        meta.target(),
        meta.module_path().unwrap_or(""),
        meta.file().unwrap_or(""),
        &meta.line().map_or(String::new(), |l| l.to_string()),
        meta.name(),
    ] {
        h = crate::stack::labels::hash_bytes(h, part.as_bytes());
        h = crate::stack::labels::hash_bytes(h, b"|");
    }
    format!("{h:016x}")
}
