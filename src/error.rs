//! Errors returned when configuring or starting the admin server.

/// Why the admin server could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid. The message names the value and what is expected,
    /// and never contains a secret.
    #[error("invalid prodbg configuration: {0}")]
    Config(String),
    /// The listen address could not be bound (taken, not local, permission denied).
    #[error("cannot bind the prodbg admin server to {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The audit file could not be opened.
    #[error("cannot open the prodbg audit file {path}: {source}")]
    AuditFile {
        /// The audit file's path.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be started.
    #[error("cannot start the prodbg admin server: {0}")]
    Start(String),
}
