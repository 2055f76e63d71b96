//! What the guard and the server's own endpoints share: tokens, the audit log, limits, the
//! registered probes and the metrics registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::lockout::{Lockout, LockoutLimits};
use super::origin::AllowedHosts;
use super::red::ServerMetrics;
use super::table::RouteRow;
use crate::config::Limits;
use crate::recorder::timeline::{Reading, Timeline};
use crate::seam::fair::FairShare;
use crate::seam::{Access, Probe, Results};
use crate::security::audit::AuditLog;
use crate::security::tokens::TokenSet;
use crate::security::{AuditCollector, Scope};

/// Everything the server is built from.
pub(crate) struct ServerConfig {
    /// The host's name, shown in titles and file names.
    pub(crate) service_name: Arc<str>,
    /// The configured tokens.
    pub(crate) tokens: TokenSet,
    /// The audit log.
    pub(crate) audit: AuditLog,
    /// Timeouts and caps.
    pub(crate) limits: Limits,
    /// The host's registry (its own metrics); the server adds its RED metrics and each
    /// probe's collector.
    pub(crate) registry: Registry,
    /// The host names requests may name besides IP literals and localhost.
    pub(crate) allowed_hosts: AllowedHosts,
    /// Whether `/health/*` answers without a token.
    pub(crate) health_public: bool,
    /// Whether `/metrics` answers without a token.
    pub(crate) metrics_public: bool,
    /// The registered probes, in index order.
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    /// The concurrency caps (shared with the probes).
    pub(crate) fair: Arc<FairShare>,
    /// The last flamegraphs the probes kept, for the console.
    pub(crate) results: Results,
    /// Called with each second's readings after the timeline took them (the trigger rules).
    pub(crate) watch: Option<VitalsWatch>,
    /// Whether verified TLS client certificates stand for tokens (then no token is needed).
    pub(crate) cert_clients: bool,
}

/// What watches the vital signs each second: it gets the readings the timeline stored.
pub(crate) type VitalsWatch = Box<dyn Fn(&[Reading<'_>]) + Send + Sync>;

/// Shared state of one admin server (or one mounted router).
pub(crate) struct ServerState {
    pub(crate) service_name: Arc<str>,
    pub(crate) tokens: TokenSet,
    pub(crate) audit: AuditLog,
    pub(crate) limits: Limits,
    pub(crate) fair: Arc<FairShare>,
    /// Request slots only `admin`-scope tokens take, once `fair`'s global cap is full.
    pub(crate) admin_reserve: Arc<Semaphore>,
    pub(crate) lockout: Lockout,
    pub(crate) allowed_hosts: AllowedHosts,
    pub(crate) red: ServerMetrics,
    pub(crate) registry: Registry,
    pub(crate) probes: Vec<Arc<dyn Probe>>,
    pub(crate) results: Results,
    /// Called with each second's readings (see [`ServerConfig::watch`]).
    pub(crate) watch: Option<VitalsWatch>,
    /// See [`ServerConfig::cert_clients`].
    pub(crate) cert_clients: bool,
    /// The vital signs over the last hour, fed each second by the sampler (`sampler.rs`).
    timeline: Mutex<Timeline>,
    /// The endpoint table, set once the router is built.
    pub(crate) table: OnceLock<Vec<RouteRow>>,
    health_public: bool,
    metrics_public: bool,
    boot: u32,
    seq: AtomicU64,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("service_name", &self.service_name)
            .field("probes", &self.probes.len())
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// Assembles the state and registers the RED metrics and every probe's collector.
    pub(crate) fn new(config: ServerConfig) -> ServerState {
        let ServerConfig {
            service_name,
            tokens,
            audit,
            limits,
            mut registry,
            allowed_hosts,
            health_public,
            metrics_public,
            probes,
            fair,
            results,
            watch,
            cert_clients,
        } = config;
        let red = ServerMetrics::new(&mut registry);
        registry.register_collector(Box::new(AuditCollector::new(audit.clone())));
        for probe in &probes {
            if let Some(c) = probe.collector() {
                registry.register_collector(c);
            }
        }
        let mut boot = [0u8; 4];
        let _ = getrandom::fill(&mut boot);
        ServerState {
            service_name,
            tokens,
            audit,
            fair,
            admin_reserve: Arc::new(Semaphore::new(limits.reserved_for_admin)),
            lockout: Lockout::new(LockoutLimits {
                max_failures: limits.auth_failures_per_minute,
                ..LockoutLimits::default()
            }),
            allowed_hosts,
            limits,
            red,
            registry,
            probes,
            results,
            watch,
            cert_clients,
            timeline: Mutex::new(Timeline::new()),
            table: OnceLock::new(),
            health_public,
            metrics_public,
            boot: u32::from_ne_bytes(boot),
            seq: AtomicU64::new(0),
        }
    }

    /// The scope a route needs on this server: `None` when it is open (the health probes by
    /// default, `/metrics` when configured so).
    pub(crate) fn scope_for(&self, access: Access) -> Option<Scope> {
        match access {
            Access::Scope(s) => Some(s),
            Access::Health if self.health_public => None,
            Access::Health => Some(Scope::Read),
            Access::Scrape if self.metrics_public => None,
            Access::Scrape => Some(Scope::Read),
        }
    }

    /// The timeline, locked (a tick or a query holds it for well under a millisecond).
    pub(crate) fn timeline(&self) -> MutexGuard<'_, Timeline> {
        // A tick never leaves the timeline half-updated in a way a reader could trip on.
        self.timeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint table (empty until the router is built).
    pub(crate) fn table(&self) -> &[RouteRow] {
        self.table.get().map_or(&[], Vec::as_slice)
    }

    /// A new request id: this server's random boot id and a sequence number.
    pub(crate) fn next_request_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:08x}-{n:06}", self.boot)
    }
}
