//! What an incident holds, gathered by the server for the incident worker
//! (`crate::incidents::capture`): the bundle's parts (every probe's, `metrics.txt`, the
//! timeline), and an audit record once the incident is on disk.

use std::time::Duration;

use super::state::ServerState;
use crate::incidents::capture::Parts;
use crate::incidents::{Gather, Meta};
use crate::seam::BoxFuture;
use crate::security::audit::{AuditRecord, Folding};

/// How long a part may take beyond the fresh profiles' window.
const PART_GRACE: Duration = Duration::from_secs(20);

/// Files of the fresh (windowed) profiles, left out when there is no time for them.
const FRESH: &[&str] = &["cpu.pb.gz", "cpu.svg", "wall.pb.gz", "wall.svg"];

impl Gather for ServerState {
    fn gather(&self, window: Option<Duration>) -> BoxFuture<Parts> {
        let mut parts = super::bundle::parts(self, window.unwrap_or(Duration::from_secs(1)));
        if window.is_none() {
            parts.retain(|p| !p.files.iter().all(|f| FRESH.contains(&f.as_str())));
        }
        // A part that never ends (a dump waiting on a wedged runtime) must not hold every
        // later capture: each gets the window plus a grace period.
        let limit = window.unwrap_or(Duration::ZERO) + PART_GRACE;
        for part in &mut parts {
            let bytes = std::mem::replace(&mut part.bytes, Box::pin(async { Ok(Vec::new()) }));
            part.bytes = Box::pin(async move {
                tokio::time::timeout(limit, bytes)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("not done within {} s: left out", limit.as_secs()))
                    })
            });
        }
        Box::pin(async move { super::bundle::produce(parts).await })
    }

    fn written(&self, meta: &Meta) {
        // A manual capture's own request is already its audit record.
        if meta.kind == crate::incidents::Kind::Manual {
            return;
        }
        let mut details = serde_json::Map::new();
        details.insert("incident".into(), meta.id.clone().into());
        details.insert("kind".into(), meta.kind.as_str().into());
        details.insert("reason".into(), meta.reason.clone().into());
        details.insert("bytes".into(), meta.size.into());
        self.audit.record(
            AuditRecord {
                request_id: self.next_request_id(),
                client: "prodbg".into(),
                method: "CAPTURE".into(),
                path: format!("/debug/incidents/{}", meta.id),
                status: 201,
                details,
                ..AuditRecord::default()
            },
            Folding::Never,
        );
    }
}
