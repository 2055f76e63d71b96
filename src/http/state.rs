//! What every handler can reach: configuration, tokens, the audit log, metrics, probes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::guard::FailureLimiter;
use super::metrics::ServerMetrics;
use crate::admin::Limits;
use crate::audit::AuditLog;
use crate::auth::TokenSet;
use crate::probes::health::ReadinessCheck;

/// The probes a host configured.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Registered connection pools.
    pub pools: crate::probes::pools::PoolRegistry,
    /// Registered Tokio runtimes.
    pub runtimes: crate::probes::tokio_rt::RuntimeRegistry,
    /// Where the tokio-console gRPC server listens, when the host started one.
    pub console_addr: Option<std::net::SocketAddr>,
    /// Run-time changes still in force (log level, heap sampling).
    pub overrides: crate::probes::overrides::Overrides,
    /// The host's reloadable log filter, when installed.
    pub log: Option<crate::probes::log_level::LogControl>,
    /// The deadlock detector, when enabled.
    #[cfg(feature = "deadlock")]
    pub deadlock: Option<Arc<crate::probes::deadlock::DeadlockDetector>>,
}

/// Shared state of one admin server (or one mounted router).
pub struct Shared {
    /// The host's name, shown in titles and the index.
    pub service_name: String,
    /// The configured tokens.
    pub tokens: TokenSet,
    /// The audit log.
    pub audit: AuditLog,
    /// Timeouts and caps.
    pub limits: Limits,
    /// Permits for concurrent requests.
    pub concurrency: Arc<Semaphore>,
    /// Per-client count of failed authentications.
    pub failures: FailureLimiter,
    /// The server's own RED metrics.
    pub metrics: ServerMetrics,
    /// Everything `/metrics` encodes.
    pub registry: Registry,
    /// Whether `/health/*` answers without a token.
    pub health_public: bool,
    /// Whether `/metrics` answers without a token.
    pub metrics_public: bool,
    /// Readiness checks run by `/health/ready`.
    pub checks: Vec<ReadinessCheck>,
    /// The configured probes.
    pub probes: Probes,
    /// Version and build facts the host supplied (`git_sha`, `version`, …).
    pub build_info: std::collections::BTreeMap<String, String>,
    /// When the server was built.
    pub started: Instant,
    /// Wall-clock start, for uptime reports.
    pub started_at: SystemTime,
    boot: u32,
    seq: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("service_name", &self.service_name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Assembles the state; `registry` already holds `metrics`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service_name: String,
        tokens: TokenSet,
        audit: AuditLog,
        limits: Limits,
        metrics: ServerMetrics,
        registry: Registry,
        health_public: bool,
        metrics_public: bool,
        checks: Vec<ReadinessCheck>,
        build_info: std::collections::BTreeMap<String, String>,
        probes: Probes,
    ) -> Shared {
        let mut boot = [0u8; 4];
        let _ = getrandom::fill(&mut boot);
        Shared {
            service_name,
            tokens,
            audit,
            concurrency: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            failures: FailureLimiter::new(limits.auth_failures_per_minute),
            limits,
            metrics,
            registry,
            health_public,
            metrics_public,
            checks,
            build_info,
            probes,
            started: Instant::now(),
            started_at: SystemTime::now(),
            boot: u32::from_ne_bytes(boot),
            seq: AtomicU64::new(0),
        }
    }

    /// The scope `endpoint` needs on this server: `None` when it is open (the health probes by
    /// default, `/metrics` when configured so).
    pub fn scope_for(&self, endpoint: &super::routes::Endpoint) -> Option<crate::auth::Scope> {
        let open = match endpoint.scope {
            None => self.health_public,
            Some(_) => endpoint.path == "/metrics" && self.metrics_public,
        };
        if open {
            None
        } else {
            Some(endpoint.scope.unwrap_or(crate::auth::Scope::Read))
        }
    }

    /// A new request id: this server's random boot id and a sequence number.
    pub fn next_request_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:08x}-{n:06}", self.boot)
    }
}
