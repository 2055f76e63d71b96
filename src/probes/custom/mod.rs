//! Endpoints the host adds with `AdminBuilder::endpoint`:
//! guarded by their scope, audited and listed like the built-in ones.

use std::sync::Mutex;

use crate::seam::{Probe, ProbeSpec, Route};

/// The host's endpoints.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "custom",
    feature: None,
    routes: &[],
    bundle_files: &[],
};

/// Serves the routes the host added.
#[derive(Debug)]
pub(crate) struct Custom {
    routes: Mutex<Vec<Route>>,
}

impl Custom {
    /// Serves `routes` (taken once, when the router is built).
    pub(crate) fn new(routes: Vec<Route>) -> Custom {
        Custom {
            routes: Mutex::new(routes),
        }
    }
}

impl Probe for Custom {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        std::mem::take(&mut *self.routes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
