//! The audit log: one JSON line per request to the admin server, in a hash chain.
//!
//! # Format
//! One JSON object per line, tagged by `kind` (`request`, `summary`, `checkpoint`, `resumed`,
//! `gap`; see [`AuditEntry`]), ending in `"seq":N,"prev_hash":"…","hash":"…"`. `seq` counts
//! records from the chain's start (across rotated files); `prev_hash` is the previous record's
//! `hash` ([`GENESIS_HASH`] for the first). The hash covers the exact bytes of the line
//! without its `hash` field, chained to `prev_hash`:
//! `hash = hex(HMAC-SHA256(key, unhex(prev_hash) ‖ line-without-hash))`, or plain SHA-256 without
//! a key. Request records carry the arrival time in `ts`, so `ts` is not monotonic in the file.
//!
//! # Threat model
//! - **Keyed** (a key from [`AuditLogBuilder::key`] or `PRODBG_AUDIT_KEY`): someone who can
//!   write the file but does not know the key cannot edit, insert or reorder records, nor
//!   re-hash the chain after an edit: [`verify_audit_log`] with the key names the first bad
//!   line. They *can* delete whole files or cut the end of the log: that is detected against a
//!   [`Checkpoint`] kept off the host (the `tracing` events with target [`AUDIT_TARGET`], or a
//!   poller of `GET /debug/audit`), not from the files alone. Whoever holds the key (root on
//!   the host, who can read the process's memory or environment) can forge anything; keep a
//!   copy of the checkpoints where they cannot reach.
//! - **Unkeyed**: the chain detects accidental damage (a torn write, a bad disk, an edit by
//!   hand) and nothing more: anyone can edit a record and recompute every later hash.
//!   `verify` reports `keyed: false` and a checkpoint says `keyed: false`.
//! - The key is never written to disk by prodbg, never logged, never in `Debug` output or
//!   errors; it is read once and held in memory ([`AuditKey`] zeroes it on drop).
//! - Records are emitted as `tracing` events as well as written; the host's reloadable log
//!   filter must never apply to [`AUDIT_TARGET`], or a `PUT /debug/log-level` could silence
//!   the off-host copy.
//!
//! # Flooding and slow disks
//! Anonymous answers and denials fold into per-client summaries under a byte budget per
//! client (`fold.rs`); requests hand their records to the audit thread through a bounded queue
//! (`queue.rs`), so a hung disk never blocks a request and a full queue becomes a `gap`.
//!
//! # Faults
//! The head advances only after the whole line was written with one `write_all` to an
//! `O_APPEND` file. A failed write is truncated away when it left a partial line (or accounted
//! for by `cut_bytes` when that fails too); lost records become one `gap` record once the file
//! can be written again. A torn last line found on open (a crash) is cut logically: the log
//! appends a `resumed` record chained to the last good record and saying how many bytes it
//! skipped; `verify` checks that count. Rotation by size (`audit.jsonl` → `.1` …), rename by
//! logrotate (device/inode compared with the path at most once per
//! [`AuditLogBuilder::reopen_check_interval`], or [`AuditLog::reopen`] / the opt-in SIGHUP
//! hook) and copytruncate (the file shrank: a `resumed` record with reason `truncated`) all
//! keep the chain verifiable.

// The log's test-only API (short intervals, checkpoints and reopens on demand) is
// `#[cfg(test)]`: the server uses the rest.

mod chain;
mod file;
mod fold;
mod follow;
mod key;
mod log;
mod options;
mod queue;
mod record;
mod sighup;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

#[cfg(test)]
use chain::GENESIS_HASH;
pub(crate) use fold::Folding;
pub use key::{AuditKey, KeyError};
#[cfg(test)]
use log::AuditLogBuilder;
pub(crate) use log::{AuditError, AuditLog, DetailsSlot};
pub(crate) use options::AuditStats;
pub use options::{FsyncPolicy, Rotation};
pub use record::Checkpoint;
pub(crate) use record::{AuditRecord, TlsReload};
#[cfg(test)]
use record::{Outcome, ResumeReason};
pub(crate) use sighup::at_default_action as sighup_at_default_action;
pub use verify::{
    rotated_files, verify_audit_files, verify_audit_files_with, verify_audit_log,
    verify_audit_log_with, FileSummary, GapNote, KindCounts, Location, ResumeNote, StrictProblem,
    VerifyError, VerifyOptions, VerifyReport,
};
