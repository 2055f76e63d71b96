//! Encoders: turn data into the ecosystem's formats (gzipped `profile.proto`, inferno SVG and
//! folded stacks, Prometheus text, RFC 3339 times). A leaf: nothing here imports the rest of
//! the crate, reads the process or knows HTTP.

pub(crate) mod archive;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) mod flamegraph;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) mod gzip;
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) mod pprof;
pub(crate) mod prometheus;
pub(crate) mod time;
