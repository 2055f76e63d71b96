//! A tokio service with its own lock and its own `tracing` stack.
use std::sync::Arc;

use parking_lot::Mutex;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() {
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_subscriber::fmt::layer())
        .init();
    let store = Arc::new(Mutex::new(bytes::BytesMut::new()));
    store.lock().extend_from_slice(b"ok");
    tracing::info!(len = store.lock().len(), "service up");
}
