//! What the benches share. Each bench declares `pub mod common;` and uses the parts it needs.

pub mod admin;
pub mod child;
pub mod clock;
pub mod env;
pub mod http;
pub mod memory;
pub mod stats;
#[cfg(feature = "tls")]
pub mod tls;
pub mod work;
