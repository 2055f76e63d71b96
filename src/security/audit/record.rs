//! The record types: what one line of the audit file says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a request ended, from the point of view of access control.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// Authorized and answered with a status below 400.
    #[default]
    Allowed,
    /// Refused: 401, 403 or 429.
    Denied,
    /// Answered with another 4xx/5xx error (including 503/504 timeouts).
    Error,
    /// The client hung up before the answer (status 499).
    Cancelled,
    /// Several outcomes: an `over_budget` summary counts whatever a client did past its
    /// budget.
    Mixed,
}

impl Outcome {
    /// The outcome a status implies: 401/403/429 denied, 499 cancelled, other ≥ 400 error.
    pub(crate) fn from_status(status: u16) -> Outcome {
        match status {
            401 | 403 | 429 => Outcome::Denied,
            499 => Outcome::Cancelled,
            s if s >= 400 => Outcome::Error,
            _ => Outcome::Allowed,
        }
    }
}

/// One request (`"kind":"request"`). The log adds `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuditRecord {
    /// When the request arrived, RFC 3339 UTC with milliseconds (filled in if empty).
    pub ts: String,
    /// Unique per request within this process's life (also sent as `x-request-id`).
    pub request_id: String,
    /// The client's socket address (`ip:port`), or `unknown`.
    pub client: String,
    /// The name of the token used, if a valid one was presented. Never the secret.
    pub token_id: Option<String>,
    /// How the token was presented when not by a header: `client-cert` for a verified TLS
    /// client certificate standing for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path (the log clips it to 512 bytes).
    pub path: String,
    /// Query string (clipped to 512 bytes; secret-looking values are redacted by the log).
    pub query: Option<String>,
    /// Response status code; 499 when the client hung up.
    pub status: u16,
    /// Allowed, denied, error or cancelled.
    pub outcome: Outcome,
    /// Time from request arrival to the response head (or to the hang-up), in milliseconds.
    pub duration_ms: f64,
    /// Response body size in bytes when known (streamed bodies: 0).
    pub bytes: u64,
    /// What a mutation changed, e.g. `{"directive": "debug", "ttl_s": 900, "previous": "info"}`.
    /// Empty (`{}`) for reads. The caller must not put secrets here.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditRecord {
    /// Adds one `details` entry (e.g. `.detail("previous", "info")`).
    #[cfg(test)]
    pub(crate) fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> AuditRecord {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// Folded requests (`"kind":"summary"`): requests of one group (client IP, method class, path
/// class, status, token) counted instead of recorded one by one, flushed every fold interval
/// and on shutdown; or, with `over_budget`, everything a client did past its byte budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Summary {
    /// When the summary was written.
    pub ts: String,
    /// Requests folded into this summary.
    pub count: u64,
    /// Arrival time of the first and the last of them.
    pub first_ts: String,
    /// See `first_ts`.
    pub last_ts: String,
    /// Requests per client IP (one client per summary; `*` for clients beyond those tracked).
    pub clients: BTreeMap<String, u64>,
    /// Requests from clients beyond those listed in `clients` (0; older files list up to 8
    /// clients per summary).
    pub other_requests: u64,
    /// HTTP method class shared by the folded requests (`other` for an unknown method; `*`
    /// over budget).
    pub method: String,
    /// Path class shared by the folded requests: the route template, or `unmatched` (queries
    /// are not kept; `*` over budget).
    pub path: String,
    /// Status shared by the folded requests (0 over budget).
    pub status: u16,
    /// Outcome shared by the folded requests (`mixed` over budget).
    pub outcome: Outcome,
    /// The token the folded requests presented, when a valid one was (a denial by scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Whether this counts everything the client did past its budget in its window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub over_budget: bool,
}

/// A checkpoint written into the file (`"kind":"checkpoint"`). Its own `seq` and `hash` are
/// the anchor that the `tracing` event and `GET /debug/audit` publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CheckpointRecord {
    /// When it was written.
    pub ts: String,
    /// Records in the chain so far, this one included (equals its `seq`).
    pub records: u64,
    /// The file being written.
    pub file: Option<String>,
    /// Whether the chain is keyed (HMAC) or plain SHA-256.
    pub keyed: bool,
}

/// Why the chain resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeReason {
    /// The file ended with a partial or unreadable line (a crash mid-write); the bytes after the
    /// last good line (`cut_bytes`) are ignored and the chain goes on from the last good record.
    TornTail,
    /// The open file shrank under the writer (copytruncate, or someone truncated it). The chain
    /// goes on from the writer's last record, which may no longer be in this file.
    Truncated,
}

/// The chain resumed (`"kind":"resumed"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Resumed {
    /// When it was written.
    pub ts: String,
    /// Why.
    pub reason: ResumeReason,
    /// Human-readable: "chain resumed after torn tail" or "chain resumed after the file shrank".
    pub message: String,
    /// Bytes between the end of the last good line and the start of this line (the torn
    /// fragment plus the `\n` that ends it); ignored by `verify`, which checks this count.
    pub cut_bytes: u64,
    /// For `truncated`: the file's size before it shrank, and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_bytes: Option<u64>,
    /// See `previous_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_bytes: Option<u64>,
    /// Whether the chain is keyed.
    pub keyed: bool,
}

/// Records lost while the file could not be written (`"kind":"gap"`), written once it can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Gap {
    /// When it was written.
    pub ts: String,
    /// Records that could not be written (each was still emitted as a `tracing` event).
    pub count: u64,
    /// `ts` of the first and the last lost record.
    pub first_ts: String,
    /// See `first_ts`.
    pub last_ts: String,
    /// The first write error, e.g. `No space left on device (os error 28)`.
    pub error: String,
    /// Like [`Resumed::cut_bytes`]: the partial line a failed write left behind, if it could not
    /// be truncated away, plus its terminating `\n`.
    pub cut_bytes: u64,
}

/// The admin server's TLS files were loaded again after a change (`"kind":"tls_reload"`):
/// new handshakes use them (`loaded`), or they failed to load and the previous certificate
/// stays (`rejected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TlsReload {
    /// When.
    pub ts: String,
    /// `loaded` or `rejected`.
    pub outcome: String,
    /// The files watched.
    pub files: Vec<String>,
    /// The new certificate's serial number (hex), when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The new certificate's expiry (RFC 3339), when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Why the files were rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TlsReload {
    /// New handshakes use the certificate `serial`, valid until `not_after`.
    pub(crate) fn loaded(files: Vec<String>, serial: &str, not_after: &str) -> TlsReload {
        TlsReload {
            ts: String::new(),
            outcome: "loaded".into(),
            files,
            serial: Some(serial.into()),
            not_after: Some(not_after.into()),
            error: None,
        }
    }

    /// The files failed to load for `error`.
    pub(crate) fn rejected(files: Vec<String>, error: &str) -> TlsReload {
        TlsReload {
            ts: String::new(),
            outcome: "rejected".into(),
            files,
            serial: None,
            not_after: None,
            error: Some(error.into()),
        }
    }
}

/// Any line of the audit file, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum AuditEntry {
    /// One request.
    Request(AuditRecord),
    /// Folded requests.
    Summary(Summary),
    /// A checkpoint.
    Checkpoint(CheckpointRecord),
    /// The chain resumed after a torn tail or a truncation.
    Resumed(Resumed),
    /// Records lost to write errors.
    Gap(Gap),
    /// The TLS files were loaded again.
    TlsReload(TlsReload),
}

impl AuditEntry {
    /// The `kind` string.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            AuditEntry::Request(_) => "request",
            AuditEntry::Summary(_) => "summary",
            AuditEntry::Checkpoint(_) => "checkpoint",
            AuditEntry::Resumed(_) => "resumed",
            AuditEntry::Gap(_) => "gap",
            AuditEntry::TlsReload(_) => "tls_reload",
        }
    }
}

/// What `open_line` parses: the entry plus the chain fields the log appends.
#[derive(Debug, Deserialize)]
pub(crate) struct ChainFields {
    #[serde(flatten)]
    pub(crate) entry: AuditEntry,
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
}

/// The chain's head at some moment: what a log shipper or a poller keeps off the host, and what
/// `GET /debug/audit` returns. Never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// When it was taken.
    pub ts: String,
    /// Records in the chain so far (the head's `seq`), rotated-away files included.
    pub records: u64,
    /// `hash` of the head record (`GENESIS_HASH` when empty).
    pub head_hash: String,
    /// The file being written, if any.
    pub file: Option<String>,
    /// Whether a key is in use (HMAC chain) — never the key itself.
    pub keyed: bool,
}

impl Checkpoint {
    /// A checkpoint from a kept copy's two numbers, for [`verify_audit_log`](super::verify_audit_log).
    pub fn anchor(records: u64, head_hash: &str) -> Checkpoint {
        Checkpoint {
            ts: String::new(),
            records,
            head_hash: head_hash.to_string(),
            file: None,
            keyed: false,
        }
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub(crate) fn now_ts() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
