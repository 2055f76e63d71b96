//! The one profile endpoint: what every stack profile route shares — its `format`,
//! `symbolize` and `span` parameters, its answer (content type, file name, the SVG's CSP, the
//! `x-prodbg-*` figures, the console's kept copy) and its bundle files — and the timed
//! samplers' whole handler. A profiler is a producer of [`Profile`]s plus a route declaration.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::download::{file_name, profile_response};
use super::fair::Cap;
use super::{
    blocking, Action, ApiError, BundlePart, Caller, Card, FieldKind, Figure, Glance, Params,
    ProbeContext, Results, RouteSpec, Shows, StoredResult, Value,
};
use crate::stack::labels::MAX_LABEL_VALUE_BYTES;
use crate::stack::profile::Profile;

/// The answer's encoding (`?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Gzipped `profile.proto` (the default, as in Go).
    Pprof,
    /// An inferno flamegraph.
    Svg,
    /// Folded stacks.
    Folded,
}

/// The parameters every profile route takes: `format`, and on sampled profiles `symbolize`
/// and `span`.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    pub(crate) format: Format,
    /// `false` (pprof only): leave symbolization to the reader (mappings carry path, offsets
    /// and build id).
    pub(crate) symbolize: bool,
    /// Keep only the samples taken inside the `tracing` span of this name.
    pub(crate) span: Option<String>,
}

/// The parameter names [`Ask::parse`] reads on a sampled profile.
pub(crate) const SAMPLED: &[&str] = &["format", "symbolize", "span"];

impl Ask {
    /// Reads `format` and, if `sampled`, `symbolize` and `span` (at most the span labels'
    /// length); `symbolize=false` is for pprof only.
    pub(crate) fn parse(params: &Params, sampled: bool) -> Result<Ask, ApiError> {
        let format = match params.choice("format", &["pprof", "svg", "folded"], "pprof")? {
            "svg" => Format::Svg,
            "folded" => Format::Folded,
            _ => Format::Pprof,
        };
        if !sampled {
            return Ok(Ask {
                format,
                symbolize: true,
                span: None,
            });
        }
        let symbolize = params.choice("symbolize", &["true", "false"], "true")? == "true";
        let span = params
            .text("span", MAX_LABEL_VALUE_BYTES)?
            .map(str::to_owned);
        if !symbolize && format != Format::Pprof {
            return Err(ApiError::bad_parameter(
                "symbolize=false is for format=pprof only (its mappings carry path, offsets and build id for off-host symbolization); svg and folded need names",
            ));
        }
        Ok(Ask {
            format,
            symbolize,
            span,
        })
    }
}

/// Where a profile's answer goes: the service's name (file names, titles) and the console's
/// kept results. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outlet {
    service: Arc<str>,
    results: Results,
}

impl Outlet {
    /// The outlet of a probe's context: its service name and kept results.
    pub(crate) fn new(cx: &ProbeContext) -> Outlet {
        Outlet {
            service: cx.service_name.clone(),
            results: cx.results.clone(),
        }
    }

    /// Answers `ask` with `profile`, taken at `started` for `caller`: filtered to the span,
    /// rendered off the runtime's threads, its figures and first warning as `x-prodbg-*`
    /// headers. An SVG is kept with the pprof file of the same profile as the console's last
    /// result of the profile's kind. `file_kind` names the download (`heap-growth`).
    pub(crate) async fn answer(
        &self,
        mut profile: Profile,
        ask: &Ask,
        started: SystemTime,
        caller: &Caller,
        file_kind: &str,
    ) -> Result<Response, ApiError> {
        if let Some(span) = &ask.span {
            profile.retain_span(span);
        }
        let title = profile.title(&self.service);
        let format = ask.format;
        let svg_title = title.clone();
        let (profile, body, kept_pprof, render_ms) = blocking("rendering the profile", move || {
            let t0 = Instant::now();
            let (body, kept) = match format {
                Format::Svg => (profile.svg(&svg_title)?, Some(profile.pprof_gz())),
                Format::Folded => (profile.folded().into_bytes(), None),
                Format::Pprof => (profile.pprof_gz(), None),
            };
            Ok::<_, String>((profile, body, kept, t0.elapsed().as_secs_f64() * 1e3))
        })
        .await?
        .map_err(|e| ApiError::internal(format!("cannot render the profile: {e}")))?;
        let name = |ext: &str| file_name(&self.service, file_kind, started, ext);
        if let Some(pprof) = kept_pprof {
            self.results.put(StoredResult {
                kind: profile.kind,
                title,
                taken_at: started,
                by: caller.name().to_string(),
                svg: body.clone(),
                svg_name: name("svg"),
                pprof,
                pprof_name: name("pb.gz"),
            });
        }
        let format = match format {
            Format::Svg => "svg",
            Format::Folded => "folded",
            Format::Pprof => "pprof",
        };
        tracing::info!(
            target: "prodbg",
            kind = profile.kind, stacks = profile.samples.len(), format, render_ms,
            "profile taken"
        );
        let mut figures = Vec::new();
        if profile.value_types.first().map(|t| t.kind) == Some("samples") {
            figures.push(("x-prodbg-samples", profile.total(0).to_string()));
        }
        figures.extend(profile.figures.iter().cloned());
        figures.extend(
            profile
                .warnings
                .first()
                .map(|w| ("x-prodbg-warning", w.clone())),
        );
        figures.extend(
            crate::stack::debug_info::missing_note()
                .map(|n| ("x-prodbg-debug-info", n.to_string())),
        );
        Ok(profile_response(format, name, body, &figures))
    }

    /// The bundle's two files of one profile, `<kind>.pb.gz` and `<kind>.svg`, from `take`.
    pub(crate) fn bundle_part(
        &self,
        kind: &str,
        take: impl std::future::Future<Output = Result<Profile, ApiError>> + Send + 'static,
    ) -> BundlePart {
        let service = self.service.clone();
        BundlePart::several(
            &[&format!("{kind}.pb.gz"), &format!("{kind}.svg")],
            async move {
                let profile = take.await.map_err(|e| e.message)?;
                blocking("rendering the profile", move || {
                    let svg = profile.svg(&profile.title(&service))?;
                    Ok(vec![profile.pprof_gz(), svg])
                })
                .await
                .map_err(|e| e.message)?
            },
        )
    }
}

/// A profiler that samples for a while: CPU, wall clock. One runs at a time per process
/// (its `start` refuses a second with the time left).
pub(crate) trait Sampler: Send + Sync + 'static {
    /// A profile being taken; dropping it stops sampling.
    type Running: Send + 'static;
    /// The profile's kind: `cpu`, `wall`.
    const KIND: &'static str;
    /// The rates it accepts, Hz.
    const FREQUENCY: RangeInclusive<u32>;
    /// Its default rate, Hz.
    const DEFAULT_FREQUENCY: u32;
    /// Its default length, seconds (at most the configured maximum).
    const DEFAULT_SECONDS: u64;
    /// Starts sampling every thread for (about) `duration` at `frequency_hz`. Blocking.
    fn start(duration: Duration, frequency_hz: u32) -> Result<Self::Running, ApiError>;
    /// Stops and builds the profile, symbolized if `symbolize`. Blocking, CPU-heavy.
    fn stop(running: Self::Running, symbolize: bool) -> Result<Profile, ApiError>;
    /// Whether a profile of this kind is being taken now.
    fn running() -> bool;
    /// The recorded history from `from` to `to`, for `?since=` (blocking). Samplers that
    /// record nothing answer 400.
    fn recorded(_from: SystemTime, _to: SystemTime, _symbolize: bool) -> Result<Profile, ApiError> {
        Err(ApiError::bad_parameter(format!(
            "no history is recorded for {} profiles: since= is not available; take a fresh profile with seconds=",
            Self::KIND
        )))
    }
    /// How far back `?since=` reaches now; `None` when nothing is recorded.
    fn retention() -> Option<Duration> {
        None
    }
}

/// A profile of the recorded history: `?since=` ago up to `?until=` ago (default now),
/// within the sampler's retention.
async fn recorded<S: Sampler>(
    st: &Timed,
    params: &Params,
    ask: &Ask,
    caller: &Caller,
) -> Result<Response, ApiError> {
    if params.get("seconds").is_some() || params.get("frequency").is_some() {
        return Err(ApiError::bad_parameter(
            "seconds and frequency take a fresh profile; since= reads the recorded history: give one or the other",
        ));
    }
    // Without a recorder, the sampler's own answer (400: nothing recorded) follows.
    let (max, beyond) = match S::retention() {
        Some(r) => (
            r + Duration::from_secs(10),
            format!("the flight recorder's retention ({} s)", r.as_secs()),
        ),
        None => (Duration::from_secs(3600), "an hour".to_string()),
    };
    let since = params.duration_in("since", Duration::ZERO..=max, Duration::ZERO, &beyond)?;
    let until = params.duration_in("until", Duration::ZERO..=max, Duration::ZERO, &beyond)?;
    if until >= since {
        return Err(ApiError::bad_parameter(
            "until must be less long ago than since (e.g. since=5m&until=1m)",
        ));
    }
    let now = SystemTime::now();
    let (from, to) = (now - since, now - until);
    let symbolize = ask.symbolize;
    let profile = blocking("reading the recorded history", move || {
        S::recorded(from, to, symbolize)
    })
    .await??;
    st.outlet.answer(profile, ask, from, caller, S::KIND).await
}

/// Samples for `duration` and returns the profile. Dropping the future (the client hung up)
/// drops the running profile, which stops sampling.
pub(crate) async fn sample<S: Sampler>(
    duration: Duration,
    frequency_hz: u32,
    symbolize: bool,
) -> Result<Profile, ApiError> {
    // Starting reads the module list and the stack mappings: off the admin runtime's threads.
    let running = blocking("starting the profiler", move || {
        S::start(duration, frequency_hz)
    })
    .await??;
    tokio::time::sleep(duration).await;
    blocking("stopping the profiler", move || S::stop(running, symbolize)).await?
}

/// The bundle file `<kind>-recorded.pb.gz`: sampler `S`'s whole recorded history as pprof,
/// or, listed as failed, why there is none.
pub(crate) fn recorded_bundle<S: Sampler>() -> BundlePart {
    let file = format!("{}-recorded.pb.gz", S::KIND);
    let Some(retention) = S::retention() else {
        return BundlePart::failed(&file, "the flight recorder is off");
    };
    BundlePart::new(file, async move {
        let to = SystemTime::now();
        let from = to - retention;
        let p = blocking("reading the recorded history", move || {
            S::recorded(from, to, true)
        })
        .await
        .map_err(|e| e.message)?
        .map_err(|e| e.message)?;
        blocking("rendering the profile", move || p.pprof_gz())
            .await
            .map_err(|e| e.message)
    })
}

/// The state of a [`timed`] route.
#[derive(Debug, Clone)]
pub(crate) struct Timed {
    outlet: Outlet,
    cap: Cap,
    max_seconds: u64,
}

impl Timed {
    /// A sampled profile's route state in `cx`, its work capped by the cap named `cap`.
    pub(crate) fn new(cx: &ProbeContext, cap: &'static str) -> Timed {
        Timed {
            outlet: Outlet::new(cx),
            cap: cx.fair.cap(cap),
            max_seconds: cx.limits.max_profile_seconds,
        }
    }

    /// The console's view of sampler `S` served at `route`: a figure saying whether
    /// `profiler` is running, and a form (its button's id and label) that takes a flamegraph
    /// for 1..max seconds (10 by default) and shows it.
    pub(crate) fn glance<S: Sampler>(
        &self,
        route: &'static RouteSpec,
        profiler: &'static str,
        (button_id, button): (&'static str, &'static str),
    ) -> Glance {
        let state = if S::running() { "running" } else { "idle" };
        Glance::default()
            .figure(Figure::new(
                S::KIND,
                Card::PROCESS,
                profiler,
                Value::Text(state.into()),
            ))
            .action(
                Action::new(S::KIND, button_id, button, route, Shows::Flame(S::KIND))
                    .fixed(&[("format", "svg")])
                    .field(
                        "seconds",
                        "for",
                        FieldKind::Seconds {
                            default: 10,
                            max: self.max_seconds,
                        },
                    ),
            )
    }

    /// The bundle's files of this sampler's profile over `duration` at its default rate.
    pub(crate) fn bundle<S: Sampler>(&self, duration: Duration) -> BundlePart {
        let cap = self.cap.clone();
        self.outlet.bundle_part(S::KIND, async move {
            let _cap = cap.take()?;
            sample::<S>(duration, S::DEFAULT_FREQUENCY, true).await
        })
    }
}

/// The handler of a sampled profile route: `?seconds=1..max`, `?frequency=` in the sampler's
/// range, then [`Ask`]'s parameters.
pub(crate) async fn timed<S: Sampler>(
    State(st): State<Timed>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let mut allowed = vec!["seconds", "frequency", "since", "until"];
    allowed.extend_from_slice(SAMPLED);
    let params = Params::parse(q.as_deref(), &allowed)?;
    if params.get("since").is_some() || params.get("until").is_some() {
        let ask = Ask::parse(&params, true)?;
        return recorded::<S>(&st, &params, &ask, &caller).await;
    }
    let max = st.max_seconds;
    let seconds = params.u64_in("seconds", 1..=max, S::DEFAULT_SECONDS.min(max))?;
    let frequency = params.u64_in(
        "frequency",
        u64::from(*S::FREQUENCY.start())..=u64::from(*S::FREQUENCY.end()),
        u64::from(S::DEFAULT_FREQUENCY),
    )?;
    let ask = Ask::parse(&params, true)?;
    let _cap = st.cap.take()?;
    let started = SystemTime::now();
    let profile = sample::<S>(
        Duration::from_secs(seconds),
        frequency as u32,
        ask.symbolize,
    )
    .await?;
    st.outlet
        .answer(profile, &ask, started, &caller, S::KIND)
        .await
}
