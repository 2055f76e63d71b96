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
//!     .token("ops", &[Scope::Admin], "a-long-random-secret-from-your-vault")
//!     .audit_file("/tmp/prodbg-audit.jsonl")
//!     .spawn()?;
//! println!("admin server on {}", admin.url());
//! # Ok(()) }
//! ```
//!
//! Every request needs `Authorization: Bearer <secret>` with a token whose scope covers the
//! endpoint (`read` < `profile` < `admin`), and leaves a hash-chained record in the audit log.
//! See the README for the endpoint table and the security model.

#![warn(missing_docs)]

mod admin;
pub mod audit;
pub mod auth;
mod error;
pub mod http;
pub mod probes;
pub mod render;

pub use admin::{Admin, AdminBuilder, AdminHandle, Limits, DEFAULT_ADDR};
pub use audit::verify;
pub use auth::{Scope, Token};
pub use error::Error;
