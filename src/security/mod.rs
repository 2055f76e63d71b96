//! Who may call what, and the record of who did: tokens and scopes, the audit log, redaction.

pub(crate) mod audit;
mod audit_metrics;
pub(crate) mod redact;
pub(crate) mod tokens;

pub use audit::{
    rotated_files, verify_audit_files, verify_audit_files_with, verify_audit_log,
    verify_audit_log_with, AuditKey, Checkpoint, FileSummary, FsyncPolicy, GapNote, KeyError,
    KindCounts, Location, ResumeNote, Rotation, StrictProblem, VerifyError, VerifyOptions,
    VerifyReport,
};
pub(crate) use audit_metrics::AuditCollector;
pub use tokens::{generate_secret, Scope};
