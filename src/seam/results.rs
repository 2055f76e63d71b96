//! The last flamegraph of each kind, kept in memory so the console can show it in a frame and
//! offer the pprof file of the same profile.
//!
//! A probe that renders an SVG on request (`?format=svg`) also renders the pprof file of the
//! same profile and puts both here; the console serves them back under
//! `/debug/console/last/<kind>.svg` and `.pb.gz`. One result per kind: a new one replaces
//! the old, so memory stays bounded by the size of one profile per kind (and results over
//! [`MAX_RESULT_BYTES`] are not kept). Scrapers asking for pprof never evict them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Largest result kept (SVG + pprof), bytes.
pub(crate) const MAX_RESULT_BYTES: usize = 32 << 20;

/// One rendered profile.
#[derive(Debug)]
pub(crate) struct StoredResult {
    /// `cpu` or `heap`.
    pub(crate) kind: &'static str,
    /// The flamegraph's title.
    pub(crate) title: String,
    /// When the profile was started.
    pub(crate) taken_at: SystemTime,
    /// The name of the token that asked for it.
    pub(crate) by: String,
    /// The inferno SVG.
    pub(crate) svg: Vec<u8>,
    /// Its download name.
    pub(crate) svg_name: String,
    /// The gzipped `profile.proto` of the same profile.
    pub(crate) pprof: Vec<u8>,
    /// Its download name.
    pub(crate) pprof_name: String,
}

/// The last result of each kind. Cheap to clone; clones share the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Results {
    last: Arc<Mutex<BTreeMap<&'static str, Arc<StoredResult>>>>,
}

impl Results {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Arc<StoredResult>>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `result` as the last of its kind; returns whether it was kept (not too large).
    pub(crate) fn put(&self, result: StoredResult) -> bool {
        if result.svg.len() + result.pprof.len() > MAX_RESULT_BYTES {
            tracing::info!(target: "prodbg", kind = result.kind, bytes = result.svg.len() + result.pprof.len(), "profile too large to keep for the console");
            return false;
        }
        self.lock().insert(result.kind, Arc::new(result));
        true
    }

    /// The last result of `kind`.
    pub(crate) fn get(&self, kind: &str) -> Option<Arc<StoredResult>> {
        self.lock().get(kind).cloned()
    }

    /// Every kept result, by kind.
    pub(crate) fn list(&self) -> Vec<Arc<StoredResult>> {
        self.lock().values().cloned().collect()
    }
}
