//! The `/debug/pools` body: each pool's numbers and, for pools acquired through an
//! [`AcquireRecorder`](super::AcquireRecorder), who holds its connections — grouped by acquire
//! site, oldest first, or each connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::acquire::Shared;
use super::holders::Hold;
use super::leaks::age;
use super::naming;
use super::{PoolRegistry, PoolSnapshot};
use crate::layer::clock;

/// The `/debug/pools` body.
#[derive(Debug, Serialize)]
pub(crate) struct PoolsReport {
    /// Every registered pool, sorted by name.
    pub(crate) pools: Vec<PoolReport>,
}

/// One pool in `/debug/pools`.
#[derive(Debug, Serialize)]
pub(crate) struct PoolReport {
    /// The name it was registered under.
    pub(crate) name: String,
    /// Its numbers; `null` where the pool cannot tell.
    #[serde(flatten)]
    pub(crate) snapshot: PoolSnapshot,
    /// `in_use / max_size`, 0.0–1.0; `null` when either is unknown.
    pub(crate) utilisation: Option<f64>,
    /// Every connection in use and callers waiting (or waiting unknown); `null` when unknown.
    pub(crate) saturated: Option<bool>,
    /// Who holds the connections; `null` unless acquires go through the pool's recorder.
    pub(crate) holders: Option<HoldersReport>,
}

/// Who holds one pool's connections.
#[derive(Debug, Serialize)]
pub(crate) struct HoldersReport {
    /// Connections checked out through the recorder now, named or not.
    pub(crate) out: u64,
    /// Of those, connections that found the holder table full (a pool grown past the size it
    /// had at its first acquire): counted, not named.
    pub(crate) untracked: u64,
    /// A hold longer than this (seconds) is a suspected leak; `null`: off.
    pub(crate) leak_threshold_s: Option<f64>,
    /// How long the oldest named hold has been out, in seconds; `null` when none is.
    pub(crate) oldest_s: Option<f64>,
    /// Holds out now for longer than the threshold.
    pub(crate) suspected_leaks: u64,
    /// Holds that crossed the threshold since the recorder was made (a counter).
    pub(crate) leaks_total: u64,
    /// The holds grouped by acquire site (and calling function), oldest first.
    pub(crate) sites: Vec<SiteReport>,
    /// Every hold, oldest first (`?holders=each` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) each: Option<Vec<HoldReport>>,
}

/// The holds of one acquire site.
#[derive(Debug, Serialize)]
pub(crate) struct SiteReport {
    /// The function that called acquire (async bodies without `{{closure}}`); `null` when the
    /// build cannot name it.
    pub(crate) function: Option<String>,
    /// `file:line` of the acquire call.
    pub(crate) site: String,
    /// Connections this site holds now.
    pub(crate) count: u64,
    /// How long its oldest hold has been out, in seconds.
    pub(crate) oldest_s: f64,
    /// Its holds out for longer than the threshold.
    pub(crate) suspected_leaks: u64,
    /// The span the oldest hold was acquired in (prodbg's tracing layer), if any.
    pub(crate) span: Option<&'static str>,
    /// That span's route field, if any.
    pub(crate) route: Option<&'static str>,
    /// The Tokio task of the oldest hold, if it was acquired in one.
    pub(crate) task: Option<u64>,
}

/// One connection out.
#[derive(Debug, Serialize)]
pub(crate) struct HoldReport {
    /// See [`SiteReport::function`].
    pub(crate) function: Option<String>,
    /// `file:line` of the acquire call.
    pub(crate) site: String,
    /// How long it has been out, in seconds.
    pub(crate) held_s: f64,
    /// When it was handed out (RFC 3339, UTC).
    #[serde(serialize_with = "crate::encode::time::rfc3339")]
    pub(crate) since: SystemTime,
    /// Out for longer than the threshold.
    pub(crate) suspected_leak: bool,
    /// The span it was acquired in, if any.
    pub(crate) span: Option<&'static str>,
    /// That span's route field, if any.
    pub(crate) route: Option<&'static str>,
    /// The Tokio task it was acquired in, if any.
    pub(crate) task: Option<u64>,
}

/// The report of every pool; `each` lists every hold too. Names functions: call it off the
/// async runtime's threads.
pub(crate) fn report(registry: &PoolRegistry, each: bool) -> PoolsReport {
    let recorders = registry.recorders();
    let pools = registry
        .snapshot()
        .into_iter()
        .map(|(name, snapshot)| PoolReport {
            utilisation: snapshot.utilisation(),
            saturated: snapshot.saturated(),
            holders: recorders.get(&name).and_then(|s| holders(s, each)),
            name,
            snapshot,
        })
        .collect();
    PoolsReport { pools }
}

/// One pool's hold figures, without names (for metrics).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldFigures {
    /// How long the oldest hold has been out; `None` when none is.
    pub(crate) oldest: Option<Duration>,
    /// Holds out now for longer than the threshold.
    pub(crate) suspected: u64,
    /// Holds that crossed the threshold since the recorder was made.
    pub(crate) leaks_total: u64,
}

/// [`HoldFigures`] of a pool acquired through its recorder.
pub(crate) fn figures(shared: &Shared) -> Option<HoldFigures> {
    let table = shared.holder_table()?;
    let now = clock::now();
    let holds = table.holds();
    Some(HoldFigures {
        oldest: holds.iter().map(|h| age(h, now)).max(),
        suspected: suspected(shared, &holds, now),
        leaks_total: table.leaks_total(),
    })
}

fn suspected(shared: &Shared, holds: &[Hold], now: u64) -> u64 {
    shared.leak_after().map_or(0, |after| {
        holds.iter().filter(|h| age(h, now) >= after).count() as u64
    })
}

fn holders(shared: &Arc<Shared>, each: bool) -> Option<HoldersReport> {
    let table = shared.holder_table()?;
    let now = clock::now();
    let wall_now = SystemTime::now();
    let mut holds = table.holds();
    holds.sort_by_key(|h| h.since);
    let after = shared.leak_after();
    let leak = |h: &Hold| after.is_some_and(|a| age(h, now) >= a);
    let frames = naming::frames_of(&holds.iter().map(|h| h.pc).collect::<Vec<_>>());
    let function: Vec<Option<String>> = frames.iter().map(|f| naming::function(f)).collect();

    // Oldest first, so each group's first hold is its oldest and groups come oldest first.
    let mut groups: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    let mut sites: Vec<SiteReport> = Vec::new();
    for (i, h) in holds.iter().enumerate() {
        let key = (h.site as *const _ as usize, h.pc);
        match groups.get(&key) {
            Some(&g) => {
                sites[g].count += 1;
                sites[g].suspected_leaks += u64::from(leak(h));
            }
            None => {
                groups.insert(key, sites.len());
                let (span, route) = naming::span_and_route(h.labels);
                sites.push(SiteReport {
                    function: function[i].clone(),
                    site: naming::site(h.site),
                    count: 1,
                    oldest_s: age(h, now).as_secs_f64(),
                    suspected_leaks: u64::from(leak(h)),
                    span,
                    route,
                    task: (h.task != 0).then_some(h.task),
                });
            }
        }
    }
    let each = each.then(|| {
        holds
            .iter()
            .zip(&function)
            .map(|(h, function)| {
                let (span, route) = naming::span_and_route(h.labels);
                HoldReport {
                    function: function.clone(),
                    site: naming::site(h.site),
                    held_s: age(h, now).as_secs_f64(),
                    since: clock::to_system(h.since, now, wall_now),
                    suspected_leak: leak(h),
                    span,
                    route,
                    task: (h.task != 0).then_some(h.task),
                }
            })
            .collect()
    });
    let untracked = table.untracked();
    Some(HoldersReport {
        out: holds.len() as u64 + untracked,
        untracked,
        leak_threshold_s: after.map(|a| a.as_secs_f64()),
        oldest_s: holds.first().map(|h| age(h, now).as_secs_f64()),
        suspected_leaks: suspected(shared, &holds, now),
        leaks_total: table.leaks_total(),
        sites,
        each,
    })
}
