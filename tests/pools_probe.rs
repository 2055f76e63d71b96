//! Pool probe against real pools: sqlx (SQLite in memory), deadpool, bb8 and r2d2.
// The helpers serve the adapter tests, which each need their `pools-*` feature.
#![cfg_attr(
    not(any(
        feature = "pools-sqlx",
        feature = "pools-deadpool",
        feature = "pools-bb8",
        feature = "pools-r2d2"
    )),
    allow(dead_code, unused_imports)
)]

use prodbg::pools::{PoolRegistry, PoolSnapshot};
use std::time::{Duration, Instant};

/// Generous bound for "eventually"; never a timing assertion, only a hang guard.
const PATIENCE: Duration = Duration::from_secs(20);

fn only(registry: &PoolRegistry, name: &str) -> PoolSnapshot {
    let all = registry.snapshot();
    let found = all.iter().find(|(n, _)| n == name);
    found
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| panic!("{name} not listed in {all:?}"))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn names(registry: &PoolRegistry) -> Vec<String> {
    registry.snapshot().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn derived_numbers_follow_the_documented_rules() {
    let mut s = PoolSnapshot::default();
    assert_eq!((s.utilisation(), s.saturated()), (None, None));
    s.max_size = Some(4);
    s.in_use = Some(2);
    assert_eq!((s.utilisation(), s.saturated()), (Some(0.5), Some(false)));
    s.in_use = Some(4);
    assert_eq!(
        s.saturated(),
        Some(true),
        "waiting unknown: exhausted is saturated"
    );
    s.waiting = Some(0);
    assert_eq!(s.saturated(), Some(false), "nobody waiting: not saturated");
    s.waiting = Some(1);
    assert_eq!(s.saturated(), Some(true));
    let json = serde_json::to_value(PoolSnapshot::default()).unwrap();
    assert!(json["waiting"].is_null(), "unknown is null, not 0: {json}");
}

#[cfg(feature = "pools-sqlx")]
mod sqlx_pool {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;
    use sqlx::SqlitePool;

    async fn pool(max: u32, acquire_timeout: Duration) -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(acquire_timeout)
            .connect("sqlite::memory:")
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exhausted_pool_is_saturated_and_recovers() {
        let pool = pool(4, Duration::from_secs(60)).await;
        let registry = PoolRegistry::new();
        let _registration = registry.register("sqlite", prodbg::pools::sqlx(&pool));

        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.acquire().await.unwrap());
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { drop(pool.acquire().await.unwrap()) })
            })
            .collect();

        let s = only(&registry, "sqlite");
        assert_eq!(
            (s.max_size, s.size, s.idle, s.in_use),
            (Some(4), Some(4), Some(0), Some(4))
        );
        assert_eq!(s.waiting, None, "sqlx 0.8 cannot tell how many wait");
        assert_eq!(s.acquire_wait, None);
        assert_eq!(s.saturated(), Some(true), "exhausted with waiting unknown");
        assert_eq!(s.utilisation(), Some(1.0));

        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        eventually("idle back to 4", || {
            let s = only(&registry, "sqlite");
            s.idle == Some(4) && s.in_use == Some(0)
        })
        .await;
        assert_eq!(only(&registry, "sqlite").saturated(), Some(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorder_fills_waiting_wait_time_and_timeouts() {
        let pool = pool(4, Duration::from_secs(60)).await;
        let registry = PoolRegistry::new();
        let _registration = registry.register("sqlite", prodbg::pools::sqlx(&pool));
        let acquires = registry.acquires("sqlite");

        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(acquires.time(pool.acquire(), |_| false).await.unwrap());
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (pool, acquires) = (pool.clone(), registry.acquires("sqlite"));
                tokio::spawn(async move {
                    let conn = acquires.time(pool.acquire(), |_| false).await;
                    drop(conn.unwrap());
                })
            })
            .collect();
        eventually("two waiters seen", || {
            only(&registry, "sqlite").waiting == Some(2)
        })
        .await;
        let s = only(&registry, "sqlite");
        assert_eq!(
            (s.in_use, s.idle, s.saturated()),
            (Some(4), Some(0), Some(true))
        );

        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let s = only(&registry, "sqlite");
        assert_eq!(s.waiting, Some(0));
        assert_eq!(s.acquire_timeouts_total, Some(0));
        let wait = s.acquire_wait.unwrap();
        assert_eq!(wait.count, 6);
        assert_eq!(wait.buckets.last().map(|b| b.count), Some(6));
        assert!(wait
            .buckets
            .windows(2)
            .all(|w| w[0].count <= w[1].count && w[0].le_seconds < w[1].le_seconds));

        // A timeout on a tiny pool.
        let tiny = pool_with_timeout().await;
        let _reg = registry.register("tiny", prodbg::pools::sqlx(&tiny));
        let tiny_acquires = registry.acquires("tiny");
        let _only_conn = tiny.acquire().await.unwrap();
        let is_timeout = |e: &sqlx::Error| matches!(e, sqlx::Error::PoolTimedOut);
        let err = tiny_acquires.time(tiny.acquire(), is_timeout).await;
        assert!(err.is_err());
        let s = only(&registry, "tiny");
        assert_eq!(s.acquire_timeouts_total, Some(1));
        assert_eq!(s.acquire_wait.map(|h| h.count), Some(1));
    }

    async fn pool_with_timeout() -> SqlitePool {
        pool(1, Duration::from_millis(50)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_or_closed_pool_disappears() {
        let registry = PoolRegistry::new();
        let kept = pool(2, Duration::from_secs(5)).await;
        let _kept = registry.register("kept", prodbg::pools::sqlx(&kept));

        let dropped = pool(2, Duration::from_secs(5)).await;
        let registration = registry.register("dropped", prodbg::pools::sqlx(&dropped));
        let closed = pool(2, Duration::from_secs(5)).await;
        registry.register_static("closed", prodbg::pools::sqlx(&closed));
        assert_eq!(
            names(&registry),
            ["closed", "dropped", "kept"],
            "sorted by name"
        );

        drop((dropped, registration));
        closed.close().await;
        assert_eq!(names(&registry), ["kept"]);
        assert!(registry.unregister("kept"));
        assert!(names(&registry).is_empty());
    }
}

/// A token the managers below hold: its strong count shows whether a pool is still alive.
#[cfg(any(
    feature = "pools-deadpool",
    feature = "pools-bb8",
    feature = "pools-r2d2"
))]
#[derive(Clone, Default)]
struct Alive(std::sync::Arc<()>);

#[cfg(any(
    feature = "pools-deadpool",
    feature = "pools-bb8",
    feature = "pools-r2d2"
))]
impl Alive {
    fn pools(&self) -> usize {
        std::sync::Arc::strong_count(&self.0) - 1
    }
}

#[cfg(feature = "pools-deadpool")]
mod deadpool_pool {
    use super::*;
    use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};
    use std::convert::Infallible;

    struct Trivial(#[allow(dead_code)] Alive);

    impl Manager for Trivial {
        type Type = ();
        type Error = Infallible;
        async fn create(&self) -> Result<(), Infallible> {
            Ok(())
        }
        async fn recycle(&self, _: &mut (), _: &Metrics) -> RecycleResult<Infallible> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_maps_and_dropped_pool_disappears() {
        let alive = Alive::default();
        let pool: Pool<Trivial> = Pool::builder(Trivial(alive.clone()))
            .max_size(3)
            .build()
            .unwrap();
        let registry = PoolRegistry::new();
        // Owned by the registry, yet holds only a WeakPool.
        registry.register_static("deadpool", prodbg::pools::deadpool(&pool));

        let held = [
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
        ];
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { drop(pool.get().await.unwrap()) }
        });
        eventually("one waiter", || {
            only(&registry, "deadpool").waiting == Some(1)
        })
        .await;
        let s = only(&registry, "deadpool");
        assert_eq!(
            (s.max_size, s.size, s.idle, s.in_use),
            (Some(3), Some(3), Some(0), Some(3))
        );
        assert_eq!(s.saturated(), Some(true));
        assert_eq!((s.acquire_timeouts_total, s.acquire_wait), (None, None));

        drop(held);
        waiter.await.unwrap();
        let s = only(&registry, "deadpool");
        assert_eq!(
            (s.idle, s.in_use, s.waiting, s.saturated()),
            (Some(3), Some(0), Some(0), Some(false))
        );

        drop(pool);
        assert!(names(&registry).is_empty(), "dropped pool still listed");
        assert_eq!(alive.pools(), 0, "registry kept the pool alive");
    }
}

#[cfg(feature = "pools-bb8")]
mod bb8_pool {
    use super::*;
    use std::convert::Infallible;

    struct Trivial(Alive);

    impl bb8::ManageConnection for Trivial {
        type Connection = Alive;
        type Error = Infallible;
        async fn connect(&self) -> Result<Alive, Infallible> {
            Ok(self.0.clone())
        }
        async fn is_valid(&self, _: &mut Alive) -> Result<(), Infallible> {
            Ok(())
        }
        fn has_broken(&self, _: &mut Alive) -> bool {
            false
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_and_statistics_map() {
        let alive = Alive::default();
        let pool = bb8::Pool::builder()
            .max_size(3)
            .connection_timeout(Duration::from_secs(60))
            .build(Trivial(alive.clone()))
            .await
            .unwrap();
        let registry = PoolRegistry::new();
        let registration = registry.register("bb8", prodbg::pools::bb8(&pool));

        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.get_owned().await.unwrap());
        }
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { drop(pool.get().await.unwrap()) }
        });
        eventually("one waiter", || only(&registry, "bb8").waiting == Some(1)).await;
        let s = only(&registry, "bb8");
        assert_eq!(
            (s.max_size, s.size, s.idle, s.in_use),
            (Some(3), Some(3), Some(0), Some(3))
        );
        assert_eq!(s.saturated(), Some(true));

        drop(held);
        waiter.await.unwrap();
        let s = only(&registry, "bb8");
        assert_eq!((s.idle, s.in_use, s.waiting), (Some(3), Some(0), Some(0)));
        assert_eq!(s.acquire_timeouts_total, Some(0));
        let wait = s.acquire_wait.unwrap();
        assert_eq!(wait.count, 4);
        assert!(
            wait.buckets.is_empty(),
            "bb8 keeps a sum, not a distribution"
        );

        drop((pool, registration));
        assert!(names(&registry).is_empty());
        eventually("bb8 pool freed", || alive.pools() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timeouts_are_counted() {
        let pool = bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_millis(50))
            .build(Trivial(Alive::default()))
            .await
            .unwrap();
        let registry = PoolRegistry::new();
        let _registration = registry.register("bb8", prodbg::pools::bb8(&pool));
        let _held = pool.get().await.unwrap();
        assert!(matches!(pool.get().await, Err(bb8::RunError::TimedOut)));
        assert_eq!(only(&registry, "bb8").acquire_timeouts_total, Some(1));
    }
}

#[cfg(feature = "pools-r2d2")]
mod r2d2_pool {
    use super::*;

    struct Trivial(Alive);

    impl r2d2::ManageConnection for Trivial {
        type Connection = Alive;
        type Error = std::io::Error;
        fn connect(&self) -> Result<Alive, std::io::Error> {
            Ok(self.0.clone())
        }
        fn is_valid(&self, _: &mut Alive) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn has_broken(&self, _: &mut Alive) -> bool {
            false
        }
    }

    #[test]
    fn state_maps_and_recorder_counts_timeouts() {
        let alive = Alive::default();
        let registry = PoolRegistry::new();
        let acquires = registry.acquires("r2d2");
        let pool = r2d2::Pool::builder()
            .max_size(3)
            .min_idle(Some(0))
            .event_handler(Box::new(acquires.clone()))
            .build(Trivial(alive.clone()))
            .unwrap();
        let registration = registry.register("r2d2", prodbg::pools::r2d2(&pool));

        let held = [pool.get().unwrap(), pool.get().unwrap()];
        let s = only(&registry, "r2d2");
        assert_eq!(
            (s.max_size, s.size, s.idle, s.in_use),
            (Some(3), Some(2), Some(0), Some(2))
        );
        assert_eq!((s.waiting, s.saturated()), (None, Some(false)));

        let third = pool.get().unwrap();
        assert!(pool.get_timeout(Duration::from_millis(50)).is_err());
        let s = only(&registry, "r2d2");
        assert_eq!(
            (s.in_use, s.waiting, s.saturated()),
            (Some(3), None, Some(true))
        );
        assert_eq!(s.acquire_timeouts_total, Some(1));
        assert_eq!(
            s.acquire_wait.map(|h| h.count),
            Some(4),
            "3 checkouts + 1 timeout"
        );

        drop((held, third));
        let s = only(&registry, "r2d2");
        assert_eq!((s.idle, s.in_use), (Some(3), Some(0)));

        drop((pool, registration));
        assert!(names(&registry).is_empty());
        let start = Instant::now();
        while alive.pools() != 0 {
            assert!(start.elapsed() < PATIENCE, "r2d2 pool not freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
