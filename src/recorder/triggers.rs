//! [`Triggers`]: which automatic rules take an incident, with their defaults, read from the
//! host's cores and cgroup limits at spawn.

use std::time::Duration;

use super::rules::{Check, Rule};

const MIB: f64 = 1024.0 * 1024.0;

/// The automatic rules that take an incident when the service crosses them
/// (`AdminBuilder::incident_triggers`; on by default once an incident directory is set).
///
/// | rule | watches | fires when | default |
/// |---|---|---|---|
/// | `cpu` | process CPU | at or above a share of its cores (cgroup quota, else the CPUs it may run on) | 90 % for 30 s |
/// | `memory_limit` | RSS | at or above a share of the cgroup memory limit, or of [`memory_limit`](Self::memory_limit) (no rule without one) | 90 % for 10 s |
/// | `memory_growth` | RSS | 50 % above its lowest of the last 10 minutes, and at least 256 MiB | for 10 s |
/// | `tokio_busy` | each registered runtime's workers' busy share | pinned | 95 % for 30 s |
/// | `tokio_queue` | each runtime's global queue | deep | 1 000 tasks for 10 s |
/// | `pool_saturated` | each registered pool | every connection out and callers waiting | for 10 s |
/// | `deadlock` | the deadlock detector | a lock cycle is found | at once |
/// | `new_error` | `ERROR` events | a callsite logs its first `ERROR` | at once |
/// | `error_rate` | `ERROR` events per second | 10 × their average of the last 10 minutes, and at least 1/s | for 10 s |
///
/// Every rule waits out a warm-up after spawn (60 s) and a cooldown after it fires (10 min);
/// the incident store caps automatic incidents per hour. A panic takes its own incident.
#[derive(Debug, Clone)]
pub struct Triggers {
    off: Vec<String>,
    changes: Vec<(String, Option<f64>, Option<Duration>)>,
    warm_up: Duration,
    cooldown: Duration,
    memory_limit: Option<u64>,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            off: Vec::new(),
            changes: Vec::new(),
            warm_up: Duration::from_secs(60),
            cooldown: Duration::from_secs(600),
            memory_limit: None,
        }
    }
}

/// The rule names, in the table's order.
pub const RULES: [&str; 9] = [
    "cpu",
    "memory_limit",
    "memory_growth",
    "tokio_busy",
    "tokio_queue",
    "pool_saturated",
    "deadlock",
    "new_error",
    "error_rate",
];

impl Triggers {
    /// No automatic rule (incidents are taken on panics, crashes and `POST /debug/incidents`).
    pub fn none() -> Triggers {
        Triggers {
            off: RULES.iter().map(|r| r.to_string()).collect(),
            ..Triggers::default()
        }
    }

    /// Only the rules named (each one of [`RULES`]; another name is an error at spawn).
    pub fn only(names: &[&str]) -> Triggers {
        let mut t = Triggers::none();
        t.off.retain(|r| !names.contains(&r.as_str()));
        t.changes
            .extend(names.iter().map(|n| (n.to_string(), None, None)));
        t
    }

    /// Turns rule `name` off (one of [`RULES`]; another name is an error at spawn).
    pub fn without(mut self, name: &str) -> Triggers {
        self.off.push(name.to_string());
        self
    }

    /// Sets rule `name`'s threshold (its level or share: `cpu` 0.9, `memory_growth` 0.5,
    /// `tokio_queue` 1000 …; the `Rises` rules have none) and how long it must hold.
    pub fn set(
        mut self,
        name: &str,
        threshold: Option<f64>,
        sustain: Option<Duration>,
    ) -> Triggers {
        self.changes.push((name.to_string(), threshold, sustain));
        self
    }

    /// `PRODBG_INCIDENT_TRIGGERS`: `off` (none), `on` (the defaults), or the rules to keep,
    /// comma-separated (`cpu,pool_saturated`).
    pub(crate) fn parse(text: &str) -> Result<Triggers, String> {
        let text = text.trim();
        match text {
            "off" => return Ok(Triggers::none()),
            "on" | "" => return Ok(Triggers::default()),
            _ => {}
        }
        let names: Vec<&str> = text.split(',').map(str::trim).collect();
        if let Some(bad) = names.iter().find(|n| !RULES.contains(n)) {
            return Err(format!(
                "PRODBG_INCIDENT_TRIGGERS: unknown rule {bad:?}; give off, on, or some of {}",
                RULES.join(", ")
            ));
        }
        Ok(Triggers::only(&names))
    }

    /// The memory the `memory_limit` rule measures RSS against, in bytes, in place of the
    /// cgroup's `memory.max` (for a host whose limit prodbg cannot read, e.g. under cgroup v1,
    /// or that wants a budget of its own).
    pub fn memory_limit(mut self, bytes: u64) -> Triggers {
        self.memory_limit = Some(bytes);
        self
    }

    /// Time after spawn before any rule fires (default 60 s).
    pub fn warm_up(mut self, d: Duration) -> Triggers {
        self.warm_up = d;
        self
    }

    /// Time after a rule fires before it fires again (default 10 minutes).
    pub fn cooldown(mut self, d: Duration) -> Triggers {
        self.cooldown = d;
        self
    }

    /// The rules for a host with `cores` CPUs to use and `memory_limit` bytes (if limited);
    /// an error names an unknown rule or a bad threshold.
    pub(crate) fn rules(&self, cores: f64, memory_limit: Option<u64>) -> Result<Vec<Rule>, String> {
        for name in self.off.iter().chain(self.changes.iter().map(|c| &c.0)) {
            if !RULES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown incident trigger {name:?}; the rules are {}",
                    RULES.join(", ")
                ));
            }
        }
        let mut rules = Vec::new();
        for name in RULES {
            if self.off.iter().any(|o| o == name) {
                continue;
            }
            let change = self.changes.iter().rev().find(|c| c.0 == name);
            let threshold = change.and_then(|c| c.1);
            if let Some(t) = threshold {
                if !t.is_finite() || t <= 0.0 {
                    return Err(format!(
                        "incident trigger {name}: threshold {t} is not a positive number"
                    ));
                }
            }
            let sustain = |default: u64| {
                change
                    .and_then(|c| c.2)
                    .unwrap_or(Duration::from_secs(default))
            };
            let (series, check, says) = match name {
                "cpu" => (
                    "cpu",
                    Check::Above {
                        level: threshold.unwrap_or(0.9) * cores,
                        sustain: sustain(30),
                    },
                    "process CPU at its cores' limit",
                ),
                "memory_limit" => {
                    let Some(limit) = self.memory_limit.or(memory_limit) else {
                        continue;
                    };
                    (
                        "rss_bytes",
                        Check::Above {
                            level: threshold.unwrap_or(0.9) * limit as f64,
                            sustain: sustain(10),
                        },
                        "RSS near the cgroup memory limit",
                    )
                }
                "memory_growth" => (
                    "rss_bytes",
                    Check::GrowsBy {
                        share: threshold.unwrap_or(0.5),
                        window: Duration::from_secs(600),
                        min_value: 256.0 * MIB,
                        sustain: sustain(10),
                    },
                    "RSS grew over its 10-minute low",
                ),
                "tokio_busy" => (
                    "tokio.*.busy_ratio",
                    Check::Above {
                        level: threshold.unwrap_or(0.95),
                        sustain: sustain(30),
                    },
                    "Tokio workers busy without a break",
                ),
                "tokio_queue" => (
                    "tokio.*.global_queue",
                    Check::Above {
                        level: threshold.unwrap_or(1000.0),
                        sustain: sustain(10),
                    },
                    "Tokio's global queue is deep",
                ),
                "pool_saturated" => (
                    "pool.*.saturated",
                    Check::Above {
                        level: 1.0,
                        sustain: sustain(10),
                    },
                    "a connection pool is saturated with callers waiting",
                ),
                "deadlock" => ("deadlocks_found", Check::Rises, "a deadlock was found"),
                "new_error" => (
                    "error_callsites",
                    Check::Rises,
                    "a callsite logged its first ERROR",
                ),
                _ => (
                    "errors",
                    Check::Spike {
                        factor: threshold.unwrap_or(10.0),
                        window: Duration::from_secs(600),
                        floor: 1.0,
                        sustain: sustain(10),
                    },
                    "ERROR events far above their average",
                ),
            };
            rules.push(Rule {
                name,
                series,
                check,
                warm_up: self.warm_up,
                cooldown: self.cooldown,
                says,
            });
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_host_and_names_are_checked() {
        let rules = Triggers::default().rules(2.0, None).unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.name).collect();
        assert!(!names.contains(&"memory_limit"), "no limit, no rule");
        assert_eq!(names.len(), RULES.len() - 1);
        let cpu = rules.iter().find(|r| r.name == "cpu").unwrap();
        assert_eq!(
            cpu.check,
            Check::Above {
                level: 1.8,
                sustain: Duration::from_secs(30)
            }
        );
        let with_limit = Triggers::default().rules(2.0, Some(1 << 30)).unwrap();
        assert!(with_limit.iter().any(|r| r.name == "memory_limit"));
        let err = Triggers::default()
            .without("cpus")
            .rules(2.0, None)
            .unwrap_err();
        assert!(err.contains("unknown incident trigger \"cpus\""), "{err}");
        let err = Triggers::default()
            .set("cpu", Some(-1.0), None)
            .rules(2.0, None)
            .unwrap_err();
        assert!(err.contains("not a positive number"), "{err}");
        assert!(Triggers::none().rules(2.0, Some(1)).unwrap().is_empty());
        let tuned = Triggers::default()
            .set("cpu", Some(0.5), Some(Duration::from_secs(3)))
            .rules(4.0, None)
            .unwrap();
        assert_eq!(
            tuned[0].check,
            Check::Above {
                level: 2.0,
                sustain: Duration::from_secs(3)
            }
        );
    }
}
