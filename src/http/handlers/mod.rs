//! One module per endpoint group: parse and bound parameters, call the probe, render.

pub mod health;
pub mod index;
pub mod metrics;
pub mod process;
