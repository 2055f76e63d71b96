//! The HTTP layer: routing, auth and scopes, audit, limits, errors, handlers.
//!
//! It knows nothing about jemalloc or pprof: handlers call probes and renderers.

pub mod error;
pub mod guard;
pub mod handlers;
pub mod metrics;
pub mod params;
pub mod routes;
pub mod server;
pub mod state;
