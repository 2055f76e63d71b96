//! Log-level probe against a real subscriber stack: registry + reloadable filter + fmt layer
//! writing into memory, each test's installed as its own thread's default (scoped, never the
//! global one).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use super::control::{reloadable, LogControl, LogLevelError, MAX_TTL};
use crate::seam::Overrides;

/// Generous bound for "eventually"; never a timing assertion, only a hang guard.
const PATIENCE: Duration = Duration::from_secs(10);

/// Everything the fmt layer wrote.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn contains(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().expect("buffer lock")).contains(needle)
    }
}

/// Runs `f` with the host's usual stack, at `info`, as this thread's default subscriber.
fn with_stack(f: impl FnOnce(&LogControl, &Overrides, &Buf)) {
    let buf = Buf::default();
    let writer = buf.clone();
    let (filter, log_control) = reloadable(EnvFilter::new("info"));
    let overrides = Overrides::new();
    let log_control = log_control.with_overrides(overrides.clone());
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(move || writer.clone()));
    tracing::subscriber::with_default(subscriber, || f(&log_control, &overrides, &buf));
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn debug_events_follow_the_override_and_its_revert() {
    with_stack(|control, overrides, buf| {
        tracing::debug!("before-set-7f3a");
        assert!(!buf.contains("before-set-7f3a"), "debug written at info");

        let o = control
            .set("debug", Some(Duration::from_millis(300)), "ops")
            .expect("valid directive");
        assert_eq!(
            (o.filter.as_str(), o.set_by.as_str()),
            ("prodbg::audit=info,debug", "ops")
        );
        tracing::debug!("during-override-7f3a");
        assert!(
            buf.contains("during-override-7f3a"),
            "debug not written after set"
        );
        let listed = overrides.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].kind.as_str(), listed[0].value.as_str()),
            ("log_level", "prodbg::audit=info,debug")
        );

        eventually("the override to revert", || {
            control.current().override_.is_none()
        });
        tracing::debug!("after-revert-7f3a");
        assert!(
            !buf.contains("after-revert-7f3a"),
            "debug written after revert"
        );
        tracing::info!("info-after-revert-7f3a");
        assert!(buf.contains("info-after-revert-7f3a"));
        assert_eq!(control.current().filter, "prodbg::audit=info,info");
        assert!(overrides.list().is_empty(), "{:?}", overrides.list());
    });
}

#[test]
fn a_newer_set_cancels_the_older_revert() {
    with_stack(|control, overrides, buf| {
        control
            .set("debug", Some(Duration::from_millis(100)), "ops")
            .expect("valid directive");
        let second = control
            .set("trace", Some(Duration::from_secs(600)), "alice")
            .expect("valid directive");
        std::thread::sleep(Duration::from_secs(1));
        let state = control.current();
        assert_eq!(
            state.override_.as_ref(),
            Some(&second),
            "first ttl reverted the second"
        );
        tracing::debug!("still-overridden-91c2");
        assert!(buf.contains("still-overridden-91c2"));
        assert_eq!(overrides.list()[0].set_by, "alice");
        assert_eq!(overrides.list()[0].expires_at, second.expires_at);

        control.reset("alice").expect("subscriber alive");
        tracing::debug!("after-reset-91c2");
        assert!(!buf.contains("after-reset-91c2"));
        assert!(overrides.list().is_empty());
    });
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    with_stack(|control, overrides, _buf| {
        let bad = "info,my_crate=loud";
        let parser_says = EnvFilter::try_new(bad).expect_err("invalid").to_string();
        assert_eq!(
            control.set(bad, None, "ops"),
            Err(LogLevelError::BadDirective(parser_says))
        );

        let too_long = Duration::from_secs(25 * 3600);
        let err = control
            .set("debug", Some(too_long), "ops")
            .expect_err("too long");
        assert_eq!(err, LogLevelError::TtlOutOfRange(too_long));
        assert!(err.to_string().contains("at most 24h"), "{err}");
        assert!(control.set("debug", Some(MAX_TTL), "ops").is_ok());
        control.reset("ops").expect("subscriber alive");

        let huge = "x".repeat(2000);
        assert!(matches!(
            control.set(&huge, None, "ops"),
            Err(LogLevelError::DirectiveTooLong {
                len: 2000,
                max: 1024
            })
        ));
        assert_eq!(control.current().override_, None);
        assert!(overrides.list().is_empty());
    });
}
