//! The admin server the benches measure, and its token.

use prodbg::{Admin, AdminBuilder, AdminHandle, Scope};

/// The benches' admin token.
pub const SECRET: &str = "bench-secret-0123456789abcdef";

/// An admin server on a free loopback port named `service`, with one admin token ([`SECRET`]).
pub fn spawn(service: &str) -> AdminHandle {
    spawn_from(Admin::builder(), service)
}

/// [`spawn`] from a builder the bench has started (with its log control, span layer …).
pub fn spawn_from(builder: AdminBuilder, service: &str) -> AdminHandle {
    builder
        .bind("127.0.0.1:0")
        .service_name(service)
        .token("ops", Scope::Admin, SECRET)
        .spawn()
        .expect("admin server")
}
