//! The timeline's sampler: a task on the admin server's runtime that, once a second, asks every
//! probe for its vital signs and feeds them to the timeline; it ends when the server shuts down.
//!
//! One tick: each probe's [`Probe::vitals`](crate::seam::Probe::vitals) (a clock read for CPU,
//! `/proc/self/status` for RSS, a few jemalloc counters with feature `heap`, atomics of each
//! registered runtime and pool, one scan of the span table, two event counters), the server's
//! own answered-requests counter, then one lock of the timeline to store the points — a few
//! dozen small allocations (the names built at run time) and well under a millisecond.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::state::ServerState;
use crate::recorder::timeline::Reading;
use crate::seam::{Unit, Vitals};

/// Time between two samples.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Samples every probe into `state`'s timeline each [`TICK`] until `shutdown` is true (or its
/// sender is gone).
pub(crate) async fn record_vitals(state: Arc<ServerState>, shutdown: watch::Receiver<bool>) {
    let mut vitals = Vitals::default();
    every_tick(shutdown, move || sample(&state, &mut vitals)).await;
}

/// Calls `tick` at once and then every [`TICK`] (a late tick is skipped, never bunched) until
/// `shutdown` is true or its sender is dropped.
async fn every_tick(mut shutdown: watch::Receiver<bool>, mut tick: impl FnMut()) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = interval.tick() => tick(),
        }
    }
}

/// One tick: every probe's readings and the admin requests answered, into the timeline. A
/// probe whose `vitals` panics loses its readings for this tick, never the sampler.
fn sample(state: &ServerState, vitals: &mut Vitals) {
    vitals.clear();
    for probe in &state.probes {
        let probe = AssertUnwindSafe(probe);
        let out = AssertUnwindSafe(&mut *vitals);
        let _ = catch_unwind(move || {
            let (AssertUnwindSafe(probe), AssertUnwindSafe(out)) = (probe, out);
            probe.vitals(out)
        });
    }
    vitals.counter(
        "admin_requests",
        Unit::PerSecond,
        state.red.answered() as f64,
    );
    let now_ms = unix_ms(SystemTime::now());
    let readings: Vec<Reading<'_>> = vitals
        .readings()
        .iter()
        .map(|r| Reading {
            name: &r.name,
            unit: r.unit.as_str(),
            counter: r.counter,
            value: r.value,
        })
        .collect();
    state.timeline().tick(now_ms, readings.iter().copied());
    if let Some(watch) = &state.watch {
        let _ = catch_unwind(AssertUnwindSafe(|| watch(&readings)));
    }
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn ticks_until_shutdown_and_leaves_no_task() {
        let ticks = Arc::new(AtomicU64::new(0));
        let (tx, rx) = watch::channel(false);
        let counted = ticks.clone();
        let task = tokio::spawn(every_tick(rx, move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        // The first tick is at once, the second a second later: wait for both, within a bound.
        for _ in 0..200 {
            if ticks.load(Ordering::Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ticks.load(Ordering::Relaxed) >= 2);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the sampler stops on shutdown")
            .unwrap();
        // The task is gone: nothing holds its closure (and its share of the counter) any more.
        assert_eq!(Arc::strong_count(&ticks), 1);
    }

    #[tokio::test]
    async fn stops_when_the_server_is_dropped() {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(every_tick(rx, || {}));
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the sampler stops when the shutdown sender is gone")
            .unwrap();
    }
}
