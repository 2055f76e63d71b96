//! Incidents on disk: evidence that outlives the moment and the process.
//!
//! An incident is one `tar.gz` in the incident directory (`AdminBuilder::incident_dir`,
//! `PRODBG_INCIDENT_DIR`): `meta.json` (id, kind, reason, time, files), `manifest.json` (every
//! part, produced or not and why), the flight recorder's last minutes (`cpu-recorded.pb.gz`,
//! `wall-recorded.pb.gz`, `timeline.json`), a fresh short CPU profile, the heap profile when
//! sampling is on, thread stacks, Tokio metrics and task dumps, pools, spans in flight, error
//! groups — the bundle's parts — and `trigger.json` for a trigger's details.
//!
//! - [`meta`]: the kinds, `meta.json`, the strict id format.
//! - [`store`]: the directory (private, atomic writes, bounded, rebuilt at start).
//! - [`capture`]: [`Incidents::capture`], the one entry point of triggers, panics and the
//!   `POST` route: never blocks its caller, one capture at a time, a cap per hour; a worker
//!   thread gathers the parts through a [`Gather`] the server provides.
//! - [`panic_hook`]: every panic as an error group of `/debug/errors`; a panic that ends the
//!   process writes an incident first.
//! - [`crash`]: fatal signals written raw by an async-signal-safe handler, symbolized and
//!   listed as `crash` incidents at the next start.
//!
//! No HTTP here: the routes are `crate::probes::incidents`.

pub(crate) mod capture;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod crash;
pub(crate) mod meta;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod own_stack;
pub(crate) mod panic_hook;
pub(crate) mod store;
pub(crate) mod watch;

pub(crate) use capture::{CaptureError, Gather, Incidents, Skipped};
pub(crate) use meta::{Kind, Meta};

use std::time::Duration;

/// Bounds of the incident directory and of captures. The defaults suit a pod's volume:
/// 20 incidents, 256 MiB, 6 automatic captures an hour, 5-second fresh CPU profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentLimits {
    /// Incidents kept; past it the oldest is deleted. Default 20.
    pub max_count: usize,
    /// Bytes kept on disk; past it the oldest are deleted (the newest is always kept).
    /// Default 256 MiB.
    pub max_bytes: u64,
    /// Automatic captures (triggers and panics) per clock hour, all rules together; the rest
    /// are skipped and counted. Manual captures and crash reports are not capped. Default 6.
    pub max_per_hour: u32,
    /// Length of the fresh CPU and wall-clock profiles in an incident, seconds (1..=60; an
    /// incident for a panic that ends the process takes none). Default 5.
    pub profile_seconds: u64,
}

impl Default for IncidentLimits {
    fn default() -> IncidentLimits {
        IncidentLimits {
            max_count: 20,
            max_bytes: 256 << 20,
            max_per_hour: 6,
            profile_seconds: 5,
        }
    }
}

impl IncidentLimits {
    /// Why these limits cannot be used, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_count == 0 || self.max_bytes == 0 {
            return Err("incident limits: max_count and max_bytes must be at least 1".into());
        }
        if !(1..=60).contains(&self.profile_seconds) {
            return Err(format!(
                "incident limits: profile_seconds is {}, allowed 1..=60",
                self.profile_seconds
            ));
        }
        Ok(())
    }

    /// The fresh profiles' length.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_secs(self.profile_seconds)
    }
}
