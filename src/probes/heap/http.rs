//! The probe's HTTP face: its handlers and its `Probe` impl.

#[allow(unused_imports)]
use super::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use self::core::{HeapError, HeapProfile, HeapProfilingState};
use crate::seam::download::{attachment, file_name, inline, SVG_CSP};
use crate::seam::fair::Cap;
use crate::seam::{
    blocking, ready, Action, ApiError, AuditDetails, BoxFuture, BundlePart, Caller, Card,
    FieldKind, Figure, Glance, Overrides, Params, Probe, ProbeContext, Results, Route, Shows,
    StoredResult, Value,
};

/// Override kind recorded while heap sampling is switched on at run time.
const OVERRIDE_KIND: &str = "heap_sampling";

impl From<HeapError> for ApiError {
    fn from(e: HeapError) -> ApiError {
        match e {
            HeapError::NotJemalloc => ApiError::unavailable(e.to_string()),
            HeapError::ProfilingNotEnabled => ApiError::conflict(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// jemalloc heap profiles; switching sampling on and off is recorded as an override.
#[derive(Debug)]
pub(crate) struct Heap {
    cx: ProbeContext,
    /// One growth profile at a time: each holds two dumps in memory for its window.
    growth_running: Arc<AtomicBool>,
}

impl Heap {
    /// The heap probe.
    pub(crate) fn new(cx: &ProbeContext) -> Heap {
        Heap {
            cx: cx.clone(),
            growth_running: Arc::default(),
        }
    }
}

#[derive(Clone)]
struct HeapState {
    service: Arc<str>,
    max_seconds: u64,
    overrides: Overrides,
    growth_running: Arc<AtomicBool>,
    cap: Cap,
    results: Results,
}

/// Holds the one growth-profile slot until dropped.
struct GrowthSlot(Arc<AtomicBool>);

impl GrowthSlot {
    fn take(flag: &Arc<AtomicBool>) -> Option<GrowthSlot> {
        (!flag.swap(true, Ordering::AcqRel)).then(|| GrowthSlot(flag.clone()))
    }
}

impl Drop for GrowthSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn snapshot() -> Result<HeapProfile, ApiError> {
    Ok(blocking("the heap probe", core::snapshot).await??)
}

/// The live heap of sampled allocations, or with `seconds=N` the growth over a window. An SVG
/// is kept, with the pprof file of the same profile, as the console's last heap flamegraph.
async fn profile(
    State(st): State<HeapState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format", "seconds"])?;
    let format = params
        .choice("format", &["pprof", "svg", "folded"], "pprof")?
        .to_string();
    let seconds = match params.get("seconds") {
        Some(_) => Some(params.u64_in("seconds", 1..=st.max_seconds, 0)?),
        None => None,
    };
    let state = core::profiling_state()?;
    let _cap = st.cap.take()?;
    let mut warning = None;
    if !state.active {
        if seconds.is_some() {
            return Err(ApiError::conflict(
                "heap sampling is inactive, so a growth profile would be empty: POST /debug/pprof/heap/activate first",
            ));
        }
        warning = Some("heap sampling is inactive: this shows allocations sampled while it was active; POST /debug/pprof/heap/activate");
    }
    let started = SystemTime::now();
    let profile = match seconds {
        None => snapshot().await?,
        Some(s) => {
            let _slot = GrowthSlot::take(&st.growth_running).ok_or_else(|| {
                ApiError::conflict("a heap growth profile is already running; retry when it ends")
            })?;
            let before = snapshot().await?;
            tokio::time::sleep(Duration::from_secs(s)).await;
            let after = snapshot().await?;
            core::growth(&before, &after)
        }
    };
    let what = if seconds.is_some() {
        "growth"
    } else {
        "in use"
    };
    let title = format!(
        "{}: heap {what}{}, {} MB in {} stacks (sampled every {} KiB)",
        st.service,
        seconds.map(|s| format!(" over {s} s")).unwrap_or_default(),
        profile.total_bytes() / 1_000_000,
        profile.stack_count(),
        profile.sample_interval_bytes() / 1024,
    );
    let fmt = format.clone();
    let svg_title = title.clone();
    let (body, kept_pprof) = blocking("rendering the heap profile", move || match fmt.as_str() {
        "svg" => Ok::<_, HeapError>((profile.svg(&svg_title)?, Some(profile.pprof_gz()?))),
        "folded" => Ok((profile.folded().into_bytes(), None)),
        _ => Ok((profile.pprof_gz()?, None)),
    })
    .await??;
    let what = if seconds.is_some() {
        "heap-growth"
    } else {
        "heap"
    };
    let name = |ext: &str| file_name(&st.service, what, started, ext);
    if let Some(pprof) = kept_pprof {
        st.results.put(StoredResult {
            kind: "heap",
            title,
            taken_at: started,
            by: caller.name().to_string(),
            svg: body.clone(),
            svg_name: name("svg"),
            pprof,
            pprof_name: name("pb.gz"),
        });
    }
    let (content_type, disposition) = match format.as_str() {
        "svg" => ("image/svg+xml", inline(&name("svg"))),
        "folded" => ("text/plain; charset=utf-8", inline(&name("folded.txt"))),
        _ => ("application/octet-stream", attachment(&name("pb.gz"))),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    if format == "svg" {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    if let Some(w) = warning {
        response.headers_mut().insert(
            HeaderName::from_static("x-prodbg-warning"),
            HeaderValue::from_static(w),
        );
    }
    if let Some(note) =
        crate::stack::debug_info::missing_note().and_then(|n| HeaderValue::from_str(n).ok())
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-prodbg-debug-info"), note);
    }
    Ok(response)
}

/// The body of activate / deactivate.
#[derive(Debug, Serialize)]
struct Switched {
    /// jemalloc's profiling state after the switch.
    profiling: HeapProfilingState,
}

/// Turns sampling on or off and records (or clears) the override, with who did it.
fn set_sampling(
    overrides: &Overrides,
    active: bool,
    by: &str,
) -> Result<HeapProfilingState, HeapError> {
    core::set_active(active)?;
    if active {
        overrides.record(OVERRIDE_KIND, "active".into(), by, None);
    } else {
        overrides.clear(OVERRIDE_KIND);
    }
    tracing::info!(target: "prodbg", active, by = %by, "heap sampling switched");
    core::profiling_state()
}

async fn activate(
    State(st): State<HeapState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<(Extension<AuditDetails>, Json<Switched>), ApiError> {
    Params::parse(q.as_deref(), &[])?;
    switched(&st, true, caller.name())
}

async fn deactivate(
    State(st): State<HeapState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<(Extension<AuditDetails>, Json<Switched>), ApiError> {
    Params::parse(q.as_deref(), &[])?;
    switched(&st, false, caller.name())
}

/// Switches sampling and says, for the audit record, what it was before.
fn switched(
    st: &HeapState,
    active: bool,
    by: &str,
) -> Result<(Extension<AuditDetails>, Json<Switched>), ApiError> {
    let previous = core::profiling_state()?.active;
    let profiling = set_sampling(&st.overrides, active, by)?;
    let details = AuditDetails::new()
        .with("heap_sampling", profiling.active)
        .with("previous", previous);
    Ok((Extension(details), Json(Switched { profiling })))
}

impl Probe for Heap {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let st = HeapState {
            service: self.cx.service_name.clone(),
            max_seconds: self.cx.limits.max_profile_seconds,
            overrides: self.cx.overrides.clone(),
            growth_running: self.growth_running.clone(),
            cap: self.cx.fair.cap("heap profiles"),
            results: self.cx.results.clone(),
        };
        let l = &self.cx.limits;

        vec![
            HEAP.serve(l, profile, st.clone()),
            ALLOCS.serve(l, profile, st.clone()),
            ACTIVATE.serve(l, activate, st.clone()),
            DEACTIVATE.serve(l, deactivate, st),
        ]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let (sampling, why) = match core::profiling_state() {
            Ok(s) if !s.opt_prof => ("off: start the host with prof:true to allow it", None),
            Ok(s) if s.active => ("active", None),
            Ok(_) => ("inactive", None),
            Err(e) => ("unavailable", Some(e.to_string())),
        };
        let mut figure = Figure::new(
            "heap-sampling",
            Card::MEMORY,
            "heap sampling",
            Value::Text(sampling.into()),
        );
        if let Some(why) = why {
            figure = figure.note(why);
        }
        let max = self.cx.limits.max_profile_seconds;
        let svg: &[(&str, &str)] = &[("format", "svg")];
        ready(
            Glance::default()
                .figure(figure)
                .action(
                    Action::new(
                        "heap",
                        "heap-growth",
                        "Heap growth profile",
                        &HEAP,
                        Shows::Flame("heap"),
                    )
                    .fixed(svg)
                    .field(
                        "seconds",
                        "over",
                        FieldKind::Seconds { default: 30, max },
                    ),
                )
                .action(
                    Action::new(
                        "heap-now",
                        "heap-now",
                        "Heap in use now",
                        &HEAP,
                        Shows::Flame("heap"),
                    )
                    .fixed(svg),
                )
                .action(
                    Action::new(
                        "heap-on",
                        "heap-on",
                        "Heap sampling on",
                        &ACTIVATE,
                        Shows::Status("Heap sampling active: {profiling.active}."),
                    )
                    .needs(Scope::Admin),
                )
                .action(
                    Action::new(
                        "heap-off",
                        "heap-off",
                        "Heap sampling off",
                        &DEACTIVATE,
                        Shows::Status("Heap sampling active: {profiling.active}."),
                    )
                    .needs(Scope::Admin),
                ),
        )
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        vec![BundlePart::new("heap.pb.gz", async {
            let p = snapshot().await.map_err(|e| e.message)?;
            blocking("rendering the heap profile", move || p.pprof_gz())
                .await
                .map_err(|e| e.message)?
                .map_err(|e| e.to_string())
        })]
    }
}
