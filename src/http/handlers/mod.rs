//! One module per endpoint group: parse and bound parameters, call the probe, render.

#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "deadlock")]
pub mod deadlocks;
pub mod health;
pub mod index;
pub mod metrics;
pub mod pools;
pub mod process;
#[cfg(feature = "threads")]
pub mod threads;
