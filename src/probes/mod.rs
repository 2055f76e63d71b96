//! Probes: each reads one part of the process and returns plain data.
//!
//! A probe knows nothing about HTTP, tokens or rendering; the `http` layer calls it and renders
//! what it returns.

#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "deadlock")]
pub mod deadlock;
pub mod health;
#[cfg(feature = "heap")]
pub mod heap;
pub mod log_level;
pub mod memory;
pub mod overrides;
pub mod pools;
pub mod process;
#[cfg(any(feature = "cpu", feature = "threads"))]
mod signal_context;
#[cfg(any(feature = "cpu", feature = "heap", feature = "threads"))]
mod symbols;
#[cfg(feature = "threads")]
pub mod threads;
pub mod tokio_rt;
