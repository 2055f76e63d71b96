//! prodbg: a guarded admin HTTP server for debugging a Rust service in production.

pub mod probes;
pub mod render;
