//! `GET,POST /debug/incidents`, `GET,DELETE /debug/incidents/{id}`: the incidents on disk
//! (`crate::incidents`), listed, downloaded, taken now and deleted. This file is the probe's
//! face; the store, the capture worker, the panic hook and the crash handler are the core.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use crate::encode::prometheus::Families;
use crate::incidents::meta::{valid_id, ID_FORMAT};
use crate::incidents::{CaptureError, IncidentLimits, Incidents, Kind, Meta, Skipped};
use crate::seam::{
    ready, Access, Action, ApiError, AuditDetails, BoxFuture, Card, FieldKind, Figure, Glance,
    Params, Probe, ProbeContext, ProbeSpec, Route, RouteSpec, Row, Shows, Table, Value,
};
use crate::security::Scope;

/// The longest `reason` a manual capture takes, bytes.
const MAX_REASON_BYTES: usize = 200;
/// Rows of the console's table.
const CONSOLE_ROWS: usize = 10;
/// What an unconfigured directory answers.
const NO_DIR: &str = "no incident directory is configured: set one with .incident_dir(\"/var/lib/svc/prodbg-incidents\") or PRODBG_INCIDENT_DIR (see docs/incidents.md)";

/// `GET /debug/incidents`.
pub(crate) static LIST: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/incidents",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        "the incidents on disk, newest first (trigger, panic, crash, manual): id, kind, reason, time, size, files; also those from before a restart".into()
    },
};

/// `POST /debug/incidents`.
pub(crate) static TAKE: RouteSpec = RouteSpec {
    method: Method::POST,
    path: "/debug/incidents",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        format!(
            "take an incident now (kind manual): the flight recorder's last minutes, fresh CPU and wall profiles over ?seconds=1..60 (default the configured 5), every probe's state; &reason= (at most {MAX_REASON_BYTES} bytes); 201 with its id once on disk, 409 while another is being taken"
        )
    },
};

/// `GET /debug/incidents/{id}`.
pub(crate) static DOWNLOAD: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/incidents/{id}",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| "one incident as tar.gz (meta.json, manifest.json and its files)".into(),
};

/// `DELETE /debug/incidents/{id}`.
pub(crate) static DELETE: RouteSpec = RouteSpec {
    method: Method::DELETE,
    path: "/debug/incidents/{id}",
    access: Access::Scope(Scope::Admin),
    go: None,
    summary: |_| "delete one incident from the directory".into(),
};

/// The incidents probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "incidents",
    feature: None,
    routes: &[&LIST, &TAKE, &DOWNLOAD, &DELETE],
    bundle_files: &[],
};

type St = State<Option<Arc<Incidents>>>;

fn configured(s: &Option<Arc<Incidents>>) -> Result<&Arc<Incidents>, ApiError> {
    s.as_ref().ok_or_else(|| ApiError::unavailable(NO_DIR))
}

/// The `GET /debug/incidents` answer.
#[derive(Debug, Serialize)]
struct Listing {
    /// The directory.
    dir: String,
    /// Incidents kept at most (count).
    max_count: usize,
    /// Bytes kept at most.
    max_bytes: u64,
    /// Automatic captures per hour at most (count).
    max_per_hour: u32,
    /// Bytes held now.
    bytes: u64,
    /// Whether a capture is running now.
    capturing: bool,
    /// Captures skipped because another was running, since start (count).
    skipped_busy: u64,
    /// Automatic captures skipped past the hourly cap, since start (count).
    skipped_hourly_cap: u64,
    /// Captures that could not be written (disk full …), since start (count).
    failed: u64,
    /// The incidents, newest first.
    incidents: Vec<Meta>,
}

fn listing(inc: &Incidents) -> Listing {
    use std::sync::atomic::Ordering::Relaxed;
    let limits: &IncidentLimits = inc.store().limits();
    let incidents = inc.store().list();
    let c = inc.counters();
    Listing {
        dir: inc.store().dir().display().to_string(),
        max_count: limits.max_count,
        max_bytes: limits.max_bytes,
        max_per_hour: limits.max_per_hour,
        bytes: incidents.iter().map(|m| m.size).sum(),
        capturing: inc.busy(),
        skipped_busy: c.skipped_busy.load(Relaxed),
        skipped_hourly_cap: c.skipped_cap.load(Relaxed),
        failed: c.failed.load(Relaxed),
        incidents,
    }
}

/// The list, newest first.
async fn list(State(s): St, RawQuery(q): RawQuery) -> Result<Json<Listing>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(listing(configured(&s)?)))
}

/// Takes a manual incident and answers once it is on disk.
async fn take(State(s): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["seconds", "reason"])?;
    // 0: not given (the range starts at 1).
    let seconds = params.u64_in("seconds", 1..=60, 0)?;
    let reason = params
        .text("reason", MAX_REASON_BYTES)?
        .filter(|r| !r.trim().is_empty())
        .unwrap_or("taken on request")
        .to_string();
    let inc = Arc::clone(configured(&s)?);
    let seconds = match seconds {
        0 => inc.store().limits().profile_seconds,
        s => s,
    };
    let window = Duration::from_secs(seconds);
    let timeout = window + Duration::from_secs(50);
    let waiting = Arc::clone(&inc);
    let result = tokio::task::spawn_blocking(move || {
        waiting.capture_wait(Kind::Manual, reason, None, Some(window), timeout)
    })
    .await
    .map_err(|e| ApiError::internal(format!("taking the incident failed: {e}")))?;
    match result {
        Ok(meta) => Ok((
            StatusCode::CREATED,
            AuditDetails::new()
                .with("incident", meta.id.clone())
                .with("bytes", meta.size),
            Json(meta),
        )
            .into_response()),
        Err(e @ CaptureError::Skipped(Skipped::Busy)) => Err(ApiError::conflict(format!(
            "{e}; try again in a few seconds"
        ))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// A checked id, or the 400 / 404 saying why not.
fn checked<'a>(inc: &Incidents, id: &'a str) -> Result<&'a str, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::bad_parameter(format!(
            "{ID_FORMAT}; got {} bytes that are not one",
            id.len()
        )));
    }
    if inc.store().get(id).is_none() {
        return Err(ApiError::not_found(format!(
            "no incident {id} (evicted or deleted?): GET /debug/incidents lists them"
        )));
    }
    Ok(id)
}

/// The archive of one incident.
async fn download(
    State(s): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let inc = Arc::clone(configured(&s)?);
    let id = checked(&inc, &id)?.to_string();
    let name = format!("{}-incident-{id}.tar.gz", inc.service());
    let reader = Arc::clone(&inc);
    let bytes = crate::seam::blocking("reading the incident", move || reader.store().read(&id))
        .await?
        .map_err(|e| ApiError::not_found(format!("the incident could not be read: {e}")))?;
    let mut response = ([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        crate::seam::download::attachment(&name),
    );
    Ok(response)
}

/// Deletes one incident.
async fn delete(
    State(s): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let inc = configured(&s)?;
    let id = checked(inc, &id)?;
    let meta = inc.store().get(id);
    match inc.store().delete(id) {
        Ok(true) => Ok((
            AuditDetails::new()
                .with("deleted", id)
                .with("kind", meta.map_or("", |m| m.kind.as_str())),
            Json(serde_json::json!({ "deleted": id })),
        )
            .into_response()),
        Ok(false) => Err(ApiError::not_found(format!("no incident {id}"))),
        Err(e) => Err(ApiError::internal(format!("deleting {id} failed: {e}"))),
    }
}

/// The incident directory, when the host set one.
#[derive(Debug)]
pub(crate) struct IncidentsProbe {
    cx: ProbeContext,
    incidents: Option<Arc<Incidents>>,
}

impl IncidentsProbe {
    /// Serves `incidents`; without it every route answers 503 saying how to set a directory.
    pub(crate) fn new(cx: &ProbeContext, incidents: Option<Arc<Incidents>>) -> IncidentsProbe {
        IncidentsProbe {
            cx: cx.clone(),
            incidents,
        }
    }
}

impl Probe for IncidentsProbe {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let s = self.incidents.clone();
        vec![
            LIST.serve(&self.cx.limits, list, s.clone()),
            TAKE.serve(&self.cx.limits, take, s.clone()),
            DOWNLOAD.serve(&self.cx.limits, download, s.clone()),
            DELETE.serve(&self.cx.limits, delete, s),
        ]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        self.incidents
            .clone()
            .map(|i| Box::new(IncidentsCollector(i)) as Box<dyn Collector>)
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        const CARD: Card = Card::new("Incidents", 45, true);
        let Some(inc) = &self.incidents else {
            return ready(
                Glance::default().figure(
                    Figure::new("incidents", CARD, "incidents on disk", Value::Count(None))
                        .note("no incident directory: set PRODBG_INCIDENT_DIR"),
                ),
            );
        };
        let all = inc.store().list();
        let bytes: u64 = all.iter().map(|m| m.size).sum();
        let rows = all
            .iter()
            .take(CONSOLE_ROWS)
            .map(|m| Row {
                cells: vec![
                    Value::Text(m.time.clone()),
                    Value::Text(m.kind.as_str().to_string()),
                    Value::Text(m.reason.clone()),
                    Value::Bytes(Some(m.size)),
                    Value::Text(m.id.clone()),
                ],
                bad: matches!(m.kind, Kind::Crash | Kind::Panic),
            })
            .collect();
        let crashes = all.iter().filter(|m| m.kind == Kind::Crash).count();
        ready(
            Glance::default()
                .figure(
                    Figure::new(
                        "incidents",
                        CARD,
                        "incidents on disk",
                        Value::Count(Some(all.len() as u64)),
                    )
                    .bad(crashes > 0)
                    .note(format!(
                        "{} of {}, {crashes} crashes",
                        human_bytes(bytes),
                        human_bytes(inc.store().limits().max_bytes)
                    ))
                    .link("incidents", "list"),
                )
                .table(Table {
                    id: "incidents-list",
                    card: CARD,
                    columns: vec!["time", "kind", "reason", "size", "id (GET incidents/<id>)"],
                    rows,
                    empty: "none yet".into(),
                })
                .action(
                    Action::new(
                        "incident-take",
                        "incident-take-button",
                        "Take an incident now",
                        &TAKE,
                        Shows::Status("incident {id} written ({size} bytes)"),
                    )
                    .field(
                        "seconds",
                        "profile seconds",
                        FieldKind::Seconds {
                            default: inc.store().limits().profile_seconds,
                            max: 60,
                        },
                    )
                    .field(
                        "reason",
                        "reason",
                        FieldKind::Text {
                            placeholder: "why (optional)",
                            default: "",
                            max_len: MAX_REASON_BYTES,
                            required: false,
                        },
                    ),
                ),
        )
    }
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// `prodbg_incidents_total{trigger}`, skips, failures, what is held.
#[derive(Debug)]
struct IncidentsCollector(Arc<Incidents>);

impl Collector for IncidentsCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.0.counters();
        let taken: Vec<(Vec<(String, String)>, f64)> = c
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, n)| (vec![("trigger".to_string(), k.clone())], *n as f64))
            .collect();
        let (held, bytes) = self.0.store().usage();
        let mut f = Families::new(encoder);
        f.counters(
            "prodbg_incidents",
            "incidents written to the incident directory, by trigger (a rule's name, panic, crash or manual)",
            taken,
        )?;
        f.counters(
            "prodbg_incidents_skipped",
            "incident captures not taken, by reason (busy: another was running; hourly_cap; write_failed: disk full or directory gone)",
            [
                ("busy", c.skipped_busy.load(Relaxed)),
                ("hourly_cap", c.skipped_cap.load(Relaxed)),
                ("write_failed", c.failed.load(Relaxed)),
            ]
            .into_iter()
            .map(|(r, n)| (vec![("reason".to_string(), r.to_string())], n as f64)),
        )?;
        f.gauge(
            "prodbg_incidents_stored",
            "incidents in the incident directory",
            held as f64,
        )?;
        f.gauge(
            "prodbg_incidents_stored_bytes",
            "bytes of the incidents in the incident directory",
            bytes as f64,
        )
    }
}
