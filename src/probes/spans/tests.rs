//! The layer's tests, ported from its prototype: in-flight spans and their caps, latency,
//! error groups, the three ways to install it, and the profilers' label slot. Each test runs
//! its own subscriber with `with_default`, so tests never share a layer.

mod errors;
mod in_flight;
mod install;
mod labels;
mod labels_tokio;
mod latency;

use tracing::Dispatch;
use tracing_subscriber::prelude::*;

use super::{filtered_layer, Options, SpansHandle};

/// A subscriber with the layer under its own filter, and the handle.
fn dispatch(opts: Options) -> (Dispatch, SpansHandle) {
    let (layer, handle) = filtered_layer(opts);
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        handle,
    )
}

/// Runs `f` with `d` as this thread's subscriber.
fn with<R>(d: &Dispatch, f: impl FnOnce() -> R) -> R {
    tracing::dispatcher::with_default(d, f)
}

/// The calling thread's kernel id.
fn tid() -> i32 {
    super::thread::gettid()
}
