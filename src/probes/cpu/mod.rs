//! `GET /debug/pprof/profile`: a CPU profile as gzipped `profile.proto` (the default, like
//! Go), an SVG flamegraph or folded stacks.

use axum::http::Method;

use crate::seam::{Access, GoIndex, ProbeSpec, RouteSpec};
use crate::security::Scope;

/// Highest sampling rate a CPU profile accepts, in Hz.
pub(crate) const MAX_FREQUENCY_HZ: u32 = 1000;
/// Default sampling rate, in Hz: pprof-rs's and the Linux perf tools' usual rate, not a
/// multiple of common timer periods (so it does not sample in lockstep with periodic work).
pub(crate) const DEFAULT_FREQUENCY_HZ: u32 = 99;
/// Default profile length in seconds: Go's.
pub(crate) const DEFAULT_SECONDS: u64 = 30;
/// Most addresses one `POST /debug/pprof/symbol` may ask for (the body is bounded too).
pub(crate) const MAX_SYMBOL_ADDRESSES: usize = 4096;

/// `GET /debug/pprof/profile`.
pub(crate) static PROFILE: RouteSpec = RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/profile",
            access: Access::Scope(Scope::Profile),
            go: Some(GoIndex {
        link: "profile",
        text: "CPU profile. ?seconds=N (default 30) sets the duration; ?format=svg for a flamegraph. Downloads a file for go tool pprof.",
    }),
    summary: |l| {
                let max = l.max_profile_seconds;
                format!(
                "CPU profile: ?seconds=1..{max} ({}) &frequency=1..{MAX_FREQUENCY_HZ} ({DEFAULT_FREQUENCY_HZ}) &format=pprof|svg|folded &span=NAME (only samples taken inside that tracing span) &symbolize=true|false (pprof only: false leaves symbolization to go tool pprof or Parca, by mapping path and build id); or ?since=5m &until=1m: at once, from the flight recorder's history (at most its retention, 10 min by default); gzipped profile.proto by default, like Go",
                DEFAULT_SECONDS.min(max)
            )
            },
        };

/// `GET /debug/pprof/symbol`.
pub(crate) static SYMBOL: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/symbol",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        "Go's symbol protocol: num_symbols: 1 (go tool pprof symbolizes remotely through POST)"
            .into()
    },
};

/// `POST /debug/pprof/symbol`.
pub(crate) static SYMBOL_POST: RouteSpec = RouteSpec {
    method: Method::POST,
    path: "/debug/pprof/symbol",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        format!("Go's symbol protocol: body 0x…+0x… (at most {MAX_SYMBOL_ADDRESSES} addresses) → one `0x… function` line per address of this process with a name")
    },
};

/// The CPU probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "cpu",
    feature: Some("cpu"),
    routes: &[&PROFILE, &SYMBOL, &SYMBOL_POST],
    bundle_files: &["cpu.pb.gz", "cpu.svg", "cpu-recorded.pb.gz"],
};

mod flight;
#[cfg(feature = "cpu")]
mod history;
#[cfg(feature = "cpu")]
mod http;
#[cfg(feature = "cpu")]
mod profile;
#[cfg(feature = "cpu")]
mod sampler;
#[cfg(all(test, feature = "cpu"))]
mod tests;
pub use flight::FlightRecorder;
pub(crate) use flight::SLICE;
#[cfg(feature = "cpu")]
pub(crate) use http::Cpu;
