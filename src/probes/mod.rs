//! Probes: each reads one part of the process and returns plain data.
//!
//! A probe knows nothing about HTTP, tokens or rendering; the `http` layer calls it and renders
//! what it returns.

#[cfg(feature = "heap")]
pub mod heap;
pub mod memory;
