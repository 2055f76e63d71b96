//! `GET /debug/tokio` (runtime metrics per worker, with rates), `GET /debug/tokio/tasks` (an
//! async task dump), Go's `GET /debug/pprof/goroutine?debug=1|2` (the same dump in Go's text
//! shapes) and the `prodbg_tokio_*` Prometheus series.

mod go_text;
mod runtime;
#[cfg(test)]
mod tests;
mod unstable;
mod window;

pub(crate) use runtime::RuntimeRegistry;
use runtime::{task_dump, task_stacks, RuntimeReport, TaskDumpError, WorkerReport};

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use crate::encode::prometheus::Families;
use crate::seam::fair::Cap;
use crate::seam::{
    Access, Action, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, GoIndex, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Row, Shows, Table, Unit, Value, Vitals,
};
use crate::security::Scope;

/// Longest sampling window for rates, in milliseconds.
const MAX_WINDOW_MS: u64 = 10_000;
/// Default sampling window, in milliseconds.
const DEFAULT_WINDOW_MS: u64 = 1000;
/// Shortest and longest wait for a task dump, in milliseconds.
const DUMP_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
/// Default wait for a task dump, in milliseconds.
const DEFAULT_DUMP_TIMEOUT_MS: u64 = 5000;
/// The window of the busy ratios at a glance (the console, the index JSON).
const GLANCE_WINDOW: Duration = Duration::from_millis(250);

/// `GET /debug/tokio`.
pub(crate) static TOKIO: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/tokio",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        format!("every registered Tokio runtime: workers, tasks, queues, per-worker busy ratio, polls, steals, with per-second rates over ?window_ms=0..{MAX_WINDOW_MS} ({DEFAULT_WINDOW_MS})")
    },
};

/// What to turn on to get task dumps.
const NEEDS_TASKDUMP: &str = "needs RUSTFLAGS=\"--cfg tokio_unstable --cfg tokio_taskdump\" (Linux on x86_64, aarch64, x86 or s390x)";

/// `GET /debug/tokio/tasks`.
pub(crate) static TASKS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/tokio/tasks",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        format!(
            "async task dump, one trace per task (?runtime=, ?timeout_ms={}..{}); {NEEDS_TASKDUMP}",
            DUMP_TIMEOUT_MS.start(),
            DUMP_TIMEOUT_MS.end()
        )
    },
};

/// `GET /debug/pprof/goroutine`.
pub(crate) static GOROUTINE: RouteSpec = RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/goroutine",
            access: Access::Scope(Scope::Profile),
            go: Some(GoIndex {
        link: "goroutine?debug=1",
        text: "Stack traces of all current Tokio tasks (the async task dump), grouped by stack. Needs --cfg tokio_unstable --cfg tokio_taskdump.",
    }),
    summary: |_| {
                format!(
                    "the async task dump in Go's text shapes: ?debug=1 (default) counts tasks by stack, ?debug=2 prints every task like a goroutine dump; every registered runtime (or ?runtime=), ?timeout_ms={}..{}; {NEEDS_TASKDUMP}",
                    DUMP_TIMEOUT_MS.start(),
                    DUMP_TIMEOUT_MS.end()
                )
            },
        };

/// The Tokio probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "tokio",
    feature: None,
    routes: &[&TOKIO, &TASKS, &GOROUTINE],
    bundle_files: &["tokio.json", "tasks.txt"],
};

/// The registered runtimes and, when started, the tokio-console address.
#[derive(Debug)]
pub(crate) struct Tokio {
    cx: ProbeContext,
    runtimes: RuntimeRegistry,
    console: Option<SocketAddr>,
}

impl Tokio {
    /// Reports `runtimes`; names the tokio-console command for `console` when given.
    pub(crate) fn new(
        cx: &ProbeContext,
        runtimes: RuntimeRegistry,
        console: Option<SocketAddr>,
    ) -> Tokio {
        Tokio {
            cx: cx.clone(),
            runtimes,
            console,
        }
    }
}

type TokioState = (RuntimeRegistry, Option<SocketAddr>, Cap);

/// The `/debug/tokio` body.
#[derive(Debug, Serialize)]
struct TokioReport {
    /// Every registered runtime, sorted by name.
    runtimes: Vec<RuntimeReport>,
    /// The command that attaches tokio-console, when its server runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokio_console: Option<String>,
}

async fn report(
    runtimes: &RuntimeRegistry,
    console: Option<SocketAddr>,
    window: Duration,
) -> TokioReport {
    TokioReport {
        runtimes: runtimes.snapshot(window).await,
        tokio_console: console.map(|addr| format!("tokio-console http://{addr}")),
    }
}

impl From<TaskDumpError> for ApiError {
    fn from(e: TaskDumpError) -> ApiError {
        match e {
            TaskDumpError::NotCompiled => ApiError::not_compiled(e.to_string()),
            TaskDumpError::AlreadyRunning => ApiError::conflict(e.to_string()),
            TaskDumpError::Failed(_) => ApiError::internal(e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        }
    }
}

fn require_runtimes(runtimes: &RuntimeRegistry) -> Result<Vec<String>, ApiError> {
    let names = runtimes.names();
    if names.is_empty() {
        return Err(ApiError::unavailable(
            "no Tokio runtime is registered: add .tokio_runtime(\"main\", tokio::runtime::Handle::current()) to the builder",
        ));
    }
    Ok(names)
}

/// Every registered runtime's metrics; rates over `?window_ms=`.
async fn metrics(
    State((runtimes, console, _)): State<TokioState>,
    RawQuery(q): RawQuery,
) -> Result<Json<TokioReport>, ApiError> {
    let params = Params::parse(q.as_deref(), &["window_ms"])?;
    let window = params.u64_in("window_ms", 0..=MAX_WINDOW_MS, DEFAULT_WINDOW_MS)?;
    require_runtimes(&runtimes)?;
    Ok(Json(
        report(&runtimes, console, Duration::from_millis(window)).await,
    ))
}

/// A text dump of every task of `?runtime=` (default: the first registered).
async fn tasks(
    State((runtimes, _, fair)): State<TokioState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["runtime", "timeout_ms"])?;
    let _cap = fair.take()?;
    let timeout = params.u64_in("timeout_ms", DUMP_TIMEOUT_MS, DEFAULT_DUMP_TIMEOUT_MS)?;
    let names = require_runtimes(&runtimes)?;
    let name = match params.get("runtime") {
        Some(n) if names.iter().any(|r| r == n) => n.to_string(),
        Some(n) => {
            return Err(ApiError::bad_parameter(format!(
                "runtime={:?} is not registered; registered: {}",
                n.chars().take(64).collect::<String>(),
                names.join(", ")
            )))
        }
        None => names[0].clone(),
    };
    Ok(dump(&runtimes, &name, Duration::from_millis(timeout))
        .await?
        .into_response())
}

/// `/debug/pprof/goroutine?debug=1|2`: every registered runtime's tasks (or `?runtime=`'s) in
/// Go's text shapes. With several runtimes, one that cannot be dumped is named in a `#` line
/// and the others are still shown; with one, its error is the answer (501 when task dumps are
/// not compiled in, 503 when a worker is blocked, 409 when a dump is already running).
async fn goroutine(
    State((runtimes, _, fair)): State<TokioState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["debug", "runtime", "timeout_ms"])?;
    let _cap = fair.take()?;
    let debug = params.choice("debug", &["1", "2"], "1").map_err(|e| {
        ApiError::bad_parameter(format!(
            "{}; prodbg serves the text forms only (debug=0, Go's protobuf, is not served)",
            e.message
        ))
    })?;
    let timeout = params.u64_in("timeout_ms", DUMP_TIMEOUT_MS, DEFAULT_DUMP_TIMEOUT_MS)?;
    if !runtime::TASK_DUMP_COMPILED {
        return Err(TaskDumpError::NotCompiled.into());
    }
    let names = require_runtimes(&runtimes)?;
    let selected = match params.get("runtime") {
        Some(n) if names.iter().any(|r| r == n) => vec![n.to_string()],
        Some(n) => {
            return Err(ApiError::bad_parameter(format!(
                "runtime={:?} is not registered; registered: {}",
                n.chars().take(64).collect::<String>(),
                names.join(", ")
            )))
        }
        None => names,
    };
    let timeout = Duration::from_millis(timeout);
    let mut tasks = Vec::new();
    let mut notes = Vec::new();
    let mut first_error = None;
    for name in &selected {
        let dumped = match runtimes.get(name) {
            Some(handle) => task_stacks(&handle, name, timeout).await,
            None => Err(TaskDumpError::Failed(format!(
                "runtime {name:?} is no longer registered"
            ))),
        };
        match dumped {
            Ok(t) => tasks.extend(t),
            Err(e) => {
                notes.push(format!("runtime {name:?} not dumped: {e}"));
                first_error.get_or_insert(e);
            }
        }
    }
    if let (Some(e), true) = (first_error, notes.len() == selected.len()) {
        return Err(e.into());
    }
    let text = if debug == "2" {
        go_text::debug2(&tasks, selected.len() > 1, &notes)
    } else {
        go_text::debug1(&tasks, &notes)
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// One runtime's dump, headed by its name.
async fn dump(
    runtimes: &RuntimeRegistry,
    name: &str,
    timeout: Duration,
) -> Result<String, TaskDumpError> {
    let handle = runtimes.get(name).ok_or_else(|| {
        TaskDumpError::Failed(format!("runtime {name:?} is no longer registered"))
    })?;
    let text = task_dump(&handle, timeout).await?;
    Ok(format!("runtime {name:?}\n\n{text}"))
}

impl Probe for Tokio {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let state: TokioState = (
            self.runtimes.clone(),
            self.console,
            self.cx.fair.cap("task dumps"),
        );
        let l = &self.cx.limits;
        vec![
            TOKIO.serve(l, metrics, state.clone()),
            TASKS.serve(l, tasks, state.clone()),
            GOROUTINE.serve(l, goroutine, state),
        ]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(TokioCollector(self.runtimes.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        if self.runtimes.names().is_empty() {
            let why = "no Tokio runtime is registered (.tokio_runtime(..))";
            return vec![
                BundlePart::failed("tokio.json", why),
                BundlePart::failed("tasks.txt", why),
            ];
        }
        let (runtimes, console) = (self.runtimes.clone(), self.console);
        let metrics = BundlePart::new("tokio.json", async move {
            let r = report(&runtimes, console, Duration::from_millis(500)).await;
            serde_json::to_vec_pretty(&r).map_err(|e| e.to_string())
        });
        let runtimes = self.runtimes.clone();
        let tasks = BundlePart::new("tasks.txt", async move {
            let mut text = String::new();
            let mut failures = Vec::new();
            for name in runtimes.names() {
                match dump(&runtimes, &name, Duration::from_secs(5)).await {
                    Ok(d) => text.push_str(&d),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
            if text.is_empty() {
                Err(failures.join("; "))
            } else {
                Ok(text.into_bytes())
            }
        });
        vec![metrics, tasks]
    }

    /// Per runtime: the busy ratio (the workers' published busy time as a counter, divided by
    /// the workers: its rate is the mean busy share; a worker stuck in one poll publishes
    /// nothing, so `/debug/tokio`'s window is the truer reading then), the global queue depth
    /// and the alive tasks.
    fn vitals(&self, out: &mut Vitals) {
        for r in self.runtimes.levels() {
            let name = &r.name;
            if r.workers > 0 {
                out.counter(
                    format!("tokio.{name}.busy_ratio"),
                    Unit::Ratio,
                    r.busy_seconds_total / r.workers as f64,
                );
            }
            out.gauge(
                format!("tokio.{name}.global_queue"),
                Unit::Count,
                r.global_queue_depth as f64,
            );
            out.gauge(
                format!("tokio.{name}.alive_tasks"),
                Unit::Count,
                r.alive_tasks as f64,
            );
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let window = if self.runtimes.names().is_empty() {
            Duration::ZERO
        } else {
            GLANCE_WINDOW
        };
        let snapshot = self.runtimes.snapshot(window);
        let console = self.console.map(|a| a.to_string());
        Box::pin(async move {
            let runtimes = snapshot.await;
            let tasks: u64 = runtimes.iter().map(|r| r.alive_tasks as u64).sum();
            let rows = runtimes
                .iter()
                .map(|r| {
                    let local: Option<usize> =
                        r.per_worker.iter().map(|w| w.local_queue_depth).sum();
                    let blocked = r.likely_blocked_workers;
                    Row {
                        cells: vec![
                            Value::Text(r.name.clone()),
                            Value::Count(Some(r.workers as u64)),
                            Value::Ratio(r.busy_ratio),
                            Value::Count(blocked.map(|b| b as u64)),
                            Value::Count(Some(r.global_queue_depth as u64)),
                            Value::Count(local.map(|l| l as u64)),
                            Value::Count(Some(r.alive_tasks as u64)),
                        ],
                        bad: blocked.unwrap_or(0) > 0 || r.busy_ratio.unwrap_or(0.0) >= 0.9,
                    }
                })
                .collect();
            let mut g = Glance::default()
                .table(Table {
                    id: "tokio",
                    card: Card::RUNTIMES,
                    columns: vec![
                        "runtime",
                        "workers",
                        "busy",
                        "blocked workers",
                        "global queue",
                        "local queues",
                        "tasks",
                    ],
                    rows,
                    empty: "no runtime registered: .tokio_runtime(\"main\", Handle::current())"
                        .into(),
                })
                .action(Action::new(
                    "tasks",
                    "task-dump",
                    "Task dump",
                    &TASKS,
                    Shows::Text,
                ));
            if !runtimes.is_empty() {
                g = g.figure(
                    Figure::new(
                        "tasks",
                        Card::RUNTIMES,
                        "tasks alive",
                        Value::Count(Some(tasks)),
                    )
                    .counts(&GOROUTINE),
                );
            }
            if let Some(addr) = console {
                g = g.figure(Figure::new(
                    "console",
                    Card::RUNTIMES,
                    "tokio-console",
                    Value::Text(format!("tokio-console http://{addr}")),
                ));
            }
            Some(g)
        })
    }
}

/// `prodbg_tokio_*`: per runtime (label `runtime`) and per worker (labels `runtime`,
/// `worker`). A metric this build cannot read (it needs `--cfg tokio_unstable`) has no samples.
#[derive(Debug)]
struct TokioCollector(RuntimeRegistry);

impl Collector for TokioCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let runtimes = self.0.snapshot_now();
        let mut f = Families::new(encoder);
        let rt = |r: &RuntimeReport| vec![("runtime".to_string(), r.name.clone())];
        type RtField = fn(&RuntimeReport) -> Option<f64>;
        let per_runtime: [(&str, &str, RtField); 4] = [
            (
                "prodbg_tokio_workers",
                "Worker threads of the runtime",
                |r| Some(r.workers as f64),
            ),
            (
                "prodbg_tokio_alive_tasks",
                "Tasks spawned and not yet finished",
                |r| Some(r.alive_tasks as f64),
            ),
            (
                "prodbg_tokio_global_queue_depth",
                "Tasks waiting in the runtime's global queue",
                |r| Some(r.global_queue_depth as f64),
            ),
            (
                "prodbg_tokio_blocking_threads",
                "Threads of the blocking pool",
                |r| r.blocking_threads.map(|v| v as f64),
            ),
        ];
        for (name, help, field) in per_runtime {
            f.gauges(
                name,
                help,
                runtimes.iter().filter_map(|r| Some((rt(r), field(r)?))),
            )?;
        }
        let workers = || {
            runtimes.iter().flat_map(|r| {
                r.per_worker.iter().map(move |w| {
                    let labels = vec![
                        ("runtime".to_string(), r.name.clone()),
                        ("worker".to_string(), w.index.to_string()),
                    ];
                    (labels, w)
                })
            })
        };
        type WField = fn(&WorkerReport) -> Option<f64>;
        let counters: [(&str, &str, WField); 5] = [
            (
                "prodbg_tokio_worker_busy_seconds",
                "Time the worker spent polling tasks, in seconds",
                |w| Some(w.busy_seconds_total),
            ),
            (
                "prodbg_tokio_worker_parks",
                "Times the worker parked (went idle)",
                |w| Some(w.park_count as f64),
            ),
            (
                "prodbg_tokio_worker_polls",
                "Task polls by the worker",
                |w| w.poll_count.map(|v| v as f64),
            ),
            (
                "prodbg_tokio_worker_steals",
                "Tasks the worker stole from other workers",
                |w| w.steal_count.map(|v| v as f64),
            ),
            (
                "prodbg_tokio_worker_overflows",
                "Times the worker's local queue overflowed into the global queue",
                |w| w.overflow_count.map(|v| v as f64),
            ),
        ];
        for (name, help, field) in counters {
            f.counters(
                name,
                help,
                workers().filter_map(|(l, w)| Some((l, field(w)?))),
            )?;
        }
        let gauges: [(&str, &str, WField); 2] = [
            (
                "prodbg_tokio_worker_local_queue_depth",
                "Tasks in the worker's local queue",
                |w| w.local_queue_depth.map(|v| v as f64),
            ),
            (
                "prodbg_tokio_worker_mean_poll_time_seconds",
                "Exponentially weighted mean poll time, in seconds",
                |w| w.mean_poll_time_seconds,
            ),
        ];
        for (name, help, field) in gauges {
            f.gauges(
                name,
                help,
                workers().filter_map(|(l, w)| Some((l, field(w)?))),
            )?;
        }
        Ok(())
    }
}
