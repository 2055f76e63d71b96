//! The probe's HTTP face: its handlers and its `Probe` impl.

use super::*;

use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;

use self::core::HeapDump;
use crate::jemalloc::{self, HeapError, HeapProfilingState};
use crate::probes::one_at_a_time::OneAtATime;
use crate::seam::fair::Cap;
use crate::seam::profile::{Ask, Outlet};
use crate::seam::{
    blocking, ready, Action, ApiError, AuditDetails, BoxFuture, BundlePart, Caller, Card,
    FieldKind, Figure, Glance, Overrides, Params, Probe, ProbeContext, Route, Shows, Value,
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
}

impl Heap {
    /// The heap probe.
    pub(crate) fn new(cx: &ProbeContext) -> Heap {
        Heap { cx: cx.clone() }
    }
}

#[derive(Clone)]
struct HeapState {
    outlet: Outlet,
    max_seconds: u64,
    overrides: Overrides,
    cap: Cap,
}

/// One growth profile at a time: each holds two dumps in memory for its window.
static GROWTH: OneAtATime = OneAtATime::new();

async fn snapshot() -> Result<HeapDump, ApiError> {
    Ok(blocking("the heap probe", core::snapshot).await??)
}

/// The live heap of sampled allocations, or with `seconds=N` the growth over a window.
async fn profile(
    State(st): State<HeapState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["format", "seconds"])?;
    let ask = Ask::parse(&params, false)?;
    let seconds = match params.get("seconds") {
        Some(_) => Some(params.u64_in("seconds", 1..=st.max_seconds, 0)?),
        None => None,
    };
    let state = jemalloc::profiling_state()?;
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
    let dump = match seconds {
        None => snapshot().await?,
        Some(s) => {
            let window = Duration::from_secs(s);
            let _one = GROWTH.acquire(window).map_err(|left| {
                ApiError::conflict(format!(
                    "a heap growth profile is already running (one at a time per process); it ends in {} s — retry after that",
                    left.as_secs().max(1)
                ))
            })?;
            let before = snapshot().await?;
            tokio::time::sleep(window).await;
            let after = snapshot().await?;
            core::growth(&before, &after)
        }
    };
    let mut profile = blocking("symbolizing the heap profile", move || dump.profile()).await?;
    profile.warnings.extend(warning.map(str::to_string));
    let file_kind = if seconds.is_some() {
        "heap-growth"
    } else {
        "heap"
    };
    st.outlet
        .answer(profile, &ask, started, &caller, file_kind)
        .await
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
    jemalloc::set_active(active)?;
    if active {
        overrides.record(OVERRIDE_KIND, "active".into(), by, None);
    } else {
        overrides.clear(OVERRIDE_KIND);
    }
    tracing::info!(target: "prodbg", active, by = %by, "heap sampling switched");
    jemalloc::profiling_state()
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
    let previous = jemalloc::profiling_state()?.active;
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
            outlet: Outlet::new(&self.cx),
            max_seconds: self.cx.limits.max_profile_seconds,
            overrides: self.cx.overrides.clone(),
            cap: self.cx.fair.cap("heap profiles"),
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
        let (sampling, why) = match jemalloc::profiling_state() {
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
            let dump = snapshot().await.map_err(|e| e.message)?;
            blocking("rendering the heap profile", move || {
                dump.profile().pprof_gz()
            })
            .await
            .map_err(|e| e.message)
        })]
    }
}
