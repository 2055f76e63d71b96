//! The audit log's options, errors and counters: what the handle (`log.rs`) and the writer
//! (`writer.rs`) both speak.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::key::KeyError;

/// The `tracing` target of audit records and checkpoints. A reloadable log filter must never
/// apply to it (see the module docs).
pub(crate) const AUDIT_TARGET: &str = "prodbg::audit";

/// When written records are forced to stable storage (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record, before the request that made it is answered: the audit thread
    /// syncs once per batch of queued records (a group commit) and the requests wait for it
    /// (at most 2 s each). Without the thread, a disk flush per record on the calling thread.
    Always,
    /// At most this long after a write, from the background thread (or from the next append
    /// when there is none). A crash loses at most this much.
    Every(Duration),
    /// Left to the OS (a crash of the machine, not of the process, may lose recent records).
    Never,
}

impl Default for FsyncPolicy {
    /// `Every(1 s)`.
    fn default() -> FsyncPolicy {
        FsyncPolicy::Every(Duration::from_secs(1))
    }
}

/// Size-based rotation by the log itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// When a write would grow the file past `max_bytes`, `audit.jsonl` becomes `audit.jsonl.1`
    /// (`.1` → `.2`, …), keeping `keep` files in all (at least 2); the oldest is deleted. The
    /// chain continues: the new file's first record chains to the old file's last.
    Size {
        /// Largest file size, in bytes.
        max_bytes: u64,
        /// Files kept, the one being written included.
        keep: usize,
    },
    /// No rotation by prodbg (e.g. logrotate renames the file: the log notices and reopens).
    Never,
}

impl Default for Rotation {
    /// 64 MiB × 8 files.
    fn default() -> Rotation {
        Rotation::Size {
            max_bytes: 64 << 20,
            keep: 8,
        }
    }
}

/// Why the audit log could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    /// The file could not be opened or read.
    #[error("cannot open the audit file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `PRODBG_AUDIT_KEY` or the given key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The opt-in SIGHUP hook could not be installed.
    #[error("cannot install the SIGHUP hook: {0}")]
    Sighup(String),
    /// The background thread could not be started.
    #[error("cannot start the audit thread: {0}")]
    Thread(io::Error),
}

/// Counters for `/metrics` and `GET /debug/audit` (no hash here: it would mint a Prometheus
/// series per value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct AuditStats {
    /// Records in the chain (the head's `seq`).
    pub records: u64,
    /// Lines this process wrote.
    pub written: u64,
    /// Failed writes since start.
    pub write_errors: u64,
    /// Records lost since the file became unwritable (the next `gap` record's count).
    pub pending_lost: u64,
    /// Records dropped because the queue to the audit thread was full (slow or hung disk).
    pub queue_dropped: u64,
    /// Requests folded into summaries since start.
    pub folded: u64,
    /// Requests of clients past their byte budget, counted only in an over-budget summary.
    pub over_budget: u64,
    /// Whether the chain is keyed.
    pub keyed: bool,
}
