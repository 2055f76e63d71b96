//! One module per endpoint group: parse and bound parameters, call the probe, render.

pub mod bundle;
#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "deadlock")]
pub mod deadlocks;
pub mod health;
#[cfg(feature = "heap")]
pub mod heap;
pub mod index;
pub mod log_level;
pub mod memory;
pub mod metrics;
pub mod pools;
pub mod process;
#[cfg(feature = "threads")]
pub mod threads;
pub mod tokio_rt;
