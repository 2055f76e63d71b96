//! `GET /debug/pprof/wall`: a wall-clock profile of every thread, running or not, each sample
//! labelled with the thread's state — "requests hang, CPU is low: where are my threads
//! waiting?" as one flamegraph. Gzipped `profile.proto` by default, or an SVG / folded stacks
//! rooted at the states (`[futex]`, `[io]`, `[running]`…). How it samples: [`profile`].

use axum::http::Method;

use crate::seam::{Access, GoIndex, ProbeSpec, RouteSpec};
use crate::security::Scope;

/// Lowest sampling rate, in Hz.
pub(crate) const MIN_FREQUENCY_HZ: u32 = 1;
/// Highest sampling rate, in Hz: every thread is visited at every tick.
pub(crate) const MAX_FREQUENCY_HZ: u32 = 100;
/// Default sampling rate, in Hz: async-profiler's wall-clock default (50 ms), as a prime so
/// ticks do not fall in lockstep with periodic work (10 ms, 50 ms, 1 s timers). The sampler's
/// cost grows with the thread count (a few `/proc` reads per thread per tick), so the default
/// stays low; `?frequency=` goes up to 100 for a short look.
pub(crate) const DEFAULT_FREQUENCY_HZ: u32 = 19;
/// Default profile length in seconds (as the CPU profile's).
pub(crate) const DEFAULT_SECONDS: u64 = 30;

/// `GET /debug/pprof/wall`.
pub(crate) static WALL: RouteSpec = RouteSpec {
        method: Method::GET,
        path: "/debug/pprof/wall",
        access: Access::Scope(Scope::Profile),
        go: Some(GoIndex {
        link: "wall",
        text: "Wall-clock profile of every thread, running or not, each sample labelled with the thread's state (running, runnable, futex, io, sleeping, stopped). ?seconds=N (default 30); ?format=svg for a flamegraph rooted at the states.",
    }),
    summary: |l| {
            let max = l.max_profile_seconds;
            format!(
                "wall-clock profile of every thread, running or not, each sample labelled with the thread's state (running, runnable, futex, io, sleeping, stopped, other): ?seconds=1..{max} ({}) &frequency={MIN_FREQUENCY_HZ}..{MAX_FREQUENCY_HZ} ({DEFAULT_FREQUENCY_HZ}) &format=pprof|svg|folded &span=NAME (only samples taken inside that tracing span) &symbolize=true|false (pprof only); or ?since=5m &until=1m: at once, from the flight recorder's 1 Hz history (at most its retention); the SVG's root frames are the states",
                DEFAULT_SECONDS.min(max)
            )
        },
    };

/// The wall-clock probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "wall",
    feature: Some("wall"),
    routes: &[&WALL],
    bundle_files: &["wall.pb.gz", "wall.svg", "wall-recorded.pb.gz"],
};

#[cfg(feature = "wall")]
mod history;
#[cfg(feature = "wall")]
mod http;
#[cfg(feature = "wall")]
mod profile;
#[cfg(feature = "wall")]
mod sampler;
#[cfg(all(test, feature = "wall"))]
mod tests;
#[cfg(feature = "wall")]
pub(crate) use http::Wall;
