//! What the layer's tests and its readers' tests share: a subscriber with the layer, and
//! running code under it.

use tracing::Dispatch;
use tracing_subscriber::prelude::*;

use super::{filtered_layer, Options, SpansHandle};

/// A subscriber with the layer under its own filter, and the handle.
pub(crate) fn dispatch(opts: Options) -> (Dispatch, SpansHandle) {
    let (layer, handle) = filtered_layer(opts);
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

/// Runs `f` with `d` as this thread's subscriber.
pub(crate) fn with<R>(d: &Dispatch, f: impl FnOnce() -> R) -> R {
    tracing::dispatcher::with_default(d, f)
}

/// The calling thread's kernel id.
pub(crate) fn tid() -> i32 {
    super::thread::gettid()
}
