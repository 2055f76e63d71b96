//! The public face of the audit log: options, the handle, and the cancel-safe request guard.
//! The writing itself is in `writer.rs`, behind the queue and thread of `queue.rs`.

#[cfg(test)]
use std::io;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chain::Chainer;
use super::fold::Folding;
use super::key::AuditKey;
pub(crate) use super::options::AuditError;
use super::options::AuditStats;
use super::options::{FsyncPolicy, Rotation};
use super::queue::{Job, Owner, RECORD_WAIT};
use super::record::{now_ts, AuditEntry, AuditRecord, Checkpoint, Outcome};
#[cfg(test)]
pub(crate) use super::writer::Fault;
use super::writer::{Config, Inner};
use crate::security::redact::redact_query;

const MAX_PATH: usize = 512;
const MAX_QUERY: usize = 512;

#[derive(Debug)]
enum KeyChoice {
    FromEnv,
    Given(AuditKey),
    Unkeyed,
}

/// Options for [`AuditLog`]; see each method for its default.
#[derive(Debug)]
pub(crate) struct AuditLogBuilder {
    path: Option<PathBuf>,
    key: KeyChoice,
    fsync: FsyncPolicy,
    rotation: Rotation,
    checkpoint_records: u64,
    checkpoint_interval: Duration,
    fold_interval: Duration,
    reopen_check: Duration,
    background: bool,
    events: bool,
    sighup: bool,
}

impl AuditLogBuilder {
    /// The audit file (created with mode 0600). Default: none — records go to `tracing` only.
    pub(crate) fn file(mut self, path: impl Into<PathBuf>) -> AuditLogBuilder {
        self.path = Some(path.into());
        self
    }

    /// The chain key. Default: [`AuditKey::from_env`] (`PRODBG_AUDIT_KEY`), else unkeyed.
    pub(crate) fn key(mut self, key: AuditKey) -> AuditLogBuilder {
        self.key = KeyChoice::Given(key);
        self
    }

    /// A plain SHA-256 chain even if `PRODBG_AUDIT_KEY` is set (detects accidents only).
    #[cfg(test)]
    pub(crate) fn unkeyed(mut self) -> AuditLogBuilder {
        self.key = KeyChoice::Unkeyed;
        self
    }

    /// Default: [`FsyncPolicy::Every`] 1 s.
    pub(crate) fn fsync(mut self, policy: FsyncPolicy) -> AuditLogBuilder {
        self.fsync = policy;
        self
    }

    /// Default: [`Rotation::Size`] 64 MiB × 8.
    pub(crate) fn rotation(mut self, rotation: Rotation) -> AuditLogBuilder {
        self.rotation = rotation;
        self
    }

    /// A checkpoint every `records` records (0: never by count) and every `interval` if anything
    /// was written since the last. Default: 1000 records, 60 s.
    #[cfg(test)]
    pub(crate) fn checkpoint_every(mut self, records: u64, interval: Duration) -> AuditLogBuilder {
        self.checkpoint_records = records;
        self.checkpoint_interval = interval;
        self
    }

    /// How often folded requests are written as summaries. Default: 5 s.
    #[cfg(test)]
    pub(crate) fn fold_interval(mut self, interval: Duration) -> AuditLogBuilder {
        self.fold_interval = interval;
        self
    }

    /// How often the path is compared (device + inode) with the open file, to follow a
    /// rename by logrotate. Default: 1 s.
    #[cfg(test)]
    pub(crate) fn reopen_check_interval(mut self, interval: Duration) -> AuditLogBuilder {
        self.reopen_check = interval;
        self
    }

    /// Whether a thread (`prodbg-audit`) does the timed work: checkpoints, summaries, fsync,
    /// reopen checks, gap retries. Without it that work happens on the next append, or when
    /// the host calls [`AuditLog::tick`]. Default: on (not for [`AuditLog::in_memory`]).
    pub(crate) fn background_thread(mut self, on: bool) -> AuditLogBuilder {
        self.background = on;
        self
    }

    /// Whether every record and checkpoint is also a `tracing` event with target
    /// [`AUDIT_TARGET`]. Default: on.
    #[cfg(test)]
    pub(crate) fn emit_events(mut self, on: bool) -> AuditLogBuilder {
        self.events = on;
        self
    }

    /// Opt-in: install a SIGHUP handler that makes the background thread reopen the file
    /// (logrotate's `postrotate kill -HUP`). It only bumps an atomic counter. Refused if the
    /// process already has a SIGHUP handler (it would be replaced): call [`AuditLog::reopen`]
    /// from that handler instead. Default: off.
    pub(crate) fn reopen_on_sighup(mut self, on: bool) -> AuditLogBuilder {
        self.sighup = on;
        self
    }

    /// Opens the file (continuing the chain from its last good record, or from `<file>.1`'s
    /// when the file is new; refusing a symbolic link or a file others own, write or read),
    /// writes a `resumed` record if its tail was torn, and starts the background thread.
    pub(crate) fn build(mut self) -> Result<AuditLog, AuditError> {
        let key = match std::mem::replace(&mut self.key, KeyChoice::Unkeyed) {
            KeyChoice::FromEnv => AuditKey::from_env()?,
            KeyChoice::Given(k) => Some(k),
            KeyChoice::Unkeyed => None,
        };
        let chainer = Chainer::new(key.as_ref());
        drop(key);
        if self.sighup {
            super::sighup::install().map_err(AuditError::Sighup)?;
        }
        let inner = Inner::open(self.config(), chainer)?;
        Ok(AuditLog {
            owner: Arc::new(Owner::start(inner)?),
        })
    }

    fn config(self) -> Config {
        Config {
            path: self.path,
            fsync: self.fsync,
            rotation: self.rotation,
            checkpoint_records: self.checkpoint_records,
            checkpoint_interval: self.checkpoint_interval,
            fold_interval: self.fold_interval,
            reopen_check: self.reopen_check,
            background: self.background,
            events: self.events,
        }
    }
}

/// The audit log: a cheap-to-clone handle. The last handle dropped writes what is queued,
/// flushes summaries, writes a final checkpoint and syncs (unless [`FsyncPolicy::Never`]),
/// waiting at most 5 s for the audit thread.
#[derive(Clone)]
pub(crate) struct AuditLog {
    owner: Arc<Owner>,
}

/// A full record on its way to the file: awaiting it (the guard does, at most
/// [`RECORD_WAIT`]) waits until the audit thread wrote it, without blocking the thread that
/// awaits.
#[derive(Debug)]
pub(crate) struct Written(tokio::sync::oneshot::Receiver<()>);

impl Written {
    /// Waits until the record was written (or lost), at most [`RECORD_WAIT`].
    pub(crate) async fn wait(self) {
        let _ = tokio::time::timeout(RECORD_WAIT, self.0).await;
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("file", &self.owner.inner.cfg.path)
            .field("keyed", &self.owner.inner.chainer.keyed())
            .field("records", &self.owner.inner.head().records)
            .field("fsync", &self.owner.inner.cfg.fsync)
            .field("rotation", &self.owner.inner.cfg.rotation)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Options, starting from the defaults.
    pub(crate) fn builder() -> AuditLogBuilder {
        AuditLogBuilder {
            path: None,
            key: KeyChoice::FromEnv,
            fsync: FsyncPolicy::default(),
            rotation: Rotation::default(),
            checkpoint_records: 1000,
            checkpoint_interval: Duration::from_secs(60),
            fold_interval: Duration::from_secs(5),
            reopen_check: Duration::from_secs(1),
            background: true,
            events: true,
            sighup: false,
        }
    }

    /// A log without a file: records go to `tracing` only, chained (unkeyed) in memory; no
    /// background thread.
    pub(crate) fn in_memory() -> AuditLog {
        let cfg = AuditLog::builder().background_thread(false).config();
        let inner = Inner::in_memory(cfg, Chainer::new(None));
        AuditLog {
            owner: Arc::new(Owner::start(inner).expect("no thread to start without one")),
        }
    }

    /// Records one request in full. Shorthand for `record(rec, Folding::Never)`.
    #[cfg(test)]
    pub(crate) fn append(&self, rec: AuditRecord) {
        let _ = self.record(rec, Folding::Never);
    }

    /// Records one request, folded or not. Never fails nor blocks the caller: a failed or
    /// dropped write is counted and later written as a `gap` record. With an audit thread, a
    /// full record is queued and the returned [`Written`] tells when it is in the file.
    pub(crate) fn record(&self, mut rec: AuditRecord, folding: Folding) -> Option<Written> {
        if rec.ts.is_empty() {
            rec.ts = now_ts();
        }
        clip(&mut rec.path, MAX_PATH);
        if let Some(q) = rec.query.as_mut() {
            clip(q, MAX_QUERY);
            if let std::borrow::Cow::Owned(r) = redact_query(q) {
                *q = r;
            }
        }
        let inner = &self.owner.inner;
        let written = match inner.fold(rec, folding) {
            Err(early) => {
                for s in early {
                    let ts = s.ts.clone();
                    if let Ok(json) = serde_json::to_vec(&AuditEntry::Summary(s)) {
                        self.submit(json, "summary", ts, false);
                    }
                }
                None
            }
            Ok((ts, json)) => self.submit(json, "request", ts, true),
        };
        if !self.owner.threaded() {
            inner.tick();
        }
        written
    }

    /// Records that the TLS files were loaded again (or rejected). Never fails nor blocks.
    pub(crate) fn tls_reload(&self, mut rec: super::record::TlsReload) {
        rec.ts = now_ts();
        let ts = rec.ts.clone();
        if let Ok(json) = serde_json::to_vec(&AuditEntry::TlsReload(rec)) {
            self.submit(json, "tls_reload", ts, false);
        }
    }

    /// Writes one serialized entry now (no thread) or queues it for the thread.
    fn submit(&self, json: Vec<u8>, kind: &'static str, ts: String, ack: bool) -> Option<Written> {
        if !self.owner.threaded() {
            self.owner.inner.append_json(json, kind, &ts);
            return None;
        }
        let (tx, rx) = if ack {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let queued = self.owner.inner.queue.push_entry(Job::Entry {
            json,
            kind,
            ts,
            ack: tx,
        });
        rx.filter(|_| queued).map(Written)
    }

    /// Starts a request's record; dropping the returned guard without
    /// [`PendingRequest::finish`] (the client hung up, the future was cancelled) records status
    /// 499 with the time spent so far.
    pub(crate) fn begin(&self, rec: AuditRecord) -> PendingRequest {
        let mut rec = rec;
        if rec.ts.is_empty() {
            rec.ts = now_ts();
        }
        PendingRequest {
            log: self.clone(),
            record: rec,
            late: DetailsSlot::default(),
            start: Instant::now(),
            cancel_status: 499,
            done: false,
        }
    }

    /// The chain's head now (what `GET /debug/audit` serves). Never the key.
    pub(crate) fn head(&self) -> Checkpoint {
        self.owner.inner.head()
    }

    /// The last checkpoint emitted, if any.
    pub(crate) fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.owner.inner.latest()
    }

    /// Writes a checkpoint now and returns it.
    #[cfg(test)]
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        self.owner.inner.checkpoint_now()
    }

    /// Writes what is queued and every folded count now and syncs the file (unless
    /// [`FsyncPolicy::Never`]); waits at most 5 s for the audit thread.
    pub(crate) fn flush(&self) {
        self.owner.flush();
    }

    /// Reopens the file by path now (after logrotate renamed it; for the host's own SIGHUP
    /// handler). The chain continues from the last record written.
    #[cfg(test)]
    pub(crate) fn reopen(&self) -> io::Result<()> {
        self.owner.inner.reopen_now()
    }

    /// The audit file, if any.
    #[cfg(test)]
    pub(crate) fn path(&self) -> Option<&Path> {
        self.owner.inner.cfg.path.as_deref()
    }

    /// Whether the chain is keyed (HMAC-SHA256).
    #[cfg(test)]
    pub(crate) fn is_keyed(&self) -> bool {
        self.owner.inner.chainer.keyed()
    }

    /// Counters.
    pub(crate) fn stats(&self) -> AuditStats {
        self.owner.inner.stats()
    }

    #[cfg(test)]
    pub(crate) fn inject_fault(&self, fault: Fault) {
        self.owner.inner.inject_fault(fault);
    }
}

/// Details that become known while a request runs (a host endpoint's request body), shared
/// between the request's guard and its handlers and merged into its record however the request
/// ends: answered, timed out, panicked or cancelled. An entry here replaces one of the same
/// name the response carried.
#[derive(Debug, Clone, Default)]
pub(crate) struct DetailsSlot(Arc<Mutex<serde_json::Map<String, serde_json::Value>>>);

impl DetailsSlot {
    /// Sets `key` to `value`.
    pub(crate) fn insert(&self, key: &str, value: serde_json::Value) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value);
    }

    fn drain_into(&self, details: &mut serde_json::Map<String, serde_json::Value>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        details.extend(std::mem::take(&mut *slot));
    }
}

/// A request being answered; see [`AuditLog::begin`].
#[derive(Debug)]
pub(crate) struct PendingRequest {
    log: AuditLog,
    record: AuditRecord,
    late: DetailsSlot,
    start: Instant,
    cancel_status: u16,
    done: bool,
}

impl PendingRequest {
    /// The record so far (fill in `token_id`, `details`, … as they become known).
    pub(crate) fn record_mut(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// Where the request's handlers put details they learn while it runs (see [`DetailsSlot`]).
    pub(crate) fn details_slot(&self) -> DetailsSlot {
        self.late.clone()
    }

    /// The status recorded if the guard is dropped unfinished: 499 unless changed (e.g. 504
    /// when the request timed out and its work is being abandoned).
    #[cfg(test)]
    pub(crate) fn set_cancel_status(&mut self, status: u16) {
        self.cancel_status = status;
    }

    /// Records the answer. `outcome` is set from `status` unless already set to something other
    /// than `Allowed`; `duration_ms` is the time since [`AuditLog::begin`].
    pub(crate) fn finish(mut self, status: u16, bytes: u64, folding: Folding) -> Option<Written> {
        self.done = true;
        let mut rec = std::mem::take(&mut self.record);
        self.late.drain_into(&mut rec.details);
        rec.status = status;
        rec.bytes = bytes;
        if rec.outcome == Outcome::Allowed {
            rec.outcome = Outcome::from_status(status);
        }
        rec.duration_ms = millis(self.start.elapsed());
        self.log.record(rec, folding)
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut rec = std::mem::take(&mut self.record);
        self.late.drain_into(&mut rec.details);
        rec.status = self.cancel_status;
        rec.outcome = Outcome::from_status(self.cancel_status);
        rec.duration_ms = millis(self.start.elapsed());
        // An anonymous client that hangs up folds like its other answers (a flood of
        // half-sent requests must not cost a line each).
        let folding = if rec.token_id.is_none() {
            Folding::Repeats
        } else {
            Folding::Never
        };
        self.log.record(rec, folding);
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn clip(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}
