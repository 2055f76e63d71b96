//! The builder, the running server's handle, and the server thread.

mod tls;

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Limits;
use crate::error::Error;
use crate::probes::{HostProbes, ReadinessCheck};
use crate::seam::fair::{FairLimits, FairShare};
use crate::seam::{Access, Overrides, ProbeContext, Route};
use crate::security::audit::{
    sighup_at_default_action, AuditError, AuditKey, AuditLog, FsyncPolicy, Rotation,
};
use crate::security::tokens::strength::weakness;
use crate::security::tokens::{parse_tokens, Token, TokenSet};
use crate::security::Scope;
use crate::server::{AllowedHosts, ServerConfig, ServerState};

/// Default listen address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6060";

/// Entry point: `Admin::builder()…spawn()` or `…build()?.router()`.
#[derive(Debug)]
pub struct Admin {
    state: Arc<ServerState>,
    router: Router,
    addr: String,
    incidents: Option<Arc<crate::incidents::Incidents>>,
    tls: Option<crate::server::TlsHandle>,
    allow_plaintext: bool,
}

/// Configures an admin server. Errors in arguments are kept and returned by
/// [`build`](AdminBuilder::build) / [`spawn`](AdminBuilder::spawn), so calls chain.
#[derive(Debug)]
pub struct AdminBuilder {
    addr: String,
    tokens: Vec<Token>,
    audit_file: Option<PathBuf>,
    audit_key: Option<AuditKey>,
    audit_fsync: FsyncPolicy,
    audit_rotation: Rotation,
    /// `None`: install the SIGHUP hook when SIGHUP is at its default action.
    audit_sighup: Option<bool>,
    service_name: String,
    limits: Limits,
    health_public: bool,
    metrics_public: bool,
    allowed_hosts: Vec<String>,
    registry: Registry,
    probes: HostProbes,
    incident_dir: Option<PathBuf>,
    incident_limits: crate::incidents::IncidentLimits,
    incident_triggers: crate::recorder::triggers::Triggers,
    tls: tls::TlsOptions,
    error: Option<Error>,
}

impl Admin {
    /// A builder with secure defaults: loopback address, no tokens, no audit file.
    pub fn builder() -> AdminBuilder {
        AdminBuilder {
            addr: DEFAULT_ADDR.to_string(),
            tokens: Vec::new(),
            audit_file: None,
            audit_key: None,
            audit_fsync: FsyncPolicy::default(),
            audit_rotation: Rotation::default(),
            audit_sighup: None,
            service_name: default_service_name(),
            limits: Limits::default(),
            health_public: true,
            metrics_public: false,
            allowed_hosts: Vec::new(),
            registry: Registry::default(),
            probes: HostProbes::default(),
            incident_dir: None,
            incident_limits: Default::default(),
            incident_triggers: Default::default(),
            tls: Default::default(),
            error: None,
        }
    }

    /// A builder configured from `PRODBG_ADDR`, `PRODBG_TOKENS` and `PRODBG_AUDIT_FILE`
    /// (see [`AdminBuilder::env`]).
    pub fn from_env() -> AdminBuilder {
        Admin::builder().env()
    }

    /// The guarded router with every endpoint, to nest or merge into the host's own axum app
    /// (`app.merge(admin.router())`). Requests then run on the host's runtime, not on the admin
    /// server's own thread.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// [`AdminHandle::trigger_incident`], for a mounted router.
    pub fn trigger_incident(&self, rule: &str, reason: &str, detail: serde_json::Value) -> bool {
        trigger(self.incidents.as_deref(), rule, reason, detail)
    }

    /// Binds the listen address and starts serving on a new OS thread with its own Tokio
    /// runtime. Binding errors (address taken, not local) are returned here, and so is a
    /// configuration without any token, which could answer nothing but the health probes.
    pub fn spawn(self) -> Result<AdminHandle, Error> {
        if self.state.tokens.is_empty() && !self.state.cert_clients {
            return Err(Error::Config(
                "no token is configured, so every endpoint but /health/* would answer 401: add one \
                 with .token(\"ops\", Scope::Admin, secret) or PRODBG_TOKENS=ops:admin:<secret> \
                 (prodbg::generate_secret() makes a secret; the quickstart example prints one)"
                    .to_string(),
            ));
        }
        let addr = resolve(&self.addr)?;
        if !addr.ip().is_loopback() && self.tls.is_none() && !self.allow_plaintext {
            return Err(Error::Config(format!(
                "refusing to serve plain HTTP on {}, which is not a loopback address: tokens, \
                 profiles and environment would cross the network in cleartext. Serve TLS \
                 (feature `tls`: .tls_files(cert, key) or PRODBG_TLS_CERT and PRODBG_TLS_KEY), \
                 or, where something else encrypts the traffic (a mesh sidecar, a VPN), say \
                 .allow_plaintext() or PRODBG_ALLOW_PLAINTEXT=1",
                self.addr
            )));
        }
        let listener = StdListener::bind(addr).map_err(|source| Error::Bind {
            addr: self.addr.clone(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Start(format!("cannot make the listener non-blocking: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Start(format!("cannot read the bound address: {e}")))?;
        if !local_addr.ip().is_loopback() && self.tls.is_none() {
            tracing::warn!(
                target: "prodbg",
                addr = %local_addr,
                "the prodbg admin server listens on a non-loopback address over plain HTTP, as \
                 allowed by allow_plaintext: its tokens (Bearer or Basic), profiles and \
                 environment cross the network in cleartext, readable by anyone on the path \
                 unless something else (a mesh sidecar, a VPN) encrypts it"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("prodbg-blocking")
            .max_blocking_threads(4)
            .build()
            .map_err(|e| Error::Start(format!("cannot build the admin runtime: {e}")))?;
        let (tx, rx) = watch::channel(false);
        let limits = self.state.limits.clone();
        let router = self.router;
        let state = Arc::clone(&self.state);
        let sampler_state = Arc::clone(&self.state);
        let tls = self.tls.clone();
        #[cfg(feature = "tls")]
        let reload = self
            .tls
            .clone()
            .map(|t| crate::tls::reload::watch(t, self.state.audit.clone(), rx.clone()));
        let thread = std::thread::Builder::new()
            .name("prodbg-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // The timeline's sampler ends with the server: it watches the same signal.
                    let sampler = tokio::spawn(crate::server::record_vitals(sampler_state, rx.clone()));
                    #[cfg(feature = "tls")]
                    if let Some(reload) = reload {
                        tokio::spawn(reload);
                    }
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            crate::server::serve(l, router, limits, tls, rx)
                                .await
                        }
                        Err(e) => tracing::error!(target: "prodbg", error = %e, "cannot register the listener"),
                    }
                    sampler.abort();
                    let _ = sampler.await;
                });
                // Every request has been answered: the folded counts go to the file now, before
                // `shutdown()` returns, not whenever the last reference to the log is dropped.
                state.audit.flush();
                // Don't let a stuck blocking task (a long symbolization) hold the host's shutdown.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::Start(format!("cannot spawn the admin thread: {e}")))?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(target: "prodbg", addr = %local_addr, scheme, "prodbg admin server listening");
        Ok(AdminHandle {
            local_addr,
            scheme,
            shutdown: tx,
            thread: Some(thread),
            incidents: self.incidents,
        })
    }
}

impl AdminBuilder {
    /// Listen address, `host:port`. Default `127.0.0.1:6060`; port 0 picks a free port.
    /// A non-loopback address needs at least one token.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Adds a token named `name` (what the audit log records) holding `scope` (scopes are
    /// ordered: `Admin` includes `Profile`, which includes `Read`). The secret is kept only as a
    /// SHA-256 digest.
    pub fn token(mut self, name: &str, scope: Scope, secret: &str) -> Self {
        match Token::new(name, scope, secret) {
            Ok(t) => self.add_tokens(vec![t]),
            Err(e) => self.keep_error(e),
        }
        self
    }

    /// Adds tokens from the environment variable `var`, or from the file named by `{var}_FILE`
    /// (a Kubernetes secret mount, a systemd credential), in the `PRODBG_TOKENS` format:
    /// `name:scope:secret` entries separated by commas (or, in a file, newlines), e.g.
    /// `ops:admin:<secret>,grafana:read:<secret>`. Neither set adds nothing; both set is an
    /// error. `var` is removed from the environment once read (see [`env`](Self::env)).
    pub fn tokens_from_env(mut self, var: &str) -> Self {
        let file_var = format!("{var}_FILE");
        match crate::config::env::secret(var, &file_var) {
            Ok(Some(list)) => match parse_tokens(&list.replace(['\n', '\r'], ",")) {
                Ok(tokens) => self.add_tokens(tokens),
                Err(e) => self.keep_error(Error::Config(format!("{var}: {e}"))),
            },
            Ok(None) => {}
            Err(e) => self.keep_error(e),
        }
        self
    }

    /// Reads `PRODBG_ADDR` (listen address), `PRODBG_TOKENS` or `PRODBG_TOKENS_FILE` (see
    /// [`tokens_from_env`](Self::tokens_from_env)), `PRODBG_AUDIT_FILE` (audit file path),
    /// `PRODBG_AUDIT_KEY` or `PRODBG_AUDIT_KEY_FILE` (see [`audit_key`](Self::audit_key)),
    /// `PRODBG_FLIGHT_RECORDER` (`off`, or `on[,hz=N][,retention=5m]`),
    /// `PRODBG_ALLOWED_HOSTS` (see [`allowed_hosts`](Self::allowed_hosts)),
    /// `PRODBG_INCIDENT_DIR` (see [`incident_dir`](Self::incident_dir)) and
    /// `PRODBG_INCIDENT_TRIGGERS` (`off`, or the rules to keep, e.g. `cpu,pool_saturated`),
    /// `PRODBG_ALLOW_PLAINTEXT` (see [`allow_plaintext`](Self::allow_plaintext)) and, with
    /// feature `tls`, `PRODBG_TLS_CERT` and `PRODBG_TLS_KEY` (paths, see
    /// [`tls_files`](Self::tls_files)), `PRODBG_TLS_CLIENT_CA`, `PRODBG_TLS_CLIENTS`
    /// (`name:scope,…`, see [`tls_client`](Self::tls_client)) and
    /// `PRODBG_TLS_CLIENT_OPTIONAL`. Unset variables leave the current setting.
    ///
    /// `PRODBG_TOKENS` and `PRODBG_AUDIT_KEY` are removed from the environment once read (and,
    /// on Linux, wiped from `/proc/<pid>/environ`), so child processes do not inherit them.
    /// Removing a variable races with other threads reading the environment outside Rust's
    /// lock (C code calling `getenv`): call this at the start of `main`, before starting
    /// threads.
    pub fn env(mut self) -> Self {
        if let Ok(path) = std::env::var("PRODBG_INCIDENT_DIR") {
            if path.trim().is_empty() {
                self.keep_error(Error::Config("PRODBG_INCIDENT_DIR is set but empty".into()));
            } else {
                self.incident_dir = Some(PathBuf::from(path));
            }
        }
        if let Ok(text) = std::env::var("PRODBG_INCIDENT_TRIGGERS") {
            match crate::recorder::triggers::Triggers::parse(&text) {
                Ok(t) => self.incident_triggers = t,
                Err(e) => self.keep_error(Error::Config(e)),
            }
        }
        if let Ok(text) = std::env::var("PRODBG_FLIGHT_RECORDER") {
            match crate::probes::cpu::FlightRecorder::parse(&text) {
                Ok(f) => self.probes.flight = f,
                Err(e) => self.keep_error(Error::Config(e)),
            }
        }
        if let Ok(addr) = std::env::var("PRODBG_ADDR") {
            self.addr = addr;
        }
        self.tls_env();
        if let Ok(path) = std::env::var("PRODBG_AUDIT_FILE") {
            if path.trim().is_empty() {
                self.keep_error(Error::Config("PRODBG_AUDIT_FILE is set but empty".into()));
            } else {
                self.audit_file = Some(PathBuf::from(path));
            }
        }
        if let Ok(list) = std::env::var("PRODBG_ALLOWED_HOSTS") {
            self = self.allowed_hosts(list.split(',').filter(|n| !n.trim().is_empty()));
        }
        match crate::config::env::secret(AuditKey::ENV, "PRODBG_AUDIT_KEY_FILE") {
            Ok(Some(key)) if key.trim().is_empty() => {}
            Ok(Some(key)) => self.set_audit_key(&key, AuditKey::ENV),
            Ok(None) => {}
            Err(e) => self.keep_error(e),
        }
        self.tokens_from_env("PRODBG_TOKENS")
    }

    /// Host names the server answers to besides IP literals, `localhost` (and `*.localhost`)
    /// and the bind address's own name: a request whose `Host` names anything else is refused
    /// with 421 (DNS rebinding). E.g. `["admin.internal", "*.svc.cluster.local"]`; `"*"` turns
    /// the check off. Also read from `PRODBG_ALLOWED_HOSTS` (comma-separated) by
    /// [`env`](Self::env).
    pub fn allowed_hosts<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for name in names {
            let name = name.as_ref().trim();
            if name.is_empty() || name.contains(['/', ' ', ',', '@']) {
                self.keep_error(Error::Config(format!(
                    "allowed host {:?} is not a host name (expected e.g. admin.internal or *.svc.cluster.local)",
                    name.chars().take(64).collect::<String>()
                )));
                return self;
            }
            self.allowed_hosts.push(name.to_string());
        }
        self
    }

    /// The HMAC-SHA256 key that chains the audit records (`hex:…` or 32+ hex digits are
    /// decoded as hex; at least 128 bits, estimated as for token secrets). Without it the key
    /// comes from `PRODBG_AUDIT_KEY`; with neither the chain is plain SHA-256, which detects
    /// accidental damage only (see the README's audit section). prodbg never writes, logs or
    /// echoes the key.
    pub fn audit_key(mut self, key: &str) -> Self {
        self.set_audit_key(key, "audit key");
        self
    }

    /// Parses and checks a key given as text by `origin` (named in errors, never the key).
    fn set_audit_key(&mut self, key: &str, origin: &str) {
        let text = key.trim();
        match AuditKey::parse(text) {
            Ok(k) => match weakness(text.strip_prefix("hex:").unwrap_or(text)) {
                None => self.audit_key = Some(k),
                Some(why) => self.keep_error(Error::Config(format!(
                    "{origin}: the key is too easy to guess: {why}"
                ))),
            },
            Err(e) => self.keep_error(Error::Config(format!("{origin}: {e}"))),
        }
    }

    /// When the audit file is fsync'd: every record (`Always`: each request waits for the disk
    /// flush, and on the spawned server's one thread so do the requests behind it), at most
    /// every interval (`Every`, the default: 1 s, on the audit thread), or never.
    /// `cargo bench --bench audit_fsync` measures each; the README has the figures.
    pub fn audit_fsync(mut self, policy: FsyncPolicy) -> Self {
        self.audit_fsync = policy;
        self
    }

    /// Size-based rotation of the audit file (default: 64 MiB × 8 files, the chain continuing
    /// across them), or `Rotation::Never` when logrotate handles it (a rename is noticed
    /// within a second and the file reopened).
    pub fn audit_rotation(mut self, rotation: Rotation) -> Self {
        self.audit_rotation = rotation;
        self
    }

    /// Whether SIGHUP reopens the audit file (logrotate's `postrotate kill -HUP`; a rename is
    /// noticed within a second without it). By default, with an audit file, the hook is
    /// installed when SIGHUP is at its default action — which would terminate the host — and
    /// left out when the host handles or ignores SIGHUP itself. `true` requires it (a host
    /// that already handles SIGHUP, as with Tokio's `signal`, then gets an error from `build`
    /// and calls `AuditLog::reopen` itself); `false` leaves SIGHUP alone.
    pub fn audit_reopen_on_sighup(mut self, on: bool) -> Self {
        self.audit_sighup = Some(on);
        self
    }

    /// Appends one JSON line per request to `path` (created with mode 0600).
    pub fn audit_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_file = Some(path.into());
        self
    }

    /// The service's name, shown in the console, flamegraph titles and download file names. Default: the executable's name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Adds a build fact shown by `/debug/process` and the bundle (e.g. `("git_sha", env!("GIT_SHA"))`).
    pub fn build_info(mut self, key: &str, value: &str) -> Self {
        self.probes
            .build_info
            .insert(key.to_string(), value.to_string());
        self
    }

    /// The host's own Prometheus registry: `/metrics` encodes it alongside prodbg's numbers.
    /// prodbg registers its server metrics (`prodbg_http_*`) and its probes' collectors into it.
    pub fn metrics_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Lists a connection pool under `name` in `/debug/pools` and `/metrics`, e.g.
    /// `.pool("primary-db", prodbg::pools::sqlx(&pool))`. The registry keeps the adapter
    /// (and so the pool) until the pool is closed; for pools that come and go use
    /// [`pool_registry`](Self::pool_registry) and `PoolRegistry::register`.
    pub fn pool(self, name: &str, stats: impl crate::probes::pools::PoolStats) -> Self {
        self.probes.pools.register_static(name, stats);
        self
    }

    /// Uses `registry` for pools, so the host can register and drop pools at run time.
    pub fn pool_registry(mut self, registry: crate::probes::pools::PoolRegistry) -> Self {
        self.probes.pools = registry;
        self
    }

    /// Lists a Tokio runtime under `name` in `/debug/tokio`, `/debug/tokio/tasks` and `/metrics`,
    /// e.g. `.tokio_runtime("main", tokio::runtime::Handle::current())`.
    pub fn tokio_runtime(self, name: &str, handle: tokio::runtime::Handle) -> Self {
        self.probes.runtimes.register(name, handle);
        self
    }

    /// Shows the tokio-console command for `addr` on the console page and in `/debug/tokio`.
    /// Start the console server and get its layer with
    /// `prodbg::console::spawn_console` (feature `console`).
    pub fn tokio_console(mut self, addr: std::net::SocketAddr) -> Self {
        self.probes.console_addr = Some(addr);
        self
    }

    /// Lets `PUT /debug/log-level` change the host's tracing filter at run time. Install with
    /// `let (filter, control) = prodbg::log_level::reloadable(EnvFilter::from_default_env());`
    /// then `tracing_subscriber::registry().with(filter).with(fmt::layer()).init();`.
    pub fn log_control(mut self, control: crate::probes::log_level::LogControl) -> Self {
        self.probes.log = Some(control);
        self
    }

    /// Serves `/debug/spans` and `/debug/errors` from prodbg's `tracing` layer: install it with
    /// `let (spans, handle) = prodbg::spans::layer(Default::default());` behind the host's
    /// filter, `registry().with(filter).with(fmt::layer()).with(spans).init();`, then hand the
    /// handle here. Without it those routes answer 503 saying so.
    pub fn spans(mut self, handle: crate::layer::SpansHandle) -> Self {
        self.probes.spans = Some(handle);
        self
    }

    /// The CPU flight recorder: on by default (19 Hz, 10 minutes), so `?since=5m` on
    /// `/debug/pprof/profile` answers about the minutes before anyone looked;
    /// `FlightRecorder::off()` samples nothing until a profile is asked for. One recorder
    /// serves every admin server of the process (the first one's settings win). Without the
    /// `cpu` feature there is nothing to record.
    pub fn flight_recorder(mut self, recorder: crate::probes::cpu::FlightRecorder) -> Self {
        self.probes.flight = recorder;
        self
    }

    /// Starts parking_lot's deadlock detector, checking every `interval` (10 s is a good
    /// default), keeping the last 16 reports for `/debug/deadlocks`. Off unless called.
    #[cfg(feature = "deadlock")]
    pub fn deadlock_detection(mut self, interval: Duration) -> Self {
        if interval.is_zero() {
            self.keep_error(Error::Config(
                "the deadlock check interval must be above zero".into(),
            ));
        } else {
            self.probes.deadlock_interval = Some(interval);
        }
        self
    }

    /// Keeps incidents in `dir` (created with mode 0700; each incident a 0600 `tar.gz`):
    /// `POST /debug/incidents`, a panic that ends the process and a crash (SIGSEGV, SIGBUS,
    /// SIGILL, SIGFPE, SIGABRT, reported at the next start) each write one, and
    /// `GET /debug/incidents` lists them, also after a restart. Put it on a volume that
    /// outlives the pod (docs/incidents.md). A directory that cannot be created or written is
    /// an error of [`build`](Self::build). Off unless called.
    pub fn incident_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.incident_dir = Some(dir.into());
        self
    }

    /// Bounds of the incident directory and of captures (default
    /// [`IncidentLimits::default`](crate::IncidentLimits::default): 20 incidents, 256 MiB,
    /// 6 automatic captures an hour).
    pub fn incident_limits(mut self, limits: crate::incidents::IncidentLimits) -> Self {
        self.incident_limits = limits;
        self
    }

    /// The automatic rules that take an incident when the service crosses them (CPU, memory,
    /// Tokio, pools, deadlocks, errors: [`Triggers`](crate::Triggers) lists them and their
    /// defaults). On by default once [`incident_dir`](Self::incident_dir) is set;
    /// `Triggers::none()` turns them off. An unknown rule name is an error of
    /// [`build`](Self::build).
    pub fn incident_triggers(mut self, triggers: crate::recorder::triggers::Triggers) -> Self {
        self.incident_triggers = triggers;
        self
    }

    /// Replaces the timeouts and caps.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether `/health/live` and `/health/ready` need a token (scope `read`). Default: open.
    pub fn health_requires_token(mut self, required: bool) -> Self {
        self.health_public = !required;
        self
    }

    /// Whether `/metrics` needs a token (scope `read`). Default: yes. Open it only where the
    /// network already keeps strangers out, for scrapers that cannot send a bearer token.
    pub fn metrics_requires_token(mut self, required: bool) -> Self {
        self.metrics_public = !required;
        self
    }

    /// Adds a readiness check run by `/health/ready`: it fails when the closure returns `Err`
    /// or takes longer than `timeout`.
    pub fn readiness_check<F, Fut>(mut self, name: &str, timeout: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.probes
            .checks
            .push(ReadinessCheck::new(name, timeout, check));
        self
    }

    /// Adds a host endpoint: `handler` answers `method` at `path`, guarded by `scope`, audited
    /// and listed in the index like the built-in ones, e.g.
    /// `.endpoint(Method::POST, "/debug/flush-cache", Scope::Admin, "drop the cache", flush)`.
    ///
    /// The request body (at most `Limits::max_body_bytes`) reaches the handler unchanged; a
    /// request with a body, and every POST/PUT/PATCH/DELETE, records the body's size, SHA-256
    /// and a redacted copy of at most 1 KiB in `details.request_body` of its audit record. The
    /// handler adds what it changed (the previous value) by returning an
    /// [`AuditDetails`](crate::AuditDetails) with its body.
    pub fn endpoint<H, T>(
        mut self,
        method: Method,
        path: &str,
        scope: Scope,
        summary: &str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, ()>,
        T: 'static,
    {
        if !path.starts_with('/') {
            self.keep_error(Error::Config(format!(
                "endpoint path {path:?} must start with '/'"
            )));
            return self;
        }
        let Ok(filter) = MethodFilter::try_from(method.clone()) else {
            self.keep_error(Error::Config(format!(
                "endpoint {path:?}: method {method} cannot be routed"
            )));
            return self;
        };
        self.probes.custom.push(Route {
            go: None,
            method,
            path: path.to_string(),
            access: Access::Scope(scope),
            summary: summary.to_string(),
            available: true,
            handler: on(filter, handler),
        });
        self
    }

    /// Checks the configuration and assembles the server without binding it.
    pub fn build(mut self) -> Result<Admin, Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let addr = resolve(&self.addr)?;
        if !addr.ip().is_loopback() && self.tokens.is_empty() && !self.tls.has_clients() {
            return Err(Error::Config(format!(
                "refusing to listen on {}, which is not a loopback address, without a token: \
                 add one with .token(..) or PRODBG_TOKENS",
                self.addr
            )));
        }
        let limits = self.limits;
        if limits.max_profile_seconds == 0
            || limits.max_profile_seconds >= limits.request_timeout.as_secs()
        {
            return Err(Error::Config(format!(
                "max_profile_seconds ({}) must be at least 1 and below the request timeout ({} s)",
                limits.max_profile_seconds,
                limits.request_timeout.as_secs()
            )));
        }
        if limits.max_concurrent_requests == 0
            || limits.max_connections == 0
            || limits.max_connections_per_client == 0
            || limits.max_requests_per_token == 0
        {
            return Err(Error::Config(
                "max_concurrent_requests, max_connections, max_connections_per_client and \
                 max_requests_per_token must be at least 1"
                    .into(),
            ));
        }
        if limits.reserved_for_new_clients >= limits.max_connections {
            return Err(Error::Config(format!(
                "reserved_for_new_clients ({}) must be below max_connections ({})",
                limits.reserved_for_new_clients, limits.max_connections
            )));
        }
        let audit = match self.audit_file.take() {
            Some(path) => {
                let mut b = AuditLog::builder()
                    .file(&path)
                    .fsync(self.audit_fsync)
                    .rotation(self.audit_rotation)
                    .reopen_on_sighup(self.audit_sighup.unwrap_or_else(sighup_at_default_action));
                if let Some(key) = self.audit_key.take() {
                    b = b.key(key);
                }
                b.build().map_err(|e| match e {
                    AuditError::Open { path, source } => Error::AuditFile {
                        path: path.display().to_string(),
                        source,
                    },
                    AuditError::Key(k) => Error::Config(format!("audit key: {k}")),
                    other => Error::Start(other.to_string()),
                })?
            }
            None => AuditLog::in_memory(),
        };
        #[cfg(feature = "tls")]
        let tls = match self.tls.settings()? {
            Some(settings) => Some(crate::tls::Tls::new(settings).map_err(Error::Config)?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let tls: Option<crate::server::TlsHandle> = None;
        #[cfg(feature = "tls")]
        let cert_names: Vec<String> = tls
            .iter()
            .flat_map(|t| t.settings.clients.names().map(str::to_string))
            .collect();
        #[cfg(not(feature = "tls"))]
        let cert_names: Vec<String> = Vec::new();
        let fair = Arc::new(FairShare::new(
            FairLimits {
                max_concurrent: limits.max_concurrent_requests,
                per_token: limits.max_requests_per_token,
                ..FairLimits::default()
            },
            self.tokens
                .iter()
                .map(|t| t.name())
                .chain(cert_names.iter().map(String::as_str)),
        ));
        let tokens = TokenSet::new(self.tokens)?;
        let cx = ProbeContext {
            service_name: Arc::from(self.service_name.as_str()),
            limits: limits.clone(),
            overrides: Overrides::default(),
            fair: fair.clone(),
            results: Default::default(),
        };
        let incidents = match self.incident_dir.take() {
            Some(dir) => Some(
                crate::incidents::Incidents::open(
                    &dir,
                    self.incident_limits.clone(),
                    cx.service_name.clone(),
                )
                .map_err(Error::Config)?,
            ),
            None => None,
        };
        self.probes.incidents = incidents.clone();
        let watch = match &incidents {
            Some(inc) => crate::incidents::watch::watch(&self.incident_triggers, inc.clone())
                .map_err(Error::Config)?,
            None => None,
        };
        let probes = crate::probes::register(&cx, self.probes)?;
        // The name the server was bound by (`myhost:6060`) is one it answers to.
        let bound_name = self.addr.rsplit_once(':').map(|(host, _)| host.to_string());
        let allowed_hosts = AllowedHosts::new(self.allowed_hosts.iter().cloned().chain(bound_name));
        let (state, router) = crate::server::build(ServerConfig {
            service_name: cx.service_name.clone(),
            tokens,
            audit,
            limits,
            allowed_hosts,
            registry: self.registry,
            health_public: self.health_public,
            metrics_public: self.metrics_public,
            probes,
            fair,
            results: cx.results.clone(),
            watch,
            cert_clients: !cert_names.is_empty(),
        });
        if let Some(inc) = &incidents {
            let gather: std::sync::Weak<dyn crate::incidents::Gather> = Arc::downgrade(&state) as _;
            inc.set_gather(gather);
            #[cfg(any(feature = "cpu", feature = "threads"))]
            crate::incidents::crash::install(inc);
        }
        crate::incidents::panic_hook::install(incidents.as_ref());
        Ok(Admin {
            state,
            router,
            addr: self.addr,
            incidents,
            tls,
            allow_plaintext: self.tls.allow_plaintext,
        })
    }

    /// [`build`](Self::build), then [`Admin::spawn`].
    pub fn spawn(self) -> Result<AdminHandle, Error> {
        self.build()?.spawn()
    }

    fn add_tokens(&mut self, tokens: Vec<Token>) {
        for t in tokens {
            if self.tokens.iter().any(|o| o.name() == t.name()) {
                self.keep_error(Error::Config(format!(
                    "duplicate token name {:?}",
                    t.name()
                )));
                return;
            }
            self.tokens.push(t);
        }
    }

    fn keep_error(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

/// A running admin server. Dropping it (or calling [`shutdown`](Self::shutdown)) stops the
/// server gracefully and joins its thread.
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    scheme: &'static str,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    incidents: Option<Arc<crate::incidents::Incidents>>,
}

impl AdminHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<addr>`, or `https://<addr>` with TLS: the base URL.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// Asks for an incident of kind `trigger` now, for the host's own rule named `rule`
    /// (the `trigger` label of `prodbg_incidents_total`): `reason` is its one line, `detail`
    /// (thresholds, values) is written as `trigger.json`. Returns at once: `true` when the
    /// capture was accepted, `false` when it was skipped (no incident directory, another
    /// capture running, or the hourly cap reached; each skip is counted and logged).
    pub fn trigger_incident(&self, rule: &str, reason: &str, detail: serde_json::Value) -> bool {
        trigger(self.incidents.as_deref(), rule, reason, detail)
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and joins the
    /// server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn trigger(
    incidents: Option<&crate::incidents::Incidents>,
    rule: &str,
    reason: &str,
    mut detail: serde_json::Value,
) -> bool {
    let Some(inc) = incidents else {
        return false;
    };
    if let serde_json::Value::Object(map) = &mut detail {
        map.insert("rule".into(), rule.into());
    } else {
        detail = serde_json::json!({ "rule": rule, "detail": detail });
    }
    inc.capture(crate::incidents::Kind::Trigger, reason, Some(detail))
        .is_ok()
}

fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    let mut addrs = addr.to_socket_addrs().map_err(|e| {
        Error::Config(format!(
            "listen address {addr:?} is not valid ({e}); expected host:port, e.g. {DEFAULT_ADDR}"
        ))
    })?;
    addrs
        .next()
        .ok_or_else(|| Error::Config(format!("listen address {addr:?} resolves to nothing")))
}

fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "service".to_string())
}
