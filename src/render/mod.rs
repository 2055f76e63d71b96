//! Renderers: turn probe data into the ecosystem's formats (SVG flamegraphs, pprof, Prometheus text).
//!
//! Nothing here knows about HTTP; nothing here reads the process.

#[cfg(any(feature = "cpu", feature = "heap"))]
pub mod flamegraph;
pub mod gzip;
pub mod metrics;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub mod pprof;
pub mod prometheus;
