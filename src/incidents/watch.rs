//! The trigger rules' watch on the vital signs: each second the server hands it the readings;
//! a rule that fires takes an incident of kind `trigger`, with `trigger.json` naming the rule,
//! the series, the value, the threshold and the rule's settings.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use super::{Incidents, Kind};
use crate::recorder::cgroup;
use crate::recorder::rules::Rules;
use crate::recorder::timeline::Reading;
use crate::recorder::triggers::Triggers;

/// The watch for `triggers` taking incidents into `incidents`; `None` when every rule is off.
/// The rules' defaults follow this process's cgroup (CPU quota, memory limit).
#[allow(clippy::type_complexity)]
pub(crate) fn watch(
    triggers: &Triggers,
    incidents: Arc<Incidents>,
) -> Result<Option<Box<dyn Fn(&[Reading<'_>]) + Send + Sync>>, String> {
    let rules = triggers.rules(cgroup::cores(), cgroup::memory_limit())?;
    if rules.is_empty() {
        return Ok(None);
    }
    let rules = Mutex::new(Rules::new(rules));
    Ok(Some(Box::new(move |readings: &[Reading<'_>]| {
        let fires = rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tick(readings);
        for fire in fires {
            let detail = json!({
                "rule": fire.rule,
                "series": fire.series,
                "value": fire.value,
                "threshold": fire.threshold,
                "settings": fire.settings,
            });
            // A skipped capture (busy, hourly cap) is counted by the store; the rule's
            // cooldown runs either way.
            let _ = incidents.capture(Kind::Trigger, fire.reason, Some(detail));
        }
    })))
}
