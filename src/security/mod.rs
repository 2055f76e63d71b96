//! Who may call what, and the record of who did: tokens and scopes, the audit log.

pub(crate) mod audit;
pub(crate) mod redact;
pub(crate) mod tokens;

pub use audit::{verify_audit_log, VerifyReport};
pub use tokens::{generate_secret, Scope};
