//! The tamper-evident audit log.
//!
//! Every request to the admin server — allowed, denied or failed — becomes one [`AuditRecord`],
//! written as one JSON line to the audit file (if configured) and emitted as a `tracing` event
//! with target `prodbg::audit`.
//!
//! Each record carries `prev_hash`, the `hash` of the record before it, and its own `hash`: the
//! hex SHA-256 of the record serialized with `hash` set to `""`. Editing or deleting a line
//! breaks the chain at that line, which [`verify_audit_log`] reports. The first record of a file has a
//! `prev_hash` of 64 zeros; a restarted process continues the chain from the file's last line.
//! Truncating the *end* of the file cannot be detected from the file alone: ship the `tracing`
//! events to a separate store if that matters.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encode::prometheus::Families;

/// The `prev_hash` of the first record in a file.
pub(crate) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// How a request ended, from the point of view of access control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Authorized and answered with a status below 400.
    Allowed,
    /// Refused: 401, 403 or 429 (rate-limited or over the concurrency cap).
    Denied,
    /// Authorized (or not needing auth) but answered with a 4xx/5xx error.
    Error,
}

/// One audit record: one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuditRecord {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub(crate) ts: String,
    /// Unique per request within this process's life (also sent as `x-request-id`).
    pub(crate) request_id: String,
    /// The client's socket address (`ip:port`), or `unknown` when mounted without connect info.
    pub(crate) client: String,
    /// The name of the token used, if a valid one was presented. Never the secret.
    pub(crate) token_id: Option<String>,
    /// HTTP method.
    pub(crate) method: String,
    /// Request path, truncated to 512 bytes.
    pub(crate) path: String,
    /// Query string, truncated to 512 bytes.
    pub(crate) query: Option<String>,
    /// Response status code.
    pub(crate) status: u16,
    /// Allowed, denied or error.
    pub(crate) outcome: Outcome,
    /// Time from request arrival to the response head, in milliseconds.
    pub(crate) duration_ms: f64,
    /// Response body size in bytes when known from `content-length` (streamed bodies: 0).
    pub(crate) bytes: u64,
    /// `hash` of the previous record.
    pub(crate) prev_hash: String,
    /// Hex SHA-256 of this record serialized with `hash = ""`.
    pub(crate) hash: String,
}

impl AuditRecord {
    /// Computes this record's hash (over every field but `hash`).
    pub(crate) fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        // Serializing a struct of strings and numbers cannot fail.
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Appends records to the chain, the file and the `tracing` stream.
#[derive(Debug)]
pub(crate) struct AuditLog {
    state: Mutex<ChainState>,
    counters: Arc<Counters>,
}

/// What `/metrics` reports of the audit log.
#[derive(Debug, Default)]
struct Counters {
    write_errors: AtomicU64,
    records: AtomicU64,
}

/// The audit log's Prometheus series: records appended and write failures.
#[derive(Debug)]
pub(crate) struct AuditCollector(Arc<Counters>);

impl Collector for AuditCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Families::new(encoder);
        f.counter(
            "prodbg_audit_records",
            "Audit records appended since start",
            self.0.records.load(Ordering::Relaxed) as f64,
        )?;
        f.counter(
            "prodbg_audit_write_errors",
            "Audit records that could not be written to the audit file",
            self.0.write_errors.load(Ordering::Relaxed) as f64,
        )
    }
}

#[derive(Debug)]
struct ChainState {
    file: Option<File>,
    prev_hash: String,
}

impl AuditLog {
    /// An audit log that only emits `tracing` events (no file).
    pub(crate) fn in_memory() -> AuditLog {
        AuditLog {
            state: Mutex::new(ChainState {
                file: None,
                prev_hash: GENESIS_HASH.to_string(),
            }),
            counters: Arc::default(),
        }
    }

    /// Opens (or creates, with mode 0600) `path` for appending, continuing the chain from its
    /// last record.
    pub(crate) fn open(path: &Path) -> io::Result<AuditLog> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let prev_hash = last_hash(&mut file)?.unwrap_or_else(|| GENESIS_HASH.to_string());
        Ok(AuditLog {
            state: Mutex::new(ChainState {
                file: Some(file),
                prev_hash,
            }),
            counters: Arc::default(),
        })
    }

    /// Its Prometheus series.
    pub(crate) fn collector(&self) -> AuditCollector {
        AuditCollector(self.counters.clone())
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Number of records that could not be written to the file since start.
    pub(crate) fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Number of records appended since start.
    pub(crate) fn records(&self) -> u64 {
        self.counters.records.load(Ordering::Relaxed)
    }

    /// Chains `record` (filling `prev_hash` and `hash`), writes it and emits it.
    ///
    /// A failed file write never fails the caller: it is counted and logged.
    pub(crate) fn append(&self, mut record: AuditRecord) {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        record.prev_hash = std::mem::take(&mut state.prev_hash);
        record.hash = record.compute_hash();
        state.prev_hash = record.hash.clone();
        if let Some(file) = state.file.as_mut() {
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = file.write_all(&line) {
                let n = self.counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(target: "prodbg", error = %e, write_errors = n, "cannot write the audit record");
            }
        }
        drop(state);
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            target: "prodbg::audit",
            ts = %record.ts,
            request_id = %record.request_id,
            client = %record.client,
            token_id = record.token_id.as_deref().unwrap_or("-"),
            method = %record.method,
            path = %record.path,
            query = record.query.as_deref().unwrap_or(""),
            status = record.status,
            outcome = ?record.outcome,
            duration_ms = record.duration_ms,
            bytes = record.bytes,
            hash = %record.hash,
            "prodbg request"
        );
    }
}

fn last_hash(file: &mut File) -> io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.take(64 * 1024).read_to_string(&mut tail)?;
    let last = tail.lines().rev().find(|l| !l.trim().is_empty());
    Ok(last
        .and_then(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .map(|r| r.hash))
}

/// Result of [`verify_audit_log`]: how many lines were read and where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of lines read.
    pub lines: usize,
    /// The first line (1-based) where the chain breaks, and why. `None` when intact.
    pub first_broken: Option<(usize, String)>,
}

impl VerifyReport {
    /// Whether every line chained correctly.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Checks the hash chain of the audit log at `path` (what `.audit_file(..)` writes) and
/// reports the first broken line.
///
/// A line breaks the chain when it is not a valid record, when its `hash` does not match its
/// content (it was edited), or when its `prev_hash` is not the previous line's `hash` (a line
/// before it was edited, removed or inserted).
pub fn verify_audit_log(path: &Path) -> io::Result<VerifyReport> {
    let reader = BufReader::new(File::open(path)?);
    let mut prev = GENESIS_HASH.to_string();
    let mut lines = 0;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        lines = i + 1;
        let broken = |why: String| VerifyReport {
            lines: i + 1,
            first_broken: Some((i + 1, why)),
        };
        let record: AuditRecord = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => return Ok(broken(format!("not a valid audit record: {e}"))),
        };
        if record.prev_hash != prev {
            return Ok(broken(
                "prev_hash does not match the previous record: a record before this one was removed, inserted or edited".into(),
            ));
        }
        if record.compute_hash() != record.hash {
            return Ok(broken(
                "hash does not match the record's content: this record was edited".into(),
            ));
        }
        prev = record.hash;
    }
    Ok(VerifyReport {
        lines,
        first_broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u16) -> AuditRecord {
        AuditRecord {
            ts: "2026-01-01T00:00:00.000Z".into(),
            request_id: format!("r{n}"),
            client: "127.0.0.1:1".into(),
            token_id: Some("ops".into()),
            method: "GET".into(),
            path: "/debug/memory".into(),
            query: None,
            status: 200 + n,
            outcome: Outcome::Allowed,
            duration_ms: 1.25,
            bytes: 10,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn write_log(dir: &Path, n: u16) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(record(i));
        }
        path
    }

    #[test]
    fn intact_chain_verifies_and_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let report = verify_audit_log(&path).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                lines: 5,
                first_broken: None
            }
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let log = AuditLog::open(&path).unwrap();
        log.append(record(9));
        assert!(verify_audit_log(&path).unwrap().is_intact());
        assert_eq!(verify_audit_log(&path).unwrap().lines, 4);
    }

    #[test]
    fn edited_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let text = std::fs::read_to_string(&path).unwrap();
        let edited: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 2 {
                    l.replace("\"status\":202", "\"status\":403")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
        let report = verify_audit_log(&path).unwrap();
        let (line, why) = report.first_broken.unwrap();
        assert_eq!(line, 3);
        assert!(why.contains("edited"), "{why}");
    }

    #[test]
    fn deleted_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        assert_eq!(verify_audit_log(&path).unwrap().first_broken.unwrap().0, 2);
    }

    #[test]
    fn write_failure_is_counted_not_fatal() {
        let log = AuditLog::open(Path::new("/dev/full")).unwrap();
        log.append(record(0));
        assert_eq!(log.write_errors(), 1);
        assert_eq!(log.records(), 1);
    }
}
