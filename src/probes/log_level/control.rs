//! Run-time control of the host's `tracing` filter, with changes that revert by themselves.
//!
//! During an incident an operator wants `debug` logs from one module for a few minutes, not a
//! redeploy, and not a `debug` firehose that stays on after everyone has gone back to bed. The
//! host wraps its [`EnvFilter`] once with [`reloadable`]; [`LogControl::set`] then swaps in a
//! new filter for a bounded time ([`DEFAULT_TTL`] unless told otherwise) and a small timer
//! thread puts the host's own filter back when it runs out.
//!
//! ```
//! use tracing_subscriber::{fmt, prelude::*, EnvFilter};
//!
//! let (filter, log_control) = prodbg::log_level::reloadable(EnvFilter::new("info"));
//! tracing_subscriber::registry().with(filter).with(fmt::layer()).init();
//!
//! // Later, from the admin server (`PUT /debug/log-level`):
//! let ttl = Some(std::time::Duration::from_secs(600));
//! log_control.set("info,my_crate::db=debug", ttl, "ops").expect("valid directive");
//! assert_eq!(log_control.current().filter, "prodbg::audit=info,my_crate::db=debug,info");
//! log_control.reset("ops").expect("subscriber alive");
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tracing_subscriber::EnvFilter;

use super::filter::ReloadableFilter;

use crate::encode::time::{rfc3339, rfc3339_opt};
use crate::seam::overrides::Overrides;

/// How long a change lasts when the operator names no ttl: 15 minutes. The probe itself has no
/// default; the HTTP layer passes `Some(DEFAULT_TTL)` to [`LogControl::set`].
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest ttl [`LogControl::set`] accepts: 24 hours.
pub(super) const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest filter directive [`LogControl::set`] accepts, in bytes.
pub(super) const MAX_DIRECTIVE_LEN: usize = 1024;
/// The kind under which the change is listed in [`Overrides`].
pub(super) const OVERRIDE_KIND: &str = "log_level";

/// Why a filter change was refused or could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLevelError {
    /// The directive does not parse; holds the parser's message.
    #[error("bad tracing filter directive: {0} (expected e.g. `info,my_crate::db=debug`)")]
    BadDirective(String),
    /// The directive is longer than [`MAX_DIRECTIVE_LEN`].
    #[error("filter directive is {len} bytes; at most {max} bytes are allowed")]
    DirectiveTooLong {
        /// The directive's length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The ttl is zero or longer than [`MAX_TTL`].
    #[error("ttl {} is out of range: it must be more than zero and at most {}h; omit it for a permanent change", humantime::format_duration(*.0), MAX_TTL.as_secs() / 3600)]
    TtlOutOfRange(Duration),
    /// The subscriber holding the filter was dropped (or its lock poisoned).
    #[error("the tracing filter cannot be changed: {0}")]
    Unavailable(String),
    /// The thread that reverts the change could not be started.
    #[error("cannot start the log-level revert timer thread: {0}")]
    Timer(String),
}

/// A filter change in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    /// The filter in force, as `EnvFilter` prints it (normalized: lowercase levels, directives
    /// reordered by specificity), which may differ in form from what the operator sent.
    pub filter: String,
    /// The name of the token that set it (never its secret).
    pub set_by: String,
    /// When it was set; RFC 3339 in JSON.
    #[serde(serialize_with = "rfc3339")]
    pub set_at: SystemTime,
    /// When it reverts to the host's filter; `None` (JSON `null`) if it stays until reset.
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<SystemTime>,
}

/// What [`LogControl::current`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLevelState {
    /// The filter in force now.
    pub filter: String,
    /// The filter the host started with, restored when the override ends.
    pub default_filter: String,
    /// The run-time change in force, if any; `"override"` in JSON.
    #[serde(rename = "override")]
    pub override_: Option<Override>,
}

/// Wraps the host's filter so it can be changed at run time; returns the filter to install
/// (globally, `registry().with(filter)`, or per layer, `.with_filter(filter)`) and the
/// [`LogControl`] to give the admin server. Reading the filter takes no lock: a change swaps
/// the whole filter atomically.
pub fn reloadable(filter: EnvFilter) -> (ReloadableFilter, LogControl) {
    let filter = audit_exempt(filter);
    let default_filter = filter.to_string();
    let (layer, swapper) = ReloadableFilter::new(filter);
    let swap = move |new: Arc<EnvFilter>| {
        swapper.swap(new).ok_or_else(|| {
            LogLevelError::Unavailable("the subscriber holding the filter was dropped".to_string())
        })
    };
    let inner = Inner {
        swap: Box::new(swap),
        default_filter,
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    };
    let control = LogControl {
        inner: Arc::new(inner),
    };
    (layer, control)
}

/// The audit log's own events (target `prodbg::audit`, the copy meant to be shipped off the
/// host) are never filtered out: every filter this module installs ends with the directive
/// `prodbg::audit=info`, which replaces any directive for that target (`prodbg::audit=off`) and,
/// being the most specific, wins over `prodbg=off` or a global `off`.
fn audit_exempt(filter: EnvFilter) -> EnvFilter {
    match AUDIT_DIRECTIVE.parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// See [`audit_exempt`].
const AUDIT_DIRECTIVE: &str = "prodbg::audit=info";

/// Reads and changes the host's tracing filter. Cheap to clone; clones control the same filter.
/// Made by [`reloadable`].
#[derive(Clone)]
pub struct LogControl {
    inner: Arc<Inner>,
}

type SwapFn = Box<dyn Fn(Arc<EnvFilter>) -> Result<Arc<EnvFilter>, LogLevelError> + Send + Sync>;

struct Inner {
    /// Puts a filter in force and returns the one it replaced.
    swap: SwapFn,
    default_filter: String,
    state: Mutex<State>,
    /// Wakes the timer thread when the deadline changes.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// The host's own filter, kept here while an override is in force.
    original: Option<Arc<EnvFilter>>,
    override_: Option<Override>,
    /// When the timer thread reverts the override.
    deadline: Option<Instant>,
    timer_running: bool,
    overrides: Option<Overrides>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("default_filter", &self.inner.default_filter)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// Also lists the change in force in `overrides` (kind [`OVERRIDE_KIND`]), and removes it
    /// from there when it reverts or is reset.
    pub(crate) fn with_overrides(self, overrides: Overrides) -> LogControl {
        let mut st = self.inner.lock();
        if let Some(o) = &st.override_ {
            overrides.record(OVERRIDE_KIND, o.filter.clone(), &o.set_by, o.expires_at);
        }
        st.overrides = Some(overrides);
        drop(st);
        self
    }

    /// The filter in force, the host's own filter, and the change in force if any.
    pub fn current(&self) -> LogLevelState {
        let st = self.inner.lock();
        let default_filter = self.inner.default_filter.clone();
        LogLevelState {
            filter: st
                .override_
                .as_ref()
                .map_or_else(|| default_filter.clone(), |o| o.filter.clone()),
            default_filter,
            override_: st.override_.clone(),
        }
    }

    /// Puts `directive` (`EnvFilter` syntax, e.g. `info,my_crate::db=debug`) in force, on behalf
    /// of the token named `by`. After `ttl` the host's own filter comes back by itself; `None`
    /// keeps it until [`reset`](Self::reset). A newer `set` replaces this one and its ttl.
    pub fn set(
        &self,
        directive: &str,
        ttl: Option<Duration>,
        by: &str,
    ) -> Result<Override, LogLevelError> {
        let directive = directive.trim();
        if directive.len() > MAX_DIRECTIVE_LEN {
            return Err(LogLevelError::DirectiveTooLong {
                len: directive.len(),
                max: MAX_DIRECTIVE_LEN,
            });
        }
        if directive.is_empty() {
            return Err(LogLevelError::BadDirective("empty directive".to_string()));
        }
        if let Some(ttl) = ttl.filter(|t| t.is_zero() || *t > MAX_TTL) {
            return Err(LogLevelError::TtlOutOfRange(ttl));
        }
        // No regexes: a field-value pattern from the body cannot make matching slow.
        let filter = EnvFilter::builder()
            .with_regex(false)
            .parse(directive)
            .map(audit_exempt)
            .map_err(|e| LogLevelError::BadDirective(e.to_string()))?;
        let now = SystemTime::now();
        let new = Override {
            filter: filter.to_string(),
            set_by: by.to_string(),
            set_at: now,
            expires_at: ttl.map(|t| now + t),
        };

        let mut st = self.inner.lock();
        if ttl.is_some() && !st.timer_running {
            let inner = Arc::clone(&self.inner);
            std::thread::Builder::new()
                .name("prodbg-log-level".to_string())
                .spawn(move || inner.run_timer())
                .map_err(|e| LogLevelError::Timer(e.to_string()))?;
            st.timer_running = true;
        }
        let replaced = (self.inner.swap)(Arc::new(filter))?;
        st.original.get_or_insert(replaced);
        st.deadline = ttl.map(|t| Instant::now() + t);
        st.override_ = Some(new.clone());
        if let Some(o) = &st.overrides {
            o.record(OVERRIDE_KIND, new.filter.clone(), by, new.expires_at);
        }
        drop(st);
        self.inner.wake.notify_all();
        tracing::info!(target: "prodbg::log_level", filter = %new.filter, set_by = by,
            ttl = ?ttl, "tracing filter changed at run time");
        Ok(new)
    }

    /// Puts the host's own filter back now, on behalf of the token named `by`. Returns the
    /// change that was in force, if any.
    pub fn reset(&self, by: &str) -> Result<Option<Override>, LogLevelError> {
        let mut st = self.inner.lock();
        let removed = self.inner.revert(&mut st);
        drop(st);
        self.inner.wake.notify_all();
        if let Ok(Some(o)) = &removed {
            tracing::info!(target: "prodbg::log_level", filter = %self.inner.default_filter,
                reset_by = by, was = %o.filter, "tracing filter reset to the host's own");
        }
        removed
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restores the host's filter and forgets the override, under the state lock.
    fn revert(&self, st: &mut State) -> Result<Option<Override>, LogLevelError> {
        st.deadline = None;
        let removed = st.override_.take();
        if let Some(o) = &st.overrides {
            o.clear(OVERRIDE_KIND);
        }
        match st.original.take() {
            Some(original) => (self.swap)(original).map(|_| removed),
            None => Ok(removed),
        }
    }

    /// The timer thread: sleeps until the deadline, reverts, and exits when none is pending.
    fn run_timer(&self) {
        let mut st = self.lock();
        loop {
            let Some(deadline) = st.deadline else {
                st.timer_running = false;
                return;
            };
            let now = Instant::now();
            if now < deadline {
                st = self
                    .wake
                    .wait_timeout(st, deadline - now)
                    .map_or_else(|e| e.into_inner().0, |r| r.0);
                continue;
            }
            let removed = self.revert(&mut st);
            drop(st);
            if let Ok(Some(o)) = removed {
                tracing::info!(target: "prodbg::log_level", filter = %self.default_filter,
                    was = %o.filter, set_by = %o.set_by, "tracing filter override expired");
            }
            st = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (ReloadableFilter, LogControl) {
        reloadable(EnvFilter::new("info"))
    }

    #[test]
    fn set_and_reset_track_state_and_overrides() {
        let (_layer, c) = control();
        let overrides = Overrides::new();
        let c = c.with_overrides(overrides.clone());
        assert_eq!(c.current().filter, "prodbg::audit=info,info");
        assert_eq!(c.current().override_, None);

        let o = c.set("warn,my_crate=DEBUG", None, "ops").expect("valid");
        assert_eq!(o.filter, "prodbg::audit=info,my_crate=debug,warn");
        assert_eq!(o.expires_at, None);
        let s = c.current();
        assert_eq!(
            (s.filter.as_str(), s.default_filter.as_str()),
            (
                "prodbg::audit=info,my_crate=debug,warn",
                "prodbg::audit=info,info"
            )
        );
        assert_eq!(
            overrides.list()[0].value,
            "prodbg::audit=info,my_crate=debug,warn"
        );

        let removed = c.reset("ops").expect("alive");
        assert_eq!(removed.map(|o| o.set_by), Some("ops".to_string()));
        assert_eq!(c.current().filter, "prodbg::audit=info,info");
        assert!(overrides.list().is_empty());
        assert_eq!(
            c.reset("ops"),
            Ok(None),
            "reset without an override is a no-op"
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let (_layer, c) = control();
        let long = "a=debug,".repeat(200);
        assert!(matches!(
            c.set(&long, None, "ops"),
            Err(LogLevelError::DirectiveTooLong { max: 1024, .. })
        ));
        for ttl in [Duration::ZERO, MAX_TTL + Duration::from_secs(1)] {
            let err = c.set("debug", Some(ttl), "ops").expect_err("out of range");
            assert_eq!(err, LogLevelError::TtlOutOfRange(ttl));
            assert!(err.to_string().contains("24h"), "{err}");
        }
        assert!(matches!(
            c.set(" ", None, "ops"),
            Err(LogLevelError::BadDirective(_))
        ));
        assert!(c.set("debug", Some(MAX_TTL), "ops").is_ok());
        assert_eq!(c.current().filter, "prodbg::audit=info,debug");
    }

    #[test]
    fn ttl_reverts_and_a_newer_set_cancels_the_older_revert() {
        let (_layer, c) = control();
        c.set("debug", Some(Duration::from_millis(50)), "a")
            .expect("valid");
        c.set("trace", Some(Duration::from_secs(600)), "b")
            .expect("valid");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            c.current().filter,
            "prodbg::audit=info,trace",
            "the first ttl must not revert the second"
        );

        c.set("warn", Some(Duration::from_millis(50)), "c")
            .expect("valid");
        let start = Instant::now();
        while c.current().override_.is_some() {
            assert!(start.elapsed() < Duration::from_secs(10), "never reverted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(c.current().filter, "prodbg::audit=info,info");
    }

    #[test]
    fn dropped_subscriber_is_reported() {
        let (layer, c) = control();
        drop(layer);
        assert!(matches!(
            c.set("debug", None, "ops"),
            Err(LogLevelError::Unavailable(_))
        ));
    }

    #[test]
    fn state_serializes_with_override_key() {
        let (_layer, c) = control();
        c.set("debug", Some(DEFAULT_TTL), "ops").expect("valid");
        let json = serde_json::to_value(c.current()).expect("serializable");
        assert_eq!(json["override"]["set_by"], "ops");
        assert!(json["override"]["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
    }
}
