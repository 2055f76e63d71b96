//! A probe's vital signs for the flight recorder's timeline: each second the server asks every
//! probe for its readings ([`Probe::vitals`](super::Probe::vitals)) and keeps them as series.
//!
//! A reading is a gauge (a level now: RSS, queue depth) or a counter (a monotone total: CPU
//! seconds, ERROR events), of which the timeline keeps the per-second rate. A number the probe
//! cannot tell this second is not reported: the timeline then shows a gap, never a fake 0.

use std::borrow::Cow;

/// The unit of a series' points (for a counter, of its per-second rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A share, 0.0–1.0.
    Ratio,
    /// Bytes.
    Bytes,
    /// A number of things.
    Count,
    /// Events per second (a counter of events).
    PerSecond,
    /// CPU cores used (a counter of CPU seconds).
    Cores,
}

impl Unit {
    /// The unit's name in the timeline's JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::PerSecond => "per_second",
            Unit::Cores => "cores",
        }
    }
}

/// One reading of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    /// The series id, e.g. `rss_bytes`, `tokio.main.global_queue`.
    pub(crate) name: Cow<'static, str>,
    /// The unit of the stored points.
    pub(crate) unit: Unit,
    /// `true` for a monotone total (the timeline stores its per-second rate).
    pub(crate) counter: bool,
    /// The level, or the total so far.
    pub(crate) value: f64,
}

/// This second's readings, collected from every probe. Reused from tick to tick (its buffer
/// keeps its capacity), so a tick allocates only the names built at run time.
#[derive(Debug, Default)]
pub(crate) struct Vitals {
    readings: Vec<Reading>,
}

impl Vitals {
    /// A level now, in `unit`. A value that is not finite is not recorded.
    pub(crate) fn gauge(&mut self, name: impl Into<Cow<'static, str>>, unit: Unit, value: f64) {
        self.push(name.into(), unit, false, value);
    }

    /// A monotone total (CPU seconds, events); the timeline stores its rate per second, in
    /// `unit` (the rate's unit: `Cores` for CPU seconds, `PerSecond` for events). A value that
    /// is not finite is not recorded.
    pub(crate) fn counter(&mut self, name: impl Into<Cow<'static, str>>, unit: Unit, total: f64) {
        self.push(name.into(), unit, true, total);
    }

    fn push(&mut self, name: Cow<'static, str>, unit: Unit, counter: bool, value: f64) {
        if value.is_finite() {
            self.readings.push(Reading {
                name,
                unit,
                counter,
                value,
            });
        }
    }

    /// The readings collected since the last [`clear`](Self::clear).
    pub(crate) fn readings(&self) -> &[Reading] {
        &self.readings
    }

    /// Forgets the readings, keeping the buffer.
    pub(crate) fn clear(&mut self) {
        self.readings.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_finite_readings_in_order() {
        let mut v = Vitals::default();
        v.gauge("rss_bytes", Unit::Bytes, 10.0);
        v.counter(format!("tokio.{}.busy_ratio", "main"), Unit::Ratio, 2.5);
        v.gauge("nan", Unit::Count, f64::NAN);
        let r = v.readings();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "rss_bytes");
        assert!(!r[0].counter);
        assert_eq!(r[1].name, "tokio.main.busy_ratio");
        assert!(r[1].counter);
        v.clear();
        assert!(v.readings().is_empty());
    }
}
