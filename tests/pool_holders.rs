//! Who holds the connections, with real pools (sqlx + SQLite, deadpool, bb8, r2d2) and real
//! HTTP: the seed's five-whys leak — an error path that forgets to release — named by function,
//! site, span and route in `/debug/pools`, `/debug/pprof/pool_held` (read by `go tool pprof`),
//! `/metrics` and the `prodbg::pools` events.
#![cfg_attr(
    not(all(
        feature = "pools-sqlx",
        feature = "pools-deadpool",
        feature = "pools-bb8",
        feature = "pools-r2d2"
    )),
    allow(dead_code, unused_imports)
)]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use prodbg::pools::{AcquireRecorder, Held, PoolRegistry};
use serde_json::Value;
use tracing::Instrument;

/// Generous bound for "eventually"; never a timing assertion, only a hang guard.
const PATIENCE: Duration = Duration::from_secs(30);

/// The `prodbg::pools` events this binary's subscriber saw: (level, message, fields).
static EVENTS: Mutex<Vec<(tracing::Level, String, String)>> = Mutex::new(Vec::new());

/// This binary's subscriber: prodbg's layer (span labels, `/debug/errors`) and a recorder of
/// the `prodbg::pools` events, under an `info` filter.
fn install() -> prodbg::spans::SpansHandle {
    use tracing_subscriber::prelude::*;
    static HANDLE: OnceLock<prodbg::spans::SpansHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (spans, handle) = prodbg::spans::layer(prodbg::spans::Options::default());
            tracing_subscriber::registry()
                .with(
                    spans
                        .and_then(Capture)
                        .with_filter(tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            handle
        })
        .clone()
}

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "prodbg::pools" {
            return;
        }
        struct Text(String, String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                } else {
                    self.1.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
        }
        let mut t = Text(String::new(), String::new());
        event.record(&mut t);
        EVENTS
            .lock()
            .unwrap()
            .push((*event.metadata().level(), t.0, t.1));
    }
}

/// The captured events of pool `pool` whose message contains `what`.
fn events(pool: &str, what: &str) -> Vec<(tracing::Level, String, String)> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m, f)| m.contains(what) && f.contains(&format!("pool={pool} ")))
        .cloned()
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json(url: &str) -> Value {
    let (status, body) = get(url, Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `/debug/pools`' holders of `pool`.
async fn holders(server: &Server, pool: &str, query: &str) -> Value {
    let v = json(&server.url(&format!("/debug/pools{query}"))).await;
    let p = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("{pool} not listed: {v}"))
        .clone();
    p["holders"].clone()
}

fn server(registry: &PoolRegistry) -> Server {
    let spans = install();
    let registry = registry.clone();
    spawn_with(move |b| b.pool_registry(registry).spans(spans))
}

fn function_of(site: &Value) -> &str {
    site["function"].as_str().unwrap_or("")
}

#[cfg(feature = "pools-sqlx")]
mod sqlx_pool {
    use super::*;
    use sqlx::pool::PoolConnection;
    use sqlx::sqlite::SqlitePoolOptions;
    use sqlx::{Sqlite, SqlitePool};

    type Stash = Mutex<Vec<Held<PoolConnection<Sqlite>>>>;

    /// The seed's bug: on a bad password the error path parks the connection in a list that
    /// lives as long as the process, instead of dropping it.
    #[inline(never)]
    async fn login_forgets_its_connection(
        acquires: &AcquireRecorder,
        pool: &SqlitePool,
        stash: &Stash,
    ) -> Result<(), &'static str> {
        let mut conn = acquires.acquire(pool).await.map_err(|_| "no connection")?;
        sqlx::query("select 1")
            .execute(&mut **conn)
            .await
            .map_err(|_| "query")?;
        stash.lock().unwrap().push(conn); // the bug: kept on the error path
        Err("bad password")
    }

    /// Holds one connection across a slow call, then releases it.
    #[inline(never)]
    async fn monthly_report_holds_across_a_slow_call(
        acquires: AcquireRecorder,
        pool: SqlitePool,
        hold: Duration,
    ) {
        let conn = acquires.acquire(&pool).await.unwrap();
        tokio::time::sleep(hold).await;
        drop(conn);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leaking_error_path_is_named_with_its_count_route_and_age() {
        let pool = SqlitePoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_millis(300))
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let registry = PoolRegistry::new();
        let _registration = registry.register("auth-db", prodbg::pools::sqlx(&pool));
        let acquires = registry.acquires("auth-db");
        acquires.set_leak_threshold(Some(Duration::from_secs(1)));
        let server = server(&registry);

        // A released connection leaves no holder.
        drop(acquires.acquire(&pool).await.unwrap());
        let h = holders(&server, "auth-db", "").await;
        assert_eq!(h["out"], 0, "{h}");
        assert_eq!(h["sites"].as_array().unwrap().len(), 0, "{h}");

        // Four failed logins leak four connections; a report holds one across a slow call.
        let stash = Stash::default();
        for _ in 0..4 {
            let span = tracing::info_span!("request", route = "/login");
            let r = login_forgets_its_connection(&acquires, &pool, &stash)
                .instrument(span)
                .await;
            assert_eq!(r, Err("bad password"));
        }
        let report = tokio::spawn(monthly_report_holds_across_a_slow_call(
            acquires.clone(),
            pool.clone(),
            Duration::from_secs(3),
        ));
        let start = Instant::now();
        while holders(&server, "auth-db", "").await["out"] != 5 {
            assert!(
                start.elapsed() < PATIENCE,
                "the report's connection never showed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let h = holders(&server, "auth-db", "").await;
        assert_eq!(h["out"], 5, "{h}");
        let sites = h["sites"].as_array().unwrap();
        assert_eq!(sites.len(), 2, "{h}");
        let leak = &sites[0];
        assert!(
            function_of(leak).ends_with("login_forgets_its_connection"),
            "the oldest site is the leaking function: {h}"
        );
        assert!(
            leak["site"]
                .as_str()
                .unwrap()
                .starts_with("tests/pool_holders.rs:"),
            "{h}"
        );
        assert_eq!(leak["count"], 4, "{h}");
        assert_eq!(leak["span"], "request", "{h}");
        assert_eq!(leak["route"], "/login", "{h}");
        let slow = &sites[1];
        assert!(
            function_of(slow).ends_with("monthly_report_holds_across_a_slow_call"),
            "{h}"
        );
        assert_eq!(slow["count"], 1, "{h}");
        assert!(slow["task"].as_u64().is_some(), "acquired in a task: {h}");
        assert!(slow["oldest_s"].as_f64().unwrap() >= 0.0, "{h}");

        // Every connection, oldest first, each with its age.
        let each = holders(&server, "auth-db", "?holders=each").await["each"].clone();
        let each = each.as_array().unwrap();
        assert_eq!(each.len(), 5, "{each:?}");
        let ages: Vec<f64> = each.iter().map(|e| e["held_s"].as_f64().unwrap()).collect();
        assert!(
            ages.windows(2).all(|w| w[0] >= w[1]),
            "oldest first: {ages:?}"
        );

        // The pool is exhausted: the next acquire times out, and the scan names the holders.
        let timed_out = acquires.acquire(&pool).await;
        assert!(matches!(timed_out, Err(sqlx::Error::PoolTimedOut)));
        eventually("one timeout warning", || {
            !events("auth-db", "acquire timed out").is_empty()
        })
        .await;
        let timeout = events("auth-db", "acquire timed out");
        assert_eq!(timeout[0].0, tracing::Level::WARN);
        assert!(
            timeout[0].2.contains("login_forgets_its_connection")
                && timeout[0].2.contains("4 held"),
            "the timeout names the top holder: {timeout:?}"
        );

        // Past the 1 s threshold: one WARN per held connection, naming its holder.
        eventually("five leak warnings", || {
            events("auth-db", "past the leak threshold").len() == 5
        })
        .await;
        let leaks = events("auth-db", "past the leak threshold");
        assert!(leaks.iter().all(|(l, _, _)| *l == tracing::Level::WARN));
        let named = leaks
            .iter()
            .filter(|(_, _, f)| {
                f.contains("login_forgets_its_connection") && f.contains("route=\"/login\"")
            })
            .count();
        assert_eq!(named, 4, "{leaks:?}");

        // The report's connection comes back: one INFO, and it leaves the holders.
        report.await.unwrap();
        eventually("the returned event", || {
            !events("auth-db", "was returned").is_empty()
        })
        .await;
        let h = holders(&server, "auth-db", "").await;
        assert_eq!(h["out"], 4, "{h}");
        assert_eq!(h["suspected_leaks"], 4, "{h}");
        assert_eq!(h["leaks_total"], 5, "{h}");

        // Scans go on; nothing is told twice.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(events("auth-db", "past the leak threshold").len(), 5);
        assert_eq!(events("auth-db", "acquire timed out").len(), 1);
        assert_eq!(events("auth-db", "was returned").len(), 1);

        // The WARN reached /debug/errors.
        let errors = json(&server.url("/debug/errors")).await;
        let group = errors["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                g["target"] == "prodbg::pools"
                    && g["message"].as_str().unwrap().contains("suspected leak")
            })
            .unwrap_or_else(|| panic!("no leak group: {errors}"))
            .clone();
        assert_eq!(group["level"], "WARN");
        assert_eq!(group["count"], 5, "{group}");

        // /metrics: the oldest hold and the suspected leaks.
        let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
        let sample = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
        };
        assert_eq!(sample("prodbg_pool_suspected_leaks{pool=\"auth-db\"}"), 4.0);
        assert_eq!(sample("prodbg_pool_leaks_total{pool=\"auth-db\"}"), 5.0);
        assert!(sample("prodbg_pool_oldest_hold_seconds{pool=\"auth-db\"}") >= 1.0);

        // The held-connections profile: one sample per connection, the leaking function on top.
        let (status, body) = get(
            &server.url("/debug/pprof/pool_held?pool=auth-db"),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = get(
            &server.url("/debug/pprof/pool_held?pool=auth-db"),
            Some(READ_SECRET),
        )
        .await;
        assert_eq!(status, 403, "a profile needs the profile scope");
        let gz = client()
            .get(server.url("/debug/pprof/pool_held?pool=auth-db"))
            .bearer_auth(PROFILE_SECRET)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let p = decode_pprof(&gz);
        assert_eq!(p.sample.len(), 4, "one sample per connection out");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pool_held.pb.gz");
        std::fs::write(&file, &gz).unwrap();
        let out = go_tool_pprof(dir.path(), &["-top", file.to_str().unwrap()]);
        let top = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{top}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_default();
        assert!(
            first.contains("login_forgets_its_connection"),
            "go tool pprof -top names the leaking function first:\n{top}"
        );
        let (status, body) = get(
            &server.url("/debug/pprof/pool_held?pool=nope"),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert!(
            body.contains("auth-db"),
            "the error lists the registered pools: {body}"
        );

        drop(stash);
    }
}

/// A pooled object that counts nothing: the pools below are real, their connections trivial.
#[derive(Debug)]
struct Conn;

/// Parks its connection on the error path, like the sqlx login above.
#[inline(never)]
fn leaky_error_path<T>(conn: T, stash: &Mutex<Vec<T>>) -> Result<(), &'static str> {
    stash.lock().unwrap().push(conn);
    Err("failed")
}

/// `/debug/pools` names `function` as the only site, holding `count` connections.
async fn only_site(server: &Server, pool: &str, function: &str, count: u64) {
    let h = holders(server, pool, "").await;
    let sites = h["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{h}");
    assert!(function_of(&sites[0]).ends_with(function), "{h}");
    assert_eq!(sites[0]["count"], count, "{h}");
}

#[cfg(feature = "pools-deadpool")]
mod deadpool_pool {
    use super::*;
    use deadpool::managed::{Manager, Metrics, Object, Pool, RecycleResult};
    use std::convert::Infallible;

    struct Trivial;
    impl Manager for Trivial {
        type Type = Conn;
        type Error = Infallible;
        async fn create(&self) -> Result<Conn, Infallible> {
            Ok(Conn)
        }
        async fn recycle(&self, _: &mut Conn, _: &Metrics) -> RecycleResult<Infallible> {
            Ok(())
        }
    }

    #[inline(never)]
    async fn deadpool_checkout_leaks(
        acquires: &AcquireRecorder,
        pool: &Pool<Trivial>,
        stash: &Mutex<Vec<Held<Object<Trivial>>>>,
    ) -> Result<(), &'static str> {
        let conn = acquires.acquire(pool).await.map_err(|_| "pool")?;
        leaky_error_path(conn, stash)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leaking_function_is_named_with_its_count() {
        let pool = Pool::builder(Trivial).max_size(4).build().unwrap();
        let registry = PoolRegistry::new();
        let _registration = registry.register("dp", prodbg::pools::deadpool(&pool));
        let acquires = registry.acquires("dp");
        let server = server(&registry);
        let stash = Mutex::default();
        for _ in 0..3 {
            assert!(deadpool_checkout_leaks(&acquires, &pool, &stash)
                .await
                .is_err());
        }
        drop(acquires.acquire(&pool).await.unwrap()); // released: not a holder
        only_site(&server, "dp", "deadpool_checkout_leaks", 3).await;
        stash.lock().unwrap().clear();
        let h = holders(&server, "dp", "").await;
        assert_eq!(h["out"], 0, "returned connections leave the holders: {h}");
    }
}

#[cfg(feature = "pools-bb8")]
mod bb8_pool {
    use super::*;
    use std::convert::Infallible;

    struct Trivial;
    impl bb8::ManageConnection for Trivial {
        type Connection = Conn;
        type Error = Infallible;
        async fn connect(&self) -> Result<Conn, Infallible> {
            Ok(Conn)
        }
        async fn is_valid(&self, _: &mut Conn) -> Result<(), Infallible> {
            Ok(())
        }
        fn has_broken(&self, _: &mut Conn) -> bool {
            false
        }
    }

    #[inline(never)]
    async fn bb8_checkout_leaks<'p>(
        acquires: &AcquireRecorder,
        pool: &'p bb8::Pool<Trivial>,
        stash: &Mutex<Vec<Held<bb8::PooledConnection<'p, Trivial>>>>,
    ) -> Result<(), &'static str> {
        let conn = acquires.acquire(pool).await.map_err(|_| "pool")?;
        leaky_error_path(conn, stash)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leaking_function_is_named_with_its_count() {
        let pool = bb8::Pool::builder()
            .max_size(4)
            .connection_timeout(Duration::from_millis(200))
            .build(Trivial)
            .await
            .unwrap();
        let registry = PoolRegistry::new();
        let _registration = registry.register("b8", prodbg::pools::bb8(&pool));
        let acquires = registry.acquires("b8");
        let server = server(&registry);
        let stash = Mutex::default();
        for _ in 0..4 {
            assert!(bb8_checkout_leaks(&acquires, &pool, &stash).await.is_err());
        }
        only_site(&server, "b8", "bb8_checkout_leaks", 4).await;
        assert!(matches!(
            acquires.acquire(&pool).await,
            Err(bb8::RunError::TimedOut)
        ));
        eventually("one timeout warning", || {
            !events("b8", "acquire timed out").is_empty()
        })
        .await;
        assert!(events("b8", "acquire timed out")[0]
            .2
            .contains("bb8_checkout_leaks"));
        stash.lock().unwrap().clear();
        let h = holders(&server, "b8", "").await;
        assert_eq!(h["out"], 0, "{h}");
    }
}

#[cfg(feature = "pools-r2d2")]
mod r2d2_pool {
    use super::*;

    struct Trivial;
    impl r2d2::ManageConnection for Trivial {
        type Connection = Conn;
        type Error = std::io::Error;
        fn connect(&self) -> Result<Conn, std::io::Error> {
            Ok(Conn)
        }
        fn is_valid(&self, _: &mut Conn) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn has_broken(&self, _: &mut Conn) -> bool {
            false
        }
    }

    #[inline(never)]
    fn r2d2_checkout_leaks(
        acquires: &AcquireRecorder,
        pool: &r2d2::Pool<Trivial>,
        stash: &Mutex<Vec<Held<r2d2::PooledConnection<Trivial>>>>,
    ) -> Result<(), &'static str> {
        let conn = acquires.get(pool).map_err(|_| "pool")?;
        leaky_error_path(conn, stash)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leaking_function_is_named_with_its_count() {
        let pool = r2d2::Pool::builder()
            .max_size(3)
            .connection_timeout(Duration::from_millis(200))
            .build(Trivial)
            .unwrap();
        let registry = PoolRegistry::new();
        let _registration = registry.register("r2", prodbg::pools::r2d2(&pool));
        let acquires = registry.acquires("r2");
        let server = server(&registry);
        let stash = Mutex::default();
        for _ in 0..2 {
            assert!(r2d2_checkout_leaks(&acquires, &pool, &stash).is_err());
        }
        drop(acquires.get(&pool).unwrap());
        only_site(&server, "r2", "r2d2_checkout_leaks", 2).await;
        stash.lock().unwrap().clear();
        let h = holders(&server, "r2", "").await;
        assert_eq!(h["out"], 0, "{h}");
    }
}
