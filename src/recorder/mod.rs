//! The flight recorder: what the process did before anyone looked, kept always within fixed
//! bounds. Knows no HTTP and nothing of the probes; the server feeds it and serves it.

pub(crate) mod cgroup;
pub(crate) mod rules;
pub(crate) mod ticker;
pub(crate) mod timeline;
pub(crate) mod triggers;
