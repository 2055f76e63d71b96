//! The flight recorder's settings ([`FlightRecorder`]): known in every build, so a host's
//! builder call compiles whether or not the `cpu` feature is on.

use std::time::Duration;

/// Length of one slice of history.
pub(crate) const SLICE: Duration = Duration::from_secs(10);
/// Longest retention accepted.
pub(crate) const MAX_RETENTION: Duration = Duration::from_secs(3600);

/// The CPU flight recorder's settings: on by default, sampling 19 times per second of each
/// thread's CPU time and keeping 10 minutes of history, so `?since=` answers about a spike
/// that is over. Give it to [`AdminBuilder::flight_recorder`](crate::AdminBuilder::flight_recorder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightRecorder {
    pub(crate) on: bool,
    pub(crate) frequency_hz: u32,
    pub(crate) retention: Duration,
}

impl Default for FlightRecorder {
    /// On, 19 Hz of each thread's CPU time, 10 minutes of history.
    fn default() -> Self {
        FlightRecorder {
            on: true,
            frequency_hz: 19,
            retention: Duration::from_secs(600),
        }
    }
}

impl FlightRecorder {
    /// No recorder: nothing is sampled until someone asks for a profile.
    pub fn off() -> Self {
        FlightRecorder {
            on: false,
            ..Self::default()
        }
    }

    /// Samples per second of each thread's CPU time, 1..=100 (values outside are clamped).
    pub fn frequency_hz(mut self, hz: u32) -> Self {
        self.frequency_hz = hz.clamp(1, 100);
        self
    }

    /// How much history to keep: 10 s..=1 h (values outside are clamped).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention.clamp(SLICE, MAX_RETENTION);
        self
    }

    /// Reads `PRODBG_FLIGHT_RECORDER`: `off`, or `on` with optional `,hz=N` and
    /// `,retention=Ns|Nm` (e.g. `on,hz=49,retention=5m`); anything else is an error naming
    /// the format.
    pub(crate) fn parse(text: &str) -> Result<FlightRecorder, String> {
        let bad = || {
            format!(
                "PRODBG_FLIGHT_RECORDER={text:?}: expected off, or on[,hz=1..100][,retention=10s..1h]"
            )
        };
        let mut parts = text.split(',').map(str::trim);
        let mut out = match parts.next() {
            Some("off") => return Ok(FlightRecorder::off()),
            Some("on") => FlightRecorder::default(),
            _ => return Err(bad()),
        };
        for part in parts {
            match part.split_once('=') {
                Some(("hz", n)) => {
                    let hz: u32 = n.parse().map_err(|_| bad())?;
                    if !(1..=100).contains(&hz) {
                        return Err(bad());
                    }
                    out.frequency_hz = hz;
                }
                Some(("retention", d)) => {
                    let secs = match (d.strip_suffix('s'), d.strip_suffix('m')) {
                        (Some(s), _) => s.parse::<u64>().ok(),
                        (_, Some(m)) => m.parse::<u64>().ok().map(|m| m * 60),
                        _ => None,
                    }
                    .ok_or_else(bad)?;
                    let d = Duration::from_secs(secs);
                    if !(SLICE..=MAX_RETENTION).contains(&d) {
                        return Err(bad());
                    }
                    out.retention = d;
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }
}
