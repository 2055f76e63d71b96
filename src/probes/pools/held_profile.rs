//! The held-connections profile (`/debug/pprof/pool_held`): one sample per connection out,
//! valued by how long it has been out, on the stack of the function that acquired it — Go's
//! custom-profile idea ("resources that must be explicitly closed") in the shared
//! [`Profile`] type, so `go tool pprof -top` names the function that keeps connections.

use std::time::{Duration, SystemTime};

use super::leaks::age;
use super::{naming, PoolRegistry};
use crate::layer::clock;
use crate::stack::modules::ModuleSet;
use crate::stack::offline::pprof_mappings;
use crate::stack::profile::{Leaf, Profile, Sample, ValueType};
use crate::stack::Frame;

/// What a held-connections sample carries: one connection, and how long it has been out.
const VALUE_TYPES: &[ValueType] = &[
    ValueType {
        kind: "connections",
        unit: "count",
    },
    ValueType {
        kind: "held",
        unit: "milliseconds",
    },
];

/// Why there is no profile.
#[derive(Debug)]
pub(crate) enum NoProfile {
    /// No pool of that name is registered (the names that are).
    UnknownPool(Vec<String>),
}

/// The profile of the connections out now, of pool `only` or of every pool (label `pool`).
/// Names functions: call it off the async runtime's threads.
pub(crate) fn profile(registry: &PoolRegistry, only: Option<&str>) -> Result<Profile, NoProfile> {
    let names: Vec<String> = registry.snapshot().into_iter().map(|(n, _)| n).collect();
    if let Some(pool) = only {
        if !names.iter().any(|n| n == pool) {
            return Err(NoProfile::UnknownPool(names));
        }
    }
    let recorders = registry.recorders();
    let mut samples = Vec::new();
    let mut warnings = Vec::new();
    let now = clock::now();
    for name in names
        .iter()
        .filter(|n| only.is_none_or(|p| p == n.as_str()))
    {
        let Some(table) = recorders.get(name).and_then(|s| s.holder_table()) else {
            warnings.push(format!(
                "pool {name} is not acquired through its AcquireRecorder (PoolRegistry::acquires(\"{name}\").acquire(&pool)): its holders are not named"
            ));
            continue;
        };
        if table.untracked() > 0 {
            warnings.push(format!(
                "pool {name}: {} connections out found the holder table full and are not named",
                table.untracked()
            ));
        }
        let holds = table.holds();
        let frames = naming::frames_of(&holds.iter().map(|h| h.pc).collect::<Vec<_>>());
        for (h, frames) in holds.iter().zip(frames) {
            let site = naming::site(h.site);
            let mut stack: Vec<Frame> = frames.to_vec();
            if stack.is_empty() {
                // No name for the address: the call site stands for the function.
                stack.push(Frame {
                    function: Some(site.clone()),
                    file: Some(h.site.file().to_string()),
                    line: Some(h.site.line()),
                    ..Frame::unknown(h.pc)
                });
            }
            let (span, route) = naming::span_and_route(h.labels);
            let mut labels = vec![("pool", name.clone()), ("site", site)];
            labels.extend(span.map(|s| ("span", s.to_string())));
            labels.extend(route.map(|r| ("route", r.to_string())));
            if h.task != 0 {
                labels.push(("task", h.task.to_string()));
            }
            let held_ms = i64::try_from(age(h, now).as_millis()).unwrap_or(i64::MAX);
            samples.push(Sample {
                root: Some(format!("pool {name}")),
                frames: stack,
                labels,
                values: vec![1, held_ms],
            });
        }
    }
    let mappings = ModuleSet::snapshot()
        .map(|m| pprof_mappings(&m))
        .unwrap_or_default();
    let scope = only.map_or("every pool".to_string(), |p| format!("pool {p}"));
    Ok(Profile {
        kind: "pool_held",
        value_types: VALUE_TYPES,
        default_value: "held",
        flame_value: (1, "ms held"),
        period: (VALUE_TYPES[0], 1),
        leaf: Leaf::Returns,
        start_time: SystemTime::now(),
        duration: Duration::ZERO,
        symbolized: true,
        mappings,
        describe: format!("{} connections held, {scope}", samples.len()),
        samples,
        figures: Vec::new(),
        warnings,
    })
}
