//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

/// Length of the bundle's wall profile, at most the bundle's window.
const BUNDLE_SECONDS: u64 = 2;

use profile::WallError;

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::seam::profile::{timed, timed_bundle, Outlet, Sampler, Timed};
use crate::seam::{
    ready, Action, ApiError, BoxFuture, BundlePart, Card, FieldKind, Figure, Glance, Probe,
    ProbeContext, Route, Shows, Value,
};
use crate::stack::profile::Profile;

impl From<WallError> for ApiError {
    fn from(e: WallError) -> ApiError {
        match e {
            WallError::Busy { .. } => ApiError::conflict(e.to_string()),
            WallError::Start(_) | WallError::Report(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// Wall-clock profiles of the whole process.
#[derive(Debug)]
pub(crate) struct Wall {
    cx: ProbeContext,
}

impl Wall {
    /// The wall-clock probe.
    pub(crate) fn new(cx: &ProbeContext) -> Wall {
        Wall { cx: cx.clone() }
    }

    fn outlet(&self) -> Outlet {
        Outlet {
            service: self.cx.service_name.clone(),
            results: self.cx.results.clone(),
        }
    }
}

/// The name of its expensive-work cap.
const CAP: &str = "wall-clock profiles";

/// The wall-clock profiler as the profile endpoint's [`Sampler`].
struct WallSampler;

impl Sampler for WallSampler {
    type Running = profile::RunningWall;
    const KIND: &'static str = "wall";
    const FREQUENCY: RangeInclusive<u32> = MIN_FREQUENCY_HZ..=MAX_FREQUENCY_HZ;
    const DEFAULT_FREQUENCY: u32 = DEFAULT_FREQUENCY_HZ;
    const DEFAULT_SECONDS: u64 = DEFAULT_SECONDS;

    fn start(duration: Duration, frequency_hz: u32) -> Result<Self::Running, ApiError> {
        Ok(profile::start(duration, frequency_hz)?)
    }

    fn stop(running: Self::Running, symbolize: bool) -> Result<Profile, ApiError> {
        Ok(running.stop(symbolize)?)
    }
}

impl Probe for Wall {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let st = Timed {
            outlet: self.outlet(),
            cap: self.cx.fair.cap(CAP),
            max_seconds: self.cx.limits.max_profile_seconds,
        };
        vec![WALL.serve(&self.cx.limits, timed::<WallSampler>, st)]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let state = if profile::running() {
            "running"
        } else {
            "idle"
        };
        ready(
            Glance::default()
                .figure(Figure::new(
                    "wall",
                    Card::PROCESS,
                    "wall-clock profiler",
                    Value::Text(state.into()),
                ))
                .action(
                    Action::new(
                        "wall",
                        "wall-flame",
                        "Wall-clock flamegraph",
                        &WALL,
                        Shows::Flame("wall"),
                    )
                    .fixed(&[("format", "svg")])
                    .field(
                        "seconds",
                        "for",
                        FieldKind::Seconds {
                            default: 10,
                            max: self.cx.limits.max_profile_seconds,
                        },
                    ),
                ),
        )
    }

    /// A short wall profile ([`BUNDLE_SECONDS`], at most the window) as pprof and SVG.
    fn bundle(&self, window: Duration) -> Vec<BundlePart> {
        vec![timed_bundle::<WallSampler>(
            &self.outlet(),
            self.cx.fair.cap(CAP),
            window.min(Duration::from_secs(BUNDLE_SECONDS)),
        )]
    }
}
