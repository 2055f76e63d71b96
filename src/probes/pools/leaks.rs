//! Suspected leaks and acquire timeouts, told as `tracing` events on target `prodbg::pools`
//! (so they reach `/debug/errors` and the host's own logs): one WARN when a connection has been
//! held past its pool's threshold, one INFO when that connection comes back, and one WARN
//! naming the top holders after acquire timeouts. A scan once a second does the first and the
//! last, so an acquire never waits for a symbolizer.

use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::acquire::Shared;
use super::holders::Hold;
use super::naming;
use crate::layer::clock;

/// Least time between two timeout warnings of one pool (the timeouts in between are counted
/// in the next).
pub(crate) const TIMEOUT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How many acquire sites a timeout warning lists.
const TOP_SITES: usize = 5;

/// How long `hold` has been out at clock reading `now`.
pub(crate) fn age(hold: &Hold, now: u64) -> Duration {
    Duration::from_nanos(clock::to_nanos(now.saturating_sub(hold.since)))
}

/// A connection reported as a suspected leak came back (called on its release).
pub(super) fn returned(shared: &Shared, site: &'static Location<'static>, since: u64) {
    let held = Duration::from_nanos(clock::to_nanos(clock::now().saturating_sub(since)));
    tracing::info!(
        target: "prodbg::pools",
        pool = %shared.name,
        site = %naming::site(site),
        held_s = held.as_secs_f64(),
        "a connection reported as a suspected leak was returned"
    );
}

/// One scan of a pool: warns once for each hold past the leak threshold, and once for the
/// timeouts since the last timeout warning (at most every [`TIMEOUT_WARNING_EVERY`]).
pub(super) fn scan(shared: &Shared) {
    let Some(table) = shared.holder_table() else {
        return;
    };
    let now = clock::now();
    if let Some(after) = shared.leak_after() {
        let over: Vec<Hold> = table
            .holds()
            .into_iter()
            .filter(|h| !h.flagged && age(h, now) >= after)
            .collect();
        let frames = naming::frames_of(&over.iter().map(|h| h.pc).collect::<Vec<_>>());
        for (hold, frames) in over.iter().zip(frames) {
            if !table.flag(hold) {
                continue;
            }
            let (span, route) = naming::span_and_route(hold.labels);
            tracing::warn!(
                target: "prodbg::pools",
                pool = %shared.name,
                function = naming::function(&frames).as_deref().unwrap_or("unknown"),
                site = %naming::site(hold.site),
                span = span.unwrap_or(""),
                route = route.unwrap_or(""),
                task = hold.task,
                held_s = age(hold, now).as_secs_f64(),
                threshold_s = after.as_secs_f64(),
                "connection held past the leak threshold: suspected leak"
            );
        }
    }
    let last = shared.last_timeout_warning.load(Relaxed);
    let spaced = last == 0
        || Duration::from_nanos(clock::to_nanos(now.saturating_sub(last))) >= TIMEOUT_WARNING_EVERY;
    if spaced {
        let timeouts = shared.unreported_timeouts.swap(0, Relaxed);
        if timeouts > 0 {
            shared.last_timeout_warning.store(now.max(1), Relaxed);
            let holds = table.holds();
            tracing::warn!(
                target: "prodbg::pools",
                pool = %shared.name,
                timeouts,
                held = holds.len(),
                top_holders = %top_holders(&holds, now),
                "acquire timed out: the pool's connections are held by these sites"
            );
        }
    }
}

/// The sites holding the most connections, e.g.
/// `app::login (src/auth.rs:42) 4 held, oldest 12.0 s; …`.
pub(crate) fn top_holders(holds: &[Hold], now: u64) -> String {
    let mut groups: Vec<(&Hold, usize, Duration)> = Vec::new();
    for h in holds {
        let a = age(h, now);
        match groups
            .iter_mut()
            .find(|(g, _, _)| std::ptr::eq(g.site, h.site) && g.pc == h.pc)
        {
            Some((_, n, oldest)) => {
                *n += 1;
                *oldest = (*oldest).max(a);
            }
            None => groups.push((h, 1, a)),
        }
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)));
    groups.truncate(TOP_SITES);
    let frames = naming::frames_of(&groups.iter().map(|(h, _, _)| h.pc).collect::<Vec<_>>());
    let parts: Vec<String> = groups
        .iter()
        .zip(frames)
        .map(|((h, n, oldest), frames)| {
            format!(
                "{} ({}) {n} held, oldest {:.1} s",
                naming::function(&frames).as_deref().unwrap_or("unknown"),
                naming::site(h.site),
                oldest.as_secs_f64()
            )
        })
        .collect();
    if parts.is_empty() {
        "none tracked (acquire through AcquireRecorder::acquire to name holders)".into()
    } else {
        parts.join("; ")
    }
}
