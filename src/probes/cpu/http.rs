//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

use profile::{CpuError, CpuProfileOptions};

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flight::SLICE;
use history::Recorder;

use axum::extract::RawQuery;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::seam::profile::{recorded_bundle, timed, Sampler, Timed};
use crate::seam::{
    blocking, ready, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, Route, Value,
};
use crate::stack::modules::ModuleSet;
use crate::stack::profile::Profile;
use crate::stack::{offline, symbolize};

impl From<CpuError> for ApiError {
    fn from(e: CpuError) -> ApiError {
        match e {
            CpuError::Busy { remaining } => ApiError::conflict(format!(
                "a CPU profile is already running (one at a time per process); it ends in {} s — retry after that",
                remaining.as_secs().max(1)
            )),
            CpuError::Start(m) => ApiError::internal(format!("cannot start the CPU profiler: {m}")),
            CpuError::HostSigprof(m) => ApiError::conflict(m),
            CpuError::Report(m) => ApiError::internal(format!("cannot build the CPU profile: {m}")),
        }
    }
}

/// CPU profiles of the whole process.
#[derive(Debug)]
pub(crate) struct Cpu {
    cx: ProbeContext,
    /// The process's flight recorder, held while this probe lives; `None` when off.
    recorder: Option<Arc<Recorder>>,
}

impl Cpu {
    /// The CPU probe, with the flight recorder `flight` asks for.
    pub(crate) fn new(cx: &ProbeContext, flight: FlightRecorder) -> Cpu {
        Cpu {
            cx: cx.clone(),
            recorder: Recorder::shared(flight),
        }
    }
}

/// The name of its expensive-work cap.
const CAP: &str = "CPU profiles";

/// The CPU profiler as the profile endpoint's [`Sampler`].
struct CpuSampler;

impl Sampler for CpuSampler {
    type Running = profile::RunningProfile;
    const KIND: &'static str = "cpu";
    const FREQUENCY: RangeInclusive<u32> = 1..=MAX_FREQUENCY_HZ;
    const DEFAULT_FREQUENCY: u32 = DEFAULT_FREQUENCY_HZ;
    const DEFAULT_SECONDS: u64 = DEFAULT_SECONDS;

    fn start(duration: Duration, frequency_hz: u32) -> Result<Self::Running, ApiError> {
        Ok(profile::start(CpuProfileOptions {
            duration,
            frequency_hz,
        })?)
    }

    fn running() -> bool {
        profile::running()
    }

    fn recorded(from: SystemTime, to: SystemTime, symbolize: bool) -> Result<Profile, ApiError> {
        let recorder = Recorder::current().ok_or_else(|| {
            ApiError::bad_parameter(
                "the CPU flight recorder is off, so there is no history for since=: turn it on with AdminBuilder::flight_recorder(FlightRecorder::default()) or PRODBG_FLIGHT_RECORDER=on",
            )
        })?;
        let window = recorder.window(from, to).map_err(ApiError::bad_parameter)?;
        let modules = ModuleSet::snapshot()
            .map_err(|e| ApiError::internal(format!("reading the module list: {e}")))?;
        let p = profile::from_history(window, &modules, symbolize);
        drop(modules);
        symbolize::release_freed_memory();
        Ok(p)
    }

    fn retention() -> Option<Duration> {
        Recorder::current().map(|r| r.options().retention)
    }

    fn stop(running: Self::Running, symbolize: bool) -> Result<Profile, ApiError> {
        Ok(running.stop_with(symbolize)?)
    }
}

/// `GET /debug/pprof/symbol`: tells `go tool pprof` that symbols are served here.
async fn symbol_count(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        offline::SYMBOL_COUNT_LINE,
    )
        .into_response())
}

/// `POST /debug/pprof/symbol`: the names of the addresses in the body (Go's protocol).
async fn symbol_lookup(
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::bad_parameter("the body must be text: addresses in hex (0x…) joined by +, as go tool pprof sends them")
    })?;
    let addrs = offline::parse_symbol_request(text);
    if addrs.len() > MAX_SYMBOL_ADDRESSES {
        return Err(ApiError::bad_parameter(format!(
            "{} addresses asked for; at most {MAX_SYMBOL_ADDRESSES} per request",
            addrs.len()
        )));
    }
    let answer = blocking("symbolizing addresses", move || {
        let modules = ModuleSet::snapshot()
            .map_err(|e| ApiError::internal(format!("reading the module list: {e}")))?;
        let names = offline::function_names(&modules, &addrs);
        drop(modules);
        symbolize::release_freed_memory();
        Ok::<_, ApiError>(offline::symbol_response(&addrs, &names))
    })
    .await??;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        answer,
    )
        .into_response())
}

impl Probe for Cpu {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let st = Timed::new(&self.cx, CAP);
        vec![
            PROFILE.serve(&self.cx.limits, timed::<CpuSampler>, st),
            SYMBOL.serve(&self.cx.limits, symbol_count, ()),
            SYMBOL_POST.serve(&self.cx.limits, symbol_lookup, ()),
        ]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let flight = match &self.recorder {
            Some(r) => {
                let (slices, stacks, bytes) = r.footprint();
                let o = r.options();
                Figure::new(
                    "flight",
                    Card::PROCESS,
                    "CPU flight recorder",
                    Value::Text(format!(
                        "on, {} Hz: {} s of {} s kept",
                        o.frequency_hz,
                        slices as u64 * SLICE.as_secs(),
                        o.retention.as_secs()
                    )),
                )
                .note(format!(
                    "{stacks} stacks, {:.1} MiB",
                    bytes as f64 / 1048576.0
                ))
                .link("pprof/profile?since=5m&format=svg", "last 5 min")
            }
            None => Figure::new(
                "flight",
                Card::PROCESS,
                "CPU flight recorder",
                Value::Text("off".into()),
            ),
        };
        ready(
            Timed::new(&self.cx, CAP)
                .glance::<CpuSampler>(&PROFILE, "CPU profiler", ("cpu-flame", "CPU flamegraph"))
                .figure(flight),
        )
    }

    /// A fresh profile over the window, and the flight recorder's whole history.
    fn bundle(&self, window: Duration) -> Vec<BundlePart> {
        vec![
            Timed::new(&self.cx, CAP).bundle::<CpuSampler>(window),
            recorded_bundle::<CpuSampler>(),
        ]
    }
}
