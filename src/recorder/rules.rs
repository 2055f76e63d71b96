//! The trigger rules: each second the vitals the timeline stores are checked against them, and
//! a rule that crosses (long enough, past its warm-up, out of its cooldown) fires once. A fire
//! is what an incident is taken for; the rules know nothing of incidents, HTTP or the probes,
//! only series names and numbers.
//!
//! Each rule watches series by name (`cpu`, `rss_bytes`) or by pattern (`tokio.*.busy_ratio`,
//! `pool.*.saturated`: each instance on its own) and is one of: a level held for a while
//! ([`Check::Above`]), growth over the lowest value of a window ([`Check::GrowsBy`]), a rate
//! far above its own average ([`Check::Spike`]), or any rise of a count that only grows
//! ([`Check::Rises`]). Counters are compared as their rate per second, as the timeline shows
//! them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::timeline::Reading;

/// What a rule checks on each instance of its series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// At or above `level` for `sustain`.
    Above { level: f64, sustain: Duration },
    /// At least `share` above the lowest value of the last `window` (and at least `min_value`
    /// now), for `sustain`.
    GrowsBy {
        share: f64,
        window: Duration,
        min_value: f64,
        sustain: Duration,
    },
    /// At least `factor` × its average over the last `window` (the seconds before the spike
    /// began) and at least `floor`, for `sustain`.
    Spike {
        factor: f64,
        window: Duration,
        floor: f64,
        sustain: Duration,
    },
    /// Higher than the second before (a count that only grows: error callsites, deadlocks).
    Rises,
}

/// One automatic rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    /// Its name: the `trigger` label of `prodbg_incidents_total` and `trigger.json`'s `rule`.
    pub(crate) name: &'static str,
    /// The series it watches: an exact name, or a pattern with one `*` for each instance.
    pub(crate) series: &'static str,
    /// What it checks.
    pub(crate) check: Check,
    /// No fire before the rules have run this long (the process's start is noisy).
    pub(crate) warm_up: Duration,
    /// No second fire of this rule before this long after the last.
    pub(crate) cooldown: Duration,
    /// What crossing it means, for the incident's reason.
    pub(crate) says: &'static str,
}

/// A rule that fired.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fire {
    /// The rule's name.
    pub(crate) rule: &'static str,
    /// The series instance that crossed, e.g. `pool.auth-db.saturated`.
    pub(crate) series: String,
    /// Its value now.
    pub(crate) value: f64,
    /// The threshold it crossed (for growth and spikes: the value it had to reach).
    pub(crate) threshold: f64,
    /// The rule's settings, for `trigger.json`.
    pub(crate) settings: serde_json::Value,
    /// One line for the incident's reason.
    pub(crate) reason: String,
}

/// Seconds of history a rule keeps per instance at most (its window).
const MAX_WINDOW_POINTS: usize = 3600;
/// Instances of one pattern watched at most (pools and runtimes are few; a runaway name set is
/// not followed past it).
const MAX_INSTANCES: usize = 64;

/// The rules' state: per rule and instance, the recent points and how long it has crossed.
#[derive(Debug)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// Seconds the rules have run.
    ticks: u64,
    /// Per rule: when it last fired (tick).
    last_fire: Vec<Option<u64>>,
    /// Per rule: its instances.
    state: Vec<HashMap<String, Instance>>,
    /// A counter's previous total and time (seconds since start), per series name.
    totals: HashMap<String, (u64, f64)>,
}

#[derive(Debug, Default)]
struct Instance {
    points: VecDeque<f64>,
    crossing_s: u64,
    last: Option<f64>,
}

impl Rules {
    /// The state for `rules`, before its first tick.
    pub(crate) fn new(rules: Vec<Rule>) -> Rules {
        let n = rules.len();
        Rules {
            rules,
            ticks: 0,
            last_fire: vec![None; n],
            state: (0..n).map(|_| HashMap::new()).collect(),
            totals: HashMap::new(),
        }
    }

    /// One second's readings; returns the rules that fire now (at most one per rule).
    pub(crate) fn tick(&mut self, readings: &[Reading<'_>]) -> Vec<Fire> {
        self.ticks += 1;
        let now = self.ticks;
        let mut fires = Vec::new();
        // Counters become rates, as the timeline shows them.
        let mut points: Vec<(&str, f64)> = Vec::with_capacity(readings.len());
        for r in readings {
            if !self.watched(r.name) {
                continue;
            }
            if r.counter {
                let prev = self.totals.insert(r.name.to_string(), (now, r.value));
                match prev {
                    Some((t, total)) if now > t && r.value >= total => {
                        points.push((r.name, (r.value - total) / (now - t) as f64))
                    }
                    _ => {}
                }
            } else {
                points.push((r.name, r.value));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let instances = &mut self.state[i];
            for (name, value) in points.iter().filter(|(n, _)| matches(rule.series, n)) {
                if !instances.contains_key(*name) && instances.len() >= MAX_INSTANCES {
                    continue;
                }
                let inst = instances.entry(name.to_string()).or_default();
                let crossed = crossing(&rule.check, inst, *value);
                // A spike is measured against the average from before it began: its own
                // values stay out of the window while it lasts.
                let spiking = crossed.is_some() && matches!(rule.check, Check::Spike { .. });
                if !spiking {
                    inst.points.push_back(*value);
                    if inst.points.len() > window_points(&rule.check) {
                        inst.points.pop_front();
                    }
                }
                inst.last = Some(*value);
                let Some(threshold) = crossed else {
                    inst.crossing_s = 0;
                    continue;
                };
                inst.crossing_s += 1;
                let warm = Duration::from_secs(now) >= rule.warm_up;
                let cool =
                    self.last_fire[i].is_none_or(|t| Duration::from_secs(now - t) >= rule.cooldown);
                if inst.crossing_s >= sustain_s(&rule.check) && warm && cool {
                    self.last_fire[i] = Some(now);
                    inst.crossing_s = 0;
                    fires.push(Fire {
                        rule: rule.name,
                        series: name.to_string(),
                        value: *value,
                        threshold,
                        settings: settings(rule),
                        reason: format!(
                            "{}: {name} = {} (threshold {})",
                            rule.says,
                            short(*value),
                            short(threshold)
                        ),
                    });
                }
            }
        }
        fires
    }

    fn watched(&self, name: &str) -> bool {
        self.rules.iter().any(|r| matches(r.series, name))
    }
}

/// The threshold `value` crosses now, if it does.
fn crossing(check: &Check, inst: &Instance, value: f64) -> Option<f64> {
    match check {
        Check::Above { level, .. } => (value >= *level).then_some(*level),
        Check::GrowsBy {
            share, min_value, ..
        } => {
            let low = inst.points.iter().copied().fold(f64::INFINITY, f64::min);
            let need = (low * (1.0 + share)).max(*min_value);
            (low.is_finite() && value >= need).then_some(need)
        }
        Check::Spike { factor, floor, .. } => {
            if inst.points.is_empty() {
                return None;
            }
            let mean = inst.points.iter().sum::<f64>() / inst.points.len() as f64;
            let need = (mean * factor).max(*floor);
            (value >= need).then_some(need)
        }
        Check::Rises => {
            let last = inst.last?;
            (value > last).then_some(last)
        }
    }
}

fn sustain_s(check: &Check) -> u64 {
    match check {
        Check::Above { sustain, .. }
        | Check::GrowsBy { sustain, .. }
        | Check::Spike { sustain, .. } => sustain.as_secs().max(1),
        Check::Rises => 1,
    }
}

fn window_points(check: &Check) -> usize {
    match check {
        Check::GrowsBy { window, .. } | Check::Spike { window, .. } => {
            (window.as_secs() as usize).clamp(1, MAX_WINDOW_POINTS)
        }
        Check::Above { .. } | Check::Rises => 1,
    }
}

fn settings(rule: &Rule) -> serde_json::Value {
    let secs = |d: &Duration| d.as_secs_f64();
    let check = match &rule.check {
        Check::Above { level, sustain } => {
            json!({"check": "above", "level": level, "sustain_s": secs(sustain)})
        }
        Check::GrowsBy {
            share,
            window,
            min_value,
            sustain,
        } => json!({"check": "grows_by", "share": share, "window_s": secs(window),
                    "min_value": min_value, "sustain_s": secs(sustain)}),
        Check::Spike {
            factor,
            window,
            floor,
            sustain,
        } => json!({"check": "spike", "factor": factor, "window_s": secs(window),
                    "floor": floor, "sustain_s": secs(sustain)}),
        Check::Rises => json!({"check": "rises"}),
    };
    json!({"series": rule.series, "warm_up_s": secs(&rule.warm_up),
           "cooldown_s": secs(&rule.cooldown), "rule": check})
}

/// A number for a reason line: integers as such, others with three significant digits.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Whether `name` is `pattern` (one `*` stands for any non-empty part).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() > head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &'static str, value: f64) -> Reading<'static> {
        Reading {
            name,
            unit: "count",
            counter: false,
            value,
        }
    }

    fn counter(name: &'static str, total: f64) -> Reading<'static> {
        Reading {
            counter: true,
            ..gauge(name, total)
        }
    }

    fn rule(check: Check) -> Rule {
        Rule {
            name: "test",
            series: "pool.*.saturated",
            check,
            warm_up: Duration::from_secs(3),
            cooldown: Duration::from_secs(10),
            says: "a pool is saturated",
        }
    }

    #[test]
    fn a_level_fires_after_warm_up_and_sustain_then_cools_down() {
        let mut r = Rules::new(vec![rule(Check::Above {
            level: 1.0,
            sustain: Duration::from_secs(2),
        })]);
        let mut fired_at = Vec::new();
        for s in 1..=30 {
            let v = if (5..=7).contains(&s) { 0.0 } else { 1.0 };
            let fires = r.tick(&[gauge("pool.db.saturated", v), gauge("other", 5.0)]);
            if !fires.is_empty() {
                assert_eq!(fires[0].series, "pool.db.saturated");
                assert!(
                    fires[0].reason.contains("threshold 1"),
                    "{}",
                    fires[0].reason
                );
                fired_at.push(s);
            }
        }
        // Warm-up ends at 3 (crossing since 1): fires at 3; the dip at 5–7 resets; cooldown 10.
        assert_eq!(fired_at, vec![3, 13, 23]);
    }

    #[test]
    fn instances_are_separate_and_names_are_matched_whole() {
        assert!(matches("pool.*.saturated", "pool.a.b.saturated"));
        assert!(!matches("pool.*.saturated", "pool..saturated"));
        assert!(!matches("cpu", "cpu2"));
        let mut r = Rules::new(vec![rule(Check::Above {
            level: 1.0,
            sustain: Duration::from_secs(3),
        })]);
        let mut fires = Vec::new();
        for s in 0..6 {
            // `a` crosses every other second, `b` always: only `b` is sustained.
            let a = if s % 2 == 0 { 1.0 } else { 0.0 };
            fires.extend(r.tick(&[gauge("pool.a.saturated", a), gauge("pool.b.saturated", 1.0)]));
        }
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].series, "pool.b.saturated");
    }

    #[test]
    fn counters_are_rates_and_spikes_compare_with_their_own_average() {
        let mut r = Rules::new(vec![Rule {
            series: "errors",
            check: Check::Spike {
                factor: 10.0,
                window: Duration::from_secs(60),
                floor: 1.0,
                sustain: Duration::from_secs(1),
            },
            ..rule(Check::Rises)
        }]);
        let mut total = 0.0;
        let mut fired = None;
        for s in 1..=40 {
            total += if s >= 30 { 50.0 } else { 0.5 };
            if let Some(f) = r.tick(&[counter("errors", total)]).pop() {
                fired.get_or_insert((s, f));
            }
        }
        let (s, f) = fired.expect("the spike fires");
        assert_eq!(s, 30);
        assert_eq!(f.value, 50.0);
        assert!(f.threshold >= 1.0 && f.threshold < 50.0, "{f:?}");
    }

    #[test]
    fn growth_is_measured_from_the_window_low_and_rises_fire_on_any_increase() {
        let mut r = Rules::new(vec![
            Rule {
                name: "growth",
                series: "rss_bytes",
                check: Check::GrowsBy {
                    share: 0.5,
                    window: Duration::from_secs(100),
                    min_value: 0.0,
                    sustain: Duration::from_secs(1),
                },
                ..rule(Check::Rises)
            },
            Rule {
                name: "new_error",
                series: "error_callsites",
                ..rule(Check::Rises)
            },
        ]);
        let mut fires = Vec::new();
        for s in 1..=20u32 {
            let rss = if s < 10 {
                100.0
            } else {
                100.0 + f64::from(s - 9) * 10.0
            };
            let callsites = if s >= 15 { 3.0 } else { 2.0 };
            for f in r.tick(&[gauge("rss_bytes", rss), gauge("error_callsites", callsites)]) {
                fires.push((s, f.rule));
            }
        }
        assert_eq!(fires, vec![(14, "growth"), (15, "new_error")]);
    }
}
