//! [`Incidents`]: the store plus the one way an incident is taken, [`Incidents::capture`].
//!
//! A capture is handed to a worker thread (`prodbg-incidents`, with its own small Tokio
//! runtime), so the caller — a trigger's check, a panic hook, a request — never waits for it
//! unless it asks to ([`Incidents::capture_wait`]). One capture runs at a time; another asked
//! for meanwhile is skipped and counted, and so is an automatic one past the cap per hour.
//! The worker gathers the parts through the server's [`Gather`], writes the archive, then logs
//! a `WARN` event (target `prodbg::incidents`), counts it for `prodbg_incidents_total` and lets
//! the server write its audit record.
//!
//! # Plugging in a trigger engine
//!
//! A rule (CPU share, RSS against the cgroup limit, a blocked Tokio worker, a saturated pool,
//! an error rate …) keeps its own warm-up and cooldown, reads what it watches (the probes'
//! vitals, as the timeline does each second), and on crossing calls
//! `incidents.capture(Kind::Trigger, reason, Some(detail))` with `detail` a JSON object holding
//! `rule` (its name: the `trigger` label of `prodbg_incidents_total`), its thresholds and the
//! values seen. The cap per hour, one-at-a-time, `trigger.json`, the audit record and the
//! `WARN` event are handled here; a skipped capture is counted, and the rule should start its
//! cooldown either way. `AdminHandle::trigger_incident` is the same call for a host's own rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::meta::{new_id, Kind, Meta};
use super::store::Store;
use super::IncidentLimits;
use crate::seam::BoxFuture;

/// An incident's parts: `(file, how long its part took, bytes or why not)` each.
pub(crate) type Parts = Vec<(String, Duration, Result<Vec<u8>, String>)>;

/// What the server provides the worker: the parts of an incident, and what to do once one is
/// on disk.
pub(crate) trait Gather: Send + Sync + 'static {
    /// Every part as `(file, bytes or why not)`; `window` is the fresh profiles' length, `None`
    /// to leave them out (a process about to end cannot wait for them).
    fn gather(&self, window: Option<Duration>) -> BoxFuture<Parts>;

    /// Called once `meta` is on disk (the audit record).
    fn written(&self, meta: &Meta);
}

/// Why a capture was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// Another capture is running.
    Busy,
    /// The automatic captures of this hour reached `max_per_hour`.
    HourlyCap(u32),
    /// The worker is gone (the server is shutting down).
    Closed,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::Busy => f.write_str("another incident is being captured (one at a time)"),
            Skipped::HourlyCap(n) => write!(
                f,
                "{n} automatic incidents were already captured this hour (IncidentLimits::max_per_hour)"
            ),
            Skipped::Closed => f.write_str("the incident worker has stopped"),
        }
    }
}

/// Why [`Incidents::capture_wait`] has no incident to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CaptureError {
    /// Not taken.
    Skipped(Skipped),
    /// Taken, but not written (or not within the time waited).
    Failed(String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Skipped(s) => s.fmt(f),
            CaptureError::Failed(e) => f.write_str(e),
        }
    }
}

/// Counters shown on `/metrics` and the console.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Incidents written, by trigger label (`manual`, `panic`, `crash` or the rule's name).
    pub(crate) taken: Mutex<BTreeMap<String, u64>>,
    /// Captures skipped because one was running.
    pub(crate) skipped_busy: AtomicU64,
    /// Automatic captures skipped past the hourly cap.
    pub(crate) skipped_cap: AtomicU64,
    /// Captures whose archive could not be written (disk full, directory gone).
    pub(crate) failed: AtomicU64,
    /// Incidents evicted to stay within the bounds.
    pub(crate) evicted: AtomicU64,
}

struct Job {
    kind: Kind,
    reason: String,
    detail: Option<Value>,
    window: Option<Duration>,
    done: Option<SyncSender<Result<Meta, String>>>,
}

struct Inner {
    store: Store,
    service: Arc<str>,
    busy: AtomicBool,
    /// `(hour since the epoch, automatic captures accepted in it)`.
    hour: Mutex<(u64, u32)>,
    gather: OnceLock<Weak<dyn Gather>>,
    counters: Counters,
}

/// The incident directory and its capture worker.
pub(crate) struct Incidents {
    inner: Arc<Inner>,
    tx: SyncSender<Job>,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incidents")
            .field("dir", &self.inner.store.dir())
            .finish_non_exhaustive()
    }
}

/// `trigger.json`: what a trigger saw.
#[derive(Debug, Serialize)]
struct TriggerFile<'a> {
    reason: &'a str,
    #[serde(serialize_with = "crate::encode::time::rfc3339")]
    time: SystemTime,
    detail: &'a Value,
}

/// One line of the incident's `manifest.json`.
#[derive(Debug, Serialize)]
struct ManifestPart {
    file: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    bytes: usize,
    /// How long its part took, from the capture's start (parts run at once).
    duration_ms: f64,
}

impl Incidents {
    /// Opens (creates) `dir` and starts the worker thread. An unusable directory is an error
    /// naming it.
    pub(crate) fn open(
        dir: &std::path::Path,
        limits: IncidentLimits,
        service: Arc<str>,
    ) -> Result<Arc<Incidents>, String> {
        limits.check()?;
        let store = Store::open(dir, limits)?;
        let inner = Arc::new(Inner {
            store,
            service,
            busy: AtomicBool::new(false),
            hour: Mutex::new((0, 0)),
            gather: OnceLock::new(),
            counters: Counters::default(),
        });
        {
            let mut taken = inner
                .counters
                .taken
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for k in [Kind::Manual, Kind::Panic, Kind::Crash] {
                taken.insert(k.as_str().to_string(), 0);
            }
        }
        let (tx, rx) = sync_channel::<Job>(1);
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("prodbg-incidents".into())
            .spawn(move || run(worker, rx))
            .map_err(|e| format!("cannot start the incident thread: {e}"))?;
        Ok(Arc::new(Incidents { inner, tx }))
    }

    /// Hands the worker what gathers the parts (the server, once built).
    pub(crate) fn set_gather(&self, gather: Weak<dyn Gather>) {
        let _ = self.inner.gather.set(gather);
    }

    /// The store (list, read, delete).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether a capture is running now.
    pub(crate) fn busy(&self) -> bool {
        self.inner.busy.load(Ordering::Acquire)
    }

    /// The counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The service's name.
    pub(crate) fn service(&self) -> &str {
        &self.inner.service
    }

    /// Asks for an incident of `kind` because of `reason`, with the trigger's `detail` (written
    /// as `trigger.json`). Returns at once: the worker gathers and writes it. Skipped (and
    /// counted) while another capture runs, or for an automatic kind past the hourly cap.
    pub(crate) fn capture(
        &self,
        kind: Kind,
        reason: impl Into<String>,
        detail: Option<Value>,
    ) -> Result<(), Skipped> {
        let window = Some(self.inner.store.limits().window());
        self.submit(kind, reason.into(), detail, window, None)
    }

    /// [`capture`](Self::capture), then waits up to `timeout` for the incident to be on disk.
    /// `window` is the fresh profiles' length (`None`: none). Blocks the calling thread: from
    /// async code, call it on a blocking thread.
    pub(crate) fn capture_wait(
        &self,
        kind: Kind,
        reason: impl Into<String>,
        detail: Option<Value>,
        window: Option<Duration>,
        timeout: Duration,
    ) -> Result<Meta, CaptureError> {
        let (done, rx) = sync_channel(1);
        self.submit(kind, reason.into(), detail, window, Some(done))
            .map_err(CaptureError::Skipped)?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(CaptureError::Failed),
            Err(_) => Err(CaptureError::Failed(format!(
                "the incident was not written within {} s",
                timeout.as_secs()
            ))),
        }
    }

    fn submit(
        &self,
        kind: Kind,
        reason: String,
        detail: Option<Value>,
        window: Option<Duration>,
        done: Option<SyncSender<Result<Meta, String>>>,
    ) -> Result<(), Skipped> {
        let c = &self.inner.counters;
        if self
            .inner
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            c.skipped_busy.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "prodbg::incidents", kind = kind.as_str(), reason = %reason, "incident skipped: another capture is running");
            return Err(Skipped::Busy);
        }
        if matches!(kind, Kind::Trigger | Kind::Panic) {
            let max = self.inner.store.limits().max_per_hour;
            let now_hour = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 3600);
            let mut h = self.inner.hour.lock().unwrap_or_else(|e| e.into_inner());
            if h.0 != now_hour {
                *h = (now_hour, 0);
            }
            if h.1 >= max {
                drop(h);
                self.inner.busy.store(false, Ordering::Release);
                c.skipped_cap.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "prodbg::incidents", kind = kind.as_str(), reason = %reason, max, "incident skipped: the hourly cap is reached");
                return Err(Skipped::HourlyCap(max));
            }
            h.1 += 1;
        }
        let job = Job {
            kind,
            reason,
            detail,
            window,
            done,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner.busy.store(false, Ordering::Release);
                match e {
                    TrySendError::Full(_) => {
                        c.skipped_busy.fetch_add(1, Ordering::Relaxed);
                        Err(Skipped::Busy)
                    }
                    TrySendError::Disconnected(_) => Err(Skipped::Closed),
                }
            }
        }
    }

    /// Writes an incident whose files are already at hand (a crash report from the previous
    /// run), on the calling thread; not capped.
    pub(crate) fn record(
        &self,
        kind: Kind,
        reason: String,
        time: SystemTime,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Meta, String> {
        let meta = Meta {
            id: new_id(kind, time),
            kind,
            reason,
            time: crate::encode::time::format(time),
            size: 0,
            files: Vec::new(),
            pid: std::process::id(),
            service: self.inner.service.to_string(),
        };
        let written = finish(&self.inner, meta, files)?;
        count(&self.inner, kind.as_str().to_string());
        if let Some(g) = self.inner.gather.get().and_then(Weak::upgrade) {
            g.written(&written);
        }
        Ok(written)
    }
}

/// The worker: one job at a time until every [`Incidents`] is dropped; between jobs it keeps
/// the crash handler's view of the threads' stacks fresh.
fn run(inner: Arc<Inner>, rx: Receiver<Job>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("prodbg-incidents-blocking")
        .max_blocking_threads(2)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(target: "prodbg::incidents", error = %e, "cannot build the incident runtime: no incident will be captured");
            return;
        }
    };
    loop {
        let job = match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                #[cfg(any(feature = "cpu", feature = "threads"))]
                super::crash::refresh();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = take(&inner, &runtime, &job);
        inner.busy.store(false, Ordering::Release);
        if let Some(done) = job.done {
            let _ = done.try_send(result);
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}

fn take(inner: &Inner, runtime: &tokio::runtime::Runtime, job: &Job) -> Result<Meta, String> {
    let time = SystemTime::now();
    let gather = inner.gather.get().and_then(Weak::upgrade);
    let mut parts = match &gather {
        Some(g) => runtime.block_on(g.gather(job.window)),
        None => Vec::new(),
    };
    if let Some(detail) = &job.detail {
        let t = TriggerFile {
            reason: &job.reason,
            time,
            detail,
        };
        parts.push((
            "trigger.json".to_string(),
            Duration::ZERO,
            serde_json::to_vec_pretty(&t).map_err(|e| e.to_string()),
        ));
    }
    let manifest: Vec<ManifestPart> = parts
        .iter()
        .map(|(file, took, r)| ManifestPart {
            file: file.clone(),
            ok: r.is_ok(),
            error: r.as_ref().err().cloned(),
            bytes: r.as_ref().map_or(0, Vec::len),
            duration_ms: took.as_secs_f64() * 1e3,
        })
        .collect();
    let mut files = vec![(
        "manifest.json".to_string(),
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )];
    files.extend(
        parts
            .into_iter()
            .filter_map(|(f, _, r)| r.ok().map(|b| (f, b))),
    );
    let meta = Meta {
        id: new_id(job.kind, time),
        kind: job.kind,
        reason: job.reason.clone(),
        time: crate::encode::time::format(time),
        size: 0,
        files: Vec::new(),
        pid: std::process::id(),
        service: inner.service.to_string(),
    };
    let label = trigger_label(job.kind, job.detail.as_ref());
    let written = finish(inner, meta, files);
    if let Ok(m) = &written {
        count(inner, label);
        if let Some(g) = &gather {
            g.written(m);
        }
    }
    written
}

/// Counts one incident written under `label`.
fn count(inner: &Inner, label: String) {
    *inner
        .counters
        .taken
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(label)
        .or_insert(0) += 1;
}

/// Writes the archive and logs the outcome; `taken` is counted by the caller.
fn finish(inner: &Inner, meta: Meta, files: Vec<(String, Vec<u8>)>) -> Result<Meta, String> {
    let kind = meta.kind;
    match inner.store.write(meta, &files) {
        Ok((m, evicted)) => {
            inner
                .counters
                .evicted
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            tracing::warn!(target: "prodbg::incidents", id = %m.id, kind = kind.as_str(), reason = %m.reason, bytes = m.size, dir = %inner.store.dir().display(), "incident captured");
            Ok(m)
        }
        Err(e) => {
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "prodbg::incidents", kind = kind.as_str(), error = %e, dir = %inner.store.dir().display(), "incident not written: skipped");
            Err(format!("the incident could not be written: {e}"))
        }
    }
}

/// The `trigger` label of `prodbg_incidents_total`: the rule's name for a trigger (its
/// `detail.rule`), else the kind.
fn trigger_label(kind: Kind, detail: Option<&Value>) -> String {
    match (
        kind,
        detail.and_then(|d| d.get("rule")).and_then(Value::as_str),
    ) {
        (Kind::Trigger, Some(rule)) => rule.chars().take(64).collect(),
        _ => kind.as_str().to_string(),
    }
}
