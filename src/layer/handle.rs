//! [`SpansHandle`]: what the readers (the spans and errors probes) read the layer through.

use std::sync::Arc;

use super::shared::Shared;

/// What the admin server reads the layer through: hand it to
/// [`AdminBuilder::spans`](crate::AdminBuilder::spans). Cheap to clone; clones read the same
/// layer.
#[derive(Debug, Clone)]
pub struct SpansHandle {
    shared: Arc<Shared>,
}

impl SpansHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> SpansHandle {
        SpansHandle { shared }
    }

    /// The layer's table, latency window, error groups, caps and counters.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}
