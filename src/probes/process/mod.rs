//! `GET /debug/process`: pid, uptime, build info, command line, redacted environment,
//! limits; Go's `GET /debug/pprof/cmdline` and a `threadcreate`-like thread list; and the
//! standard `process_*` Prometheus series.

mod info;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use info::{cmdline, cpu_seconds, info, stats, threads, ProcessInfo};

use crate::encode::prometheus::Families;
use crate::seam::{
    blocking, ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, GoIndex,
    Params, Probe, ProbeContext, ProbeSpec, Route, RouteSpec, Unit, Value, Vitals,
};
use crate::security::Scope;

/// `GET /debug/process`.
pub(crate) static PROCESS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/process",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "pid, uptime, build info, command line, environment (secrets redacted), limits, open fds"
            .into()
    },
};

/// `GET /debug/pprof/cmdline`.
pub(crate) static CMDLINE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/cmdline",
    access: Access::Scope(Scope::Read),
    go: Some(GoIndex {
        link: "cmdline",
        text:
            "The command line of this program, arguments separated by NUL bytes, secrets redacted.",
    }),
    summary: |_| {
        "the command line as Go serves it: arguments separated by NUL bytes, secrets redacted; text/plain".into()
    },
};

/// `GET /debug/pprof/threadcreate`.
pub(crate) static THREADCREATE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/threadcreate",
    access: Access::Scope(Scope::Read),
    go: Some(GoIndex {
        link: "threadcreate?debug=1",
        text: "The OS threads of the process (from /proc; their creation stacks are not recorded).",
    }),
    summary: |_| {
        "Go's threadcreate, as a list: `threadcreate profile: total N`, then tid, state and name of every OS thread from /proc (?debug=1|2, both text; creation stacks are not recorded)".into()
    },
};

/// The process probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "process",
    feature: None,
    routes: &[&PROCESS, &CMDLINE, &THREADCREATE],
    bundle_files: &["process.json"],
};

/// The `/debug/process` body.
#[derive(Debug, Serialize)]
struct ProcessReport {
    /// The service's name.
    service: Arc<str>,
    /// Build facts the host supplied (`git_sha`, `version`, …).
    build: Arc<BTreeMap<String, String>>,
    /// prodbg's version.
    prodbg_version: &'static str,
    /// The process as `/proc` sees it.
    process: ProcessInfo,
}

/// The process probe: `/proc/self`, the host's build facts.
#[derive(Debug)]
pub(crate) struct Process {
    cx: ProbeContext,
    build: Arc<BTreeMap<String, String>>,
}

impl Process {
    /// Reports `build` alongside the process's own facts.
    pub(crate) fn new(cx: &ProbeContext, build: BTreeMap<String, String>) -> Process {
        Process {
            cx: cx.clone(),
            build: Arc::new(build),
        }
    }

    async fn report(
        service: Arc<str>,
        build: Arc<BTreeMap<String, String>>,
    ) -> Result<ProcessReport, ApiError> {
        let process = blocking("the process probe", info).await?;
        Ok(ProcessReport {
            service,
            build,
            prodbg_version: env!("CARGO_PKG_VERSION"),
            process,
        })
    }
}

type ProcessState = (Arc<str>, Arc<BTreeMap<String, String>>);

async fn process(
    State((service, build)): State<ProcessState>,
    RawQuery(q): RawQuery,
) -> Result<Json<ProcessReport>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(Process::report(service, build).await?))
}

/// Go's text content type.
const TEXT: &str = "text/plain; charset=utf-8";

/// `/debug/pprof/cmdline`: the arguments joined by NUL bytes (Go's `strings.Join(os.Args,
/// "\x00")`), each redacted as `/debug/process` shows it.
async fn go_cmdline(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let args = blocking("the process probe", cmdline).await?;
    Ok(([(header::CONTENT_TYPE, TEXT)], args.join("\0")).into_response())
}

/// `/debug/pprof/threadcreate?debug=1`: Go's header line, then one line per OS thread.
async fn go_threadcreate(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["debug"])?;
    params.choice("debug", &["1", "2"], "1")?;
    let list = blocking("the process probe", threads).await?;
    let mut text = format!(
        "threadcreate profile: total {}\n# the OS threads of pid {} from /proc/self/task (prodbg records no thread-creation stacks)\n# tid\tstate\tname\n",
        list.len(),
        std::process::id()
    );
    for t in &list {
        text.push_str(&format!("{}\t{}\t{}\n", t.tid, t.state, t.name));
    }
    Ok(([(header::CONTENT_TYPE, TEXT)], text).into_response())
}

impl Probe for Process {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let state: ProcessState = (self.cx.service_name.clone(), self.build.clone());
        let l = &self.cx.limits;
        vec![
            PROCESS.serve(l, process, state),
            CMDLINE.serve(l, go_cmdline, ()),
            THREADCREATE.serve(l, go_threadcreate, ()),
        ]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(ProcessCollector))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        let (service, build) = (self.cx.service_name.clone(), self.build.clone());
        vec![BundlePart::new("process.json", async move {
            let report = Process::report(service, build)
                .await
                .map_err(|e| e.message)?;
            serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())
        })]
    }

    fn vitals(&self, out: &mut Vitals) {
        if let Some(cpu) = cpu_seconds() {
            out.counter("cpu", Unit::Cores, cpu);
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let s = stats();
        let mut g = Glance::default()
            .figure(
                Figure::new(
                    "threads",
                    Card::PROCESS,
                    "threads",
                    Value::Count(Some(s.threads)),
                )
                .counts(&THREADCREATE),
            )
            .figure(Figure::new(
                "fds",
                Card::PROCESS,
                "open fds",
                Value::Count(Some(s.open_fds)),
            ))
            .figure(Figure::new(
                "pid",
                Card::PROCESS,
                "pid",
                Value::Count(Some(u64::from(s.pid))),
            ))
            .figure(Figure::new(
                "uptime",
                Card::PROCESS,
                "uptime",
                Value::Seconds(Some(info::uptime_seconds(&s))),
            ));
        if let Some(note) = debug_info_missing() {
            g = g.figure(
                Figure::new(
                    "debug-info",
                    Card::PROCESS,
                    "debug info",
                    Value::Text(note.into()),
                )
                .bad(true),
            );
        }
        ready(g)
    }
}

/// The note a profile carries when the executable has no debug info (`None` with it, or in a
/// build without the stack-taking features).
fn debug_info_missing() -> Option<&'static str> {
    #[cfg(stacks)]
    return crate::stack::debug_info::missing_note();
    #[cfg(not(stacks))]
    None
}

/// The standard `process_*` series (the names the Prometheus client libraries use).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let p = stats();
        let mut f = Families::new(encoder);
        f.counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds,
        )?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                p.threads as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            f.gauge(name, help, value)?;
        }
        Ok(())
    }
}
