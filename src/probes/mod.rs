//! Probes: each reads one part of the process and returns plain data.
//!
//! A probe knows nothing about HTTP, tokens or rendering; the `http` layer calls it and renders
//! what it returns.

#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "deadlock")]
pub mod deadlock;
pub mod health;
pub mod pools;
pub mod process;
#[cfg(feature = "threads")]
pub mod threads;
pub mod tokio_rt;
