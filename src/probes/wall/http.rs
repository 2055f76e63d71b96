//! The probe's HTTP face: its handlers and its `Probe` impl.

#[allow(unused_imports)]
use super::*;
use crate::probes::spans::labels::MAX_LABEL_VALUE_BYTES as MAX_SPAN_PARAM_BYTES;
/// Length of the bundle's wall profile, at most the bundle's window.
const BUNDLE_SECONDS: u64 = 2;

use profile::{WallError, WallProfile};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::response::Response;

use crate::seam::download::{file_name, profile_response};
use crate::seam::fair::Cap;
use crate::seam::{
    blocking, ready, Action, ApiError, BoxFuture, BundlePart, Card, FieldKind, Figure, Glance,
    Params, Probe, ProbeContext, Route, Shows, Value,
};

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
}

#[derive(Clone)]
struct WallState {
    service: Arc<str>,
    max_seconds: u64,
    cap: Cap,
}

/// Samples for `duration` at `frequency_hz` and returns the profile. Dropping the future (the
/// client hung up) drops the running profile, which stops the sampler thread.
async fn take(
    duration: Duration,
    frequency_hz: u32,
    symbolize: bool,
) -> Result<WallProfile, ApiError> {
    let running = blocking("starting the wall profiler", move || {
        profile::start(duration, frequency_hz)
    })
    .await??;
    tokio::time::sleep(duration).await;
    Ok(blocking("stopping the wall profiler", move || {
        running.stop(symbolize)
    })
    .await??)
}

/// The flamegraph title: service, length, rate, threads and samples.
fn title(service: &str, p: &WallProfile) -> String {
    format!(
        "{service}: wall clock {} s at {} Hz, up to {} threads, {} samples",
        p.duration.as_secs(),
        p.frequency_hz,
        p.max_threads,
        p.samples
    )
}

async fn wall_profile(
    State(st): State<WallState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        q.as_deref(),
        &["seconds", "frequency", "format", "symbolize", "span"],
    )?;
    let max = st.max_seconds;
    let seconds = params.u64_in("seconds", 1..=max, DEFAULT_SECONDS.min(max))?;
    let frequency = params.u64_in(
        "frequency",
        u64::from(MIN_FREQUENCY_HZ)..=u64::from(MAX_FREQUENCY_HZ),
        u64::from(DEFAULT_FREQUENCY_HZ),
    )?;
    let format = params
        .choice("format", &["pprof", "svg", "folded"], "pprof")?
        .to_string();
    let symbolize = params.choice("symbolize", &["true", "false"], "true")? == "true";
    let span = params
        .text("span", MAX_SPAN_PARAM_BYTES)?
        .map(str::to_owned);
    if !symbolize && format != "pprof" {
        return Err(ApiError::bad_parameter(
            "symbolize=false is for format=pprof only (its mappings carry path, offsets and build id for off-host symbolization); svg and folded need names",
        ));
    }
    let _cap = st.cap.take()?;
    let started = SystemTime::now();
    let mut profile = take(Duration::from_secs(seconds), frequency as u32, symbolize).await?;
    if let Some(span) = &span {
        profile.retain_span(span);
    }
    let service = st.service.clone();
    let fmt = format.clone();
    let (profile, body, render_ms) = blocking("rendering the wall profile", move || {
        let t0 = Instant::now();
        let body = match fmt.as_str() {
            "svg" => profile.svg(&title(&service, &profile))?,
            "folded" => profile.folded().into_bytes(),
            _ => profile.pprof_gz()?,
        };
        Ok::<_, WallError>((profile, body, t0.elapsed().as_secs_f64() * 1e3))
    })
    .await??;
    tracing::info!(
        target: "prodbg",
        seconds, frequency, samples = profile.samples, ticks = profile.ticks,
        threads = profile.max_threads, signalled = profile.signalled,
        sampler_cpu_ms = profile.sampler_cpu.as_secs_f64() * 1e3,
        format = %format, render_ms,
        "wall profile taken"
    );
    let name = |ext: &str| file_name(&st.service, "wall", started, ext);
    let mut figures = vec![
        ("x-prodbg-samples", profile.samples.to_string()),
        ("x-prodbg-ticks", profile.ticks.to_string()),
        ("x-prodbg-requested-hz", frequency.to_string()),
        ("x-prodbg-threads", profile.max_threads.to_string()),
        ("x-prodbg-signalled", profile.signalled.to_string()),
        (
            "x-prodbg-sampler-cpu-us",
            profile.sampler_cpu.as_micros().to_string(),
        ),
    ];
    figures.extend(
        profile
            .warnings
            .first()
            .map(|w| ("x-prodbg-warning", w.clone())),
    );
    figures.extend(
        crate::stack::debug_info::missing_note().map(|n| ("x-prodbg-debug-info", n.to_string())),
    );
    Ok(profile_response(&format, name, body, &figures))
}

impl Probe for Wall {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let st = WallState {
            service: self.cx.service_name.clone(),
            max_seconds: self.cx.limits.max_profile_seconds,
            cap: self.cx.fair.cap("wall-clock profiles"),
        };
        vec![WALL.serve(&self.cx.limits, wall_profile, st)]
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
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Vec<u8>, String>>();
        let service = self.cx.service_name.clone();
        let cap = self.cx.fair.cap("wall-clock profiles");
        let pprof = BundlePart::new("wall.pb.gz", async move {
            let result = async {
                let _cap = cap.take().map_err(|b| b.to_string())?;
                let duration = window.min(Duration::from_secs(BUNDLE_SECONDS));
                let profile = take(duration, DEFAULT_FREQUENCY_HZ, true)
                    .await
                    .map_err(|e| e.message)?;
                blocking("rendering the wall profile", move || {
                    let svg = profile
                        .svg(&title(&service, &profile))
                        .map_err(|e| e.to_string());
                    (profile.pprof_gz().map_err(|e| e.to_string()), svg)
                })
                .await
                .map_err(|e| e.message)
            }
            .await;
            match result {
                Ok((pprof, svg)) => {
                    let _ = tx.send(svg);
                    pprof
                }
                Err(e) => {
                    let _ = tx.send(Err(e.clone()));
                    Err(e)
                }
            }
        });
        let svg = BundlePart::new("wall.svg", async move {
            rx.await
                .unwrap_or_else(|_| Err("the wall profile part ended without a profile".into()))
        });
        vec![pprof, svg]
    }
}
