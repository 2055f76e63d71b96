//! # prodbg
//!
//! A guarded admin HTTP server for debugging a Rust service in production. One call starts it
//! on its own OS thread with its own small Tokio runtime, so it answers even when the host's
//! runtime is wedged:
//!
//! ```no_run
//! use prodbg::{Admin, Scope};
//!
//! # fn main() -> Result<(), prodbg::Error> {
//! let admin = Admin::builder()
//!     .bind("127.0.0.1:6060")
//!     .token("ops", Scope::Admin, "a-long-random-secret-from-your-vault")
//!     .audit_file("/tmp/prodbg-audit.jsonl")
//!     .spawn()?;
//! println!("admin server on {}", admin.url());
//! # Ok(()) }
//! ```
//!
//! Every request needs `Authorization: Bearer <secret>` — or HTTP Basic auth with the token's
//! name as user and its secret as password, so a browser prompts and `go tool pprof
//! http://name:secret@host/debug/pprof/profile` works — with a token whose scope covers the
//! endpoint (`read` < `profile` < `admin`), and leaves a hash-chained record in the audit log.
//! `GET /debug/` in a browser is a console with the live figures and buttons for the probes.
//! See the README for the endpoint table and the security model.
//!
//! The integration handles a host may need: [`log_level`] (a run-time log filter),
//! [`spans`] (the `tracing` layer behind `/debug/spans` and `/debug/errors`),
//! [`pools`] (connection-pool adapters), `console` (tokio-console, feature `console`),
//! `deadlock` (naming threads for deadlock reports, feature `deadlock`), and
//! [`verify_audit_log`] for the audit file.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// A build with some probes compiled out leaves parts of the shared code (stacks, profile
// encoding, the seam's profile helpers) unused; the all-features build checks all of it.
#![cfg_attr(not(all_probes), allow(dead_code, unused_imports))]

mod admin;
mod config;
mod encode;
mod error;
mod incidents;
#[cfg(feature = "heap")]
mod jemalloc;
mod layer;
mod probes;
mod recorder;
mod seam;
mod security;
mod server;
mod stack;
#[cfg(test)]
mod test_support;
#[cfg(feature = "tls")]
mod tls;

pub use admin::{Admin, AdminBuilder, AdminHandle, DEFAULT_ADDR};
pub use config::Limits;
pub use error::Error;
pub use incidents::IncidentLimits;
pub use probes::cpu::FlightRecorder;
pub use recorder::triggers::{Triggers, RULES as TRIGGER_RULES};
pub use seam::AuditDetails;
pub use security::{generate_secret, verify_audit_log, Scope};

/// The audit log's options and its verifier: `verify_audit_log(base, key, checkpoint)` checks
/// a rotated set of audit files against the HMAC key and an off-host checkpoint.
pub mod audit {
    pub use crate::security::{
        rotated_files, verify_audit_files, verify_audit_files_with, verify_audit_log,
        verify_audit_log_with, AuditKey, Checkpoint, FileSummary, FsyncPolicy, GapNote, KeyError,
        KindCounts, Location, ResumeNote, Rotation, StrictProblem, VerifyError, VerifyOptions,
        VerifyReport,
    };
}

/// The host's tracing filter, changeable at run time through `PUT /debug/log-level`.
pub mod log_level {
    pub use crate::probes::log_level::{reloadable, LogControl, ReloadableFilter};
}

/// The `tracing` layer behind `/debug/spans` (spans in flight, latency per target and span name) and
/// `/debug/errors` (`WARN`/`ERROR` events grouped by callsite). One line to install, beside the
/// host's layers behind its (reloadable) filter, and its handle to the builder:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// # fn main() -> Result<(), prodbg::Error> {
/// let (filter, log_control) =
///     prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("info"));
/// let (spans, spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
/// tracing_subscriber::registry()
///     .with(filter)
///     .with(tracing_subscriber::fmt::layer())
///     .with(spans)
///     .init();
/// let admin = prodbg::Admin::builder()
///     .token("ops", prodbg::Scope::Admin, "a-long-random-secret-from-your-vault")
///     .log_control(log_control)
///     .spans(spans_handle)
///     .spawn()?;
/// # Ok(()) }
/// ```
///
/// # Three ways to install it
///
/// * **Behind the host's global filter (recommended)**, as above: it tracks exactly what the
///   host's (run-time reloadable) log filter lets through, and costs least: no per-layer
///   filtering, and the reloadable filter takes no lock.
/// * Inside the host's per-layer filter, sharing it
///   (`fmt::layer().and_then(spans).with_filter(filter)`): the same spans, at the per-layer
///   filtering cost. Never install it unfiltered next to a host layer that has a per-layer
///   filter: `tracing-subscriber` would then enable every callsite of every crate for it.
/// * With its own per-layer filter, [`filtered_layer`](spans::filtered_layer): works in any
///   stack and never changes what the host's layers see, at ~70 ns more per span.
///
/// # Bounds
///
/// Spans tracked at once: [`Options::max_spans`](spans::Options::max_spans) (default
/// [`DEFAULT_MAX_SPANS`](spans::DEFAULT_MAX_SPANS)); field bytes per span and per kept event:
/// [`Options::max_field_bytes`](spans::Options::max_field_bytes) (default
/// [`DEFAULT_MAX_FIELD_BYTES`](spans::DEFAULT_MAX_FIELD_BYTES)), one value at most
/// [`MAX_VALUE_BYTES`](spans::MAX_VALUE_BYTES); span names with a latency summary:
/// [`DEFAULT_MAX_SPAN_NAMES`](spans::DEFAULT_MAX_SPAN_NAMES); error groups:
/// [`DEFAULT_MAX_ERROR_GROUPS`](spans::DEFAULT_MAX_ERROR_GROUPS), the least recently seen
/// evicted. Whatever a cap drops is counted and shown. The README has the measured cost.
pub mod spans {
    pub use crate::layer::{
        filtered_layer, layer, Options, RedactFn, SpansFilter, SpansHandle, SpansLayer,
        DEFAULT_MAX_ERROR_GROUPS, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_SPANS,
        DEFAULT_MAX_SPAN_NAMES, DEFAULT_RECENT_EVENTS, DEFAULT_SLOWEST, MAX_VALUE_BYTES,
    };
}

/// Connection pools shown by `/debug/pools` and `/metrics`: the [`PoolStats`](pools::PoolStats) trait, the
/// adapters, and the [`PoolRegistry`](pools::PoolRegistry) for pools that come and go.
pub mod pools {
    pub use crate::probes::pools::*;
}

/// tokio-console's gRPC server and layer (feature `console`).
#[cfg(feature = "console")]
pub mod console {
    pub use crate::probes::console::*;
}

/// Thread names for parking_lot deadlock reports (feature `deadlock`).
#[cfg(feature = "deadlock")]
pub mod deadlock {
    pub use crate::probes::deadlock::name_current_thread;
}
