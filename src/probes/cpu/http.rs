//! The probe's HTTP face: its handlers and its `Probe` impl.

#[allow(unused_imports)]
use super::*;
use crate::probes::spans::labels::MAX_LABEL_VALUE_BYTES as MAX_SPAN_PARAM_BYTES;

use profile::{CpuError, CpuProfile, CpuProfileOptions};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::seam::download::{file_name, profile_response};
use crate::seam::fair::Cap;
use crate::seam::{
    blocking, ready, Action, ApiError, BoxFuture, BundlePart, Caller, Card, FieldKind, Figure,
    Glance, Params, Probe, ProbeContext, Results, Route, Shows, StoredResult, Value,
};
use crate::stack::modules::ModuleSet;
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
}

impl Cpu {
    /// The CPU probe.
    pub(crate) fn new(cx: &ProbeContext) -> Cpu {
        Cpu { cx: cx.clone() }
    }
}

#[derive(Clone)]
struct CpuState {
    service: Arc<str>,
    max_seconds: u64,
    cap: Cap,
    results: Results,
}

/// Samples for `opts.duration` and returns the symbolized profile. Dropping the future (the
/// client hung up) drops the running profile, which stops sampling.
async fn take(opts: CpuProfileOptions, symbolize: bool) -> Result<CpuProfile, ApiError> {
    // Starting reads the module list and the stack mappings: keep it off the admin runtime's thread.
    let running = blocking("starting the profiler", move || profile::start(opts)).await??;
    tokio::time::sleep(opts.duration).await;
    Ok(blocking("stopping the profiler", move || {
        running.stop_with(symbolize)
    })
    .await??)
}

/// The flamegraph title: service, length, rate and sample count.
fn title(service: &str, p: &CpuProfile) -> String {
    format!(
        "{service}: CPU {} s at {} Hz, {} samples",
        p.duration.as_secs(),
        p.frequency_hz,
        p.samples
    )
}

/// Samples for `seconds`, then answers in `format`. An SVG is kept, with the pprof file of the
/// same profile, as the console's last CPU flamegraph.
async fn cpu_profile(
    State(st): State<CpuState>,
    caller: Caller,
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
        1..=u64::from(MAX_FREQUENCY_HZ),
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
    let opts = CpuProfileOptions {
        duration: Duration::from_secs(seconds),
        frequency_hz: frequency as u32,
    };
    let _cap = st.cap.take()?;
    let started = SystemTime::now();
    let mut profile = take(opts, symbolize).await?;
    if let Some(span) = &span {
        profile.retain_span(span);
    }
    let service = st.service.clone();
    let fmt = format.clone();
    let (profile, body, kept_pprof, render_ms) = blocking("rendering the profile", move || {
        let start = Instant::now();
        let mut kept_pprof = None;
        let body = match fmt.as_str() {
            "svg" => {
                kept_pprof = Some(profile.pprof_gz()?);
                profile.svg(&title(&service, &profile))?
            }
            "folded" => profile.folded().into_bytes(),
            _ => profile.pprof_gz()?,
        };
        Ok::<_, CpuError>((
            profile,
            body,
            kept_pprof,
            start.elapsed().as_secs_f64() * 1e3,
        ))
    })
    .await??;
    let name = |ext: &str| file_name(&st.service, "cpu", started, ext);
    if let Some(pprof) = kept_pprof {
        st.results.put(StoredResult {
            kind: "cpu",
            title: title(&st.service, &profile),
            taken_at: started,
            by: caller.name().to_string(),
            svg: body.clone(),
            svg_name: name("svg"),
            pprof,
            pprof_name: name("pb.gz"),
        });
    }
    tracing::info!(
        target: "prodbg",
        seconds, frequency, samples = profile.samples, effective_rate_hz = profile.effective_rate_hz,
        format = %format, render_ms,
        "CPU profile taken"
    );
    let mut figures = vec![
        ("x-prodbg-samples", profile.samples.to_string()),
        ("x-prodbg-requested-hz", frequency.to_string()),
        // Samples per second of the process's CPU time: the requested frequency when none
        // were lost, whatever share of its cores the process used.
        (
            "x-prodbg-samples-per-cpu-second",
            profile
                .samples_per_cpu_second()
                .map_or_else(|| "unknown".to_string(), |r| format!("{r:.1}")),
        ),
        ("x-prodbg-truncated-samples", profile.truncated.to_string()),
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
        let st = CpuState {
            service: self.cx.service_name.clone(),
            max_seconds: self.cx.limits.max_profile_seconds,
            cap: self.cx.fair.cap("CPU profiles"),
            results: self.cx.results.clone(),
        };
        vec![
            PROFILE.serve(&self.cx.limits, cpu_profile, st),
            SYMBOL.serve(&self.cx.limits, symbol_count, ()),
            SYMBOL_POST.serve(&self.cx.limits, symbol_lookup, ()),
        ]
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
                    "cpu",
                    Card::PROCESS,
                    "CPU profiler",
                    Value::Text(state.into()),
                ))
                .action(
                    Action::new(
                        "cpu",
                        "cpu-flame",
                        "CPU flamegraph",
                        &PROFILE,
                        Shows::Flame("cpu"),
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

    fn bundle(&self, window: Duration) -> Vec<BundlePart> {
        // One profile feeds both files: the SVG part waits for the pprof part's profile.
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Vec<u8>, String>>();
        let service = self.cx.service_name.clone();
        let cap = self.cx.fair.cap("CPU profiles");
        let pprof = BundlePart::new("cpu.pb.gz", async move {
            let _cap = match cap.take() {
                Ok(cap) => cap,
                Err(busy) => {
                    let _ = tx.send(Err(busy.to_string()));
                    return Err(busy.to_string());
                }
            };
            let opts = CpuProfileOptions {
                duration: window,
                frequency_hz: DEFAULT_FREQUENCY_HZ,
            };
            let profile = match take(opts, true).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e.message.clone()));
                    return Err(e.message);
                }
            };
            let rendered = blocking("rendering the profile", move || {
                let svg = profile
                    .svg(&title(&service, &profile))
                    .map_err(|e| e.to_string());
                (profile.pprof_gz().map_err(|e| e.to_string()), svg)
            })
            .await;
            match rendered {
                Ok((pprof, svg)) => {
                    let _ = tx.send(svg);
                    pprof
                }
                Err(e) => {
                    let _ = tx.send(Err(e.message.clone()));
                    Err(e.message)
                }
            }
        });
        let svg = BundlePart::new("cpu.svg", async move {
            rx.await
                .unwrap_or_else(|_| Err("the CPU profile part ended without a profile".into()))
        });
        vec![pprof, svg]
    }
}
