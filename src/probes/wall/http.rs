//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

/// Length of the bundle's wall profile, at most the bundle's window.
const BUNDLE_SECONDS: u64 = 2;

use profile::WallError;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::probes::cpu::FlightRecorder;
use history::WallRecorder;

use crate::seam::profile::{recorded_bundle, timed, Sampler, Timed};
use crate::seam::{ready, ApiError, BoxFuture, BundlePart, Glance, Probe, ProbeContext, Route};
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
    /// The process's wall-clock flight recorder, held (kept running) while this probe lives;
    /// `None` when off.
    _recorder: Option<Arc<WallRecorder>>,
}

impl Wall {
    /// The wall-clock probe, with the flight recorder `flight` asks for.
    pub(crate) fn new(cx: &ProbeContext, flight: FlightRecorder) -> Wall {
        Wall {
            cx: cx.clone(),
            _recorder: WallRecorder::shared(flight),
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

    fn running() -> bool {
        profile::running()
    }

    fn recorded(from: SystemTime, to: SystemTime, symbolize: bool) -> Result<Profile, ApiError> {
        let recorder = WallRecorder::current().ok_or_else(|| {
            ApiError::bad_parameter(
                "the flight recorder is off, so there is no wall-clock history for since=: turn it on with AdminBuilder::flight_recorder(FlightRecorder::default()) or PRODBG_FLIGHT_RECORDER=on",
            )
        })?;
        let (collected, start, end) = recorder.window(from, to).map_err(ApiError::bad_parameter)?;
        Ok(profile::from_history(
            collected,
            (start, end),
            history::RATE_HZ,
            symbolize,
        )?)
    }

    fn retention() -> Option<Duration> {
        WallRecorder::current().map(|r| r.retention())
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
        let st = Timed::new(&self.cx, CAP);
        vec![WALL.serve(&self.cx.limits, timed::<WallSampler>, st)]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        ready(Timed::new(&self.cx, CAP).glance::<WallSampler>(
            &WALL,
            "wall-clock profiler",
            ("wall-flame", "Wall-clock flamegraph"),
        ))
    }

    /// A short wall profile ([`BUNDLE_SECONDS`], at most the window) as pprof and SVG.
    fn bundle(&self, window: Duration) -> Vec<BundlePart> {
        let duration = window.min(Duration::from_secs(BUNDLE_SECONDS));
        vec![
            Timed::new(&self.cx, CAP).bundle::<WallSampler>(duration),
            recorded_bundle::<WallSampler>(),
        ]
    }
}
