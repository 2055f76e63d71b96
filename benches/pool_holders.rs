//! What naming holders costs an acquire: each pool alone (`pool.get()` / `pool.acquire()` and
//! a drop) against the same pool through `AcquireRecorder::acquire` (or `get` for r2d2), side
//! by side in one process, rounds interleaved (each round starts with the other variant).
//! Rows: the wrapper around an already-ready acquire (its own cost, nothing else), deadpool,
//! bb8, r2d2 (trivial managers: the pool's own bookkeeping only) and sqlx with SQLite in memory
//! (its default `test_before_acquire` ping included). The added nanoseconds are with − alone
//! per round; min / median / max over the rounds. The goal is ≤ 100 ns added per acquire +
//! release with the default settings (there is no optional stack capture to weigh). A row
//! whose added nanoseconds spread over more than 400 ns says `noise`: its pool's own time
//! varies more than the wrapper costs (sqlx's ping crosses to SQLite's worker thread).
//!
//! ```text
//! cargo bench --bench pool_holders --features pools-sqlx,pools-deadpool,pools-bb8,pools-r2d2
//! PRODBG_BENCH_ROUNDS=15 ITERS=500000 cargo bench --bench pool_holders --all-features
//! ```

pub mod common;

use std::hint::black_box;
use std::time::Instant;

use common::env::{env_u64, rounds};
use common::stats::min_median_max;
use prodbg::pools::{AcquireRecorder, PoolRegistry};

#[derive(Debug)]
struct Conn;

struct Dp;
impl deadpool::managed::Manager for Dp {
    type Type = Conn;
    type Error = std::convert::Infallible;
    async fn create(&self) -> Result<Conn, Self::Error> {
        Ok(Conn)
    }
    async fn recycle(
        &self,
        _: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        Ok(())
    }
}

struct B8;
impl bb8::ManageConnection for B8 {
    type Connection = Conn;
    type Error = std::convert::Infallible;
    async fn connect(&self) -> Result<Conn, Self::Error> {
        Ok(Conn)
    }
    async fn is_valid(&self, _: &mut Conn) -> Result<(), Self::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

struct R2;
impl r2d2::ManageConnection for R2 {
    type Connection = Conn;
    type Error = std::io::Error;
    fn connect(&self) -> Result<Conn, Self::Error> {
        Ok(Conn)
    }
    fn is_valid(&self, _: &mut Conn) -> Result<(), Self::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// Nanoseconds per iteration of `body`, run `iters` times.
async fn time<F: std::future::Future<Output = ()>>(iters: u64, mut body: impl FnMut() -> F) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        body().await;
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

struct Row {
    name: &'static str,
    alone: Vec<f64>,
    with: Vec<f64>,
}

fn main() {
    let rounds = rounds(9);
    let iters = env_u64("ITERS", 200_000);
    let sqlx_iters = (iters / 20).max(1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = PoolRegistry::new();
    let rows = rt.block_on(async {
        let ready: AcquireRecorder = registry.acquires("ready");
        let dp_pool: deadpool::managed::Pool<Dp> = deadpool::managed::Pool::builder(Dp)
            .max_size(16)
            .build()
            .unwrap();
        let dp = registry.acquires("deadpool");
        let b8_pool = bb8::Pool::builder().max_size(16).build(B8).await.unwrap();
        let b8 = registry.acquires("bb8");
        let r2_pool = r2d2::Pool::builder().max_size(16).build(R2).unwrap();
        let r2 = registry.acquires("r2d2");
        let sq_pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(16)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let sq = registry.acquires("sqlx");
        let mut rows = vec![
            Row {
                name: "wrapper only (ready acquire)",
                alone: vec![],
                with: vec![],
            },
            Row {
                name: "deadpool",
                alone: vec![],
                with: vec![],
            },
            Row {
                name: "bb8",
                alone: vec![],
                with: vec![],
            },
            Row {
                name: "r2d2",
                alone: vec![],
                with: vec![],
            },
            Row {
                name: "sqlx + SQLite (memory)",
                alone: vec![],
                with: vec![],
            },
        ];
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for alone in order {
                let ns = [
                    if alone {
                        time(iters, || async {
                            let _ = black_box(std::future::ready(Ok::<_, ()>(Conn)).await.unwrap());
                        })
                        .await
                    } else {
                        time(iters, || async {
                            let c = ready
                                .hold(16, std::future::ready(Ok::<_, ()>(Conn)), |_| false)
                                .await
                                .unwrap();
                            let _ = black_box(&c);
                        })
                        .await
                    },
                    if alone {
                        time(iters, || async {
                            let _ = black_box(dp_pool.get().await.unwrap());
                        })
                        .await
                    } else {
                        time(iters, || async {
                            let _ = black_box(dp.acquire(&dp_pool).await.unwrap());
                        })
                        .await
                    },
                    if alone {
                        time(iters, || async {
                            let _ = black_box(b8_pool.get().await.unwrap());
                        })
                        .await
                    } else {
                        time(iters, || async {
                            let _ = black_box(b8.acquire(&b8_pool).await.unwrap());
                        })
                        .await
                    },
                    if alone {
                        time(iters, || async {
                            let _ = black_box(r2_pool.get().unwrap());
                        })
                        .await
                    } else {
                        time(iters, || async {
                            let _ = black_box(r2.get(&r2_pool).unwrap());
                        })
                        .await
                    },
                    if alone {
                        time(sqlx_iters, || async {
                            let _ = black_box(sq_pool.acquire().await.unwrap());
                        })
                        .await
                    } else {
                        time(sqlx_iters, || async {
                            let _ = black_box(sq.acquire(&sq_pool).await.unwrap());
                        })
                        .await
                    },
                ];
                for (row, ns) in rows.iter_mut().zip(ns) {
                    if alone {
                        row.alone.push(ns);
                    } else {
                        row.with.push(ns);
                    }
                }
            }
        }
        rows
    });

    println!(
        "pool_holders: ns per acquire + release, {rounds} rounds of {iters} ({sqlx_iters} for sqlx), one thread"
    );
    println!(
        "{:<30} {:>10} {:>12} {:>26} {:>8}",
        "pool", "alone", "with prodbg", "added ns min/median/max", "verdict"
    );
    for row in &rows {
        let added: Vec<f64> = row
            .with
            .iter()
            .zip(&row.alone)
            .map(|(w, a)| w - a)
            .collect();
        let (lo, med, hi) = min_median_max(added);
        let (_, alone, _) = min_median_max(row.alone.clone());
        let (_, with, _) = min_median_max(row.with.clone());
        println!(
            "{:<30} {:>10.1} {:>12.1} {:>8.1} / {:>6.1} / {:>6.1} {:>8}",
            row.name,
            alone,
            with,
            lo,
            med,
            hi,
            if hi - lo > 400.0 {
                "noise"
            } else if med <= 100.0 {
                "meets"
            } else {
                "MISSES"
            }
        );
    }
    println!(
        "memory: one 64-byte slot per connection the pool may open (16 here: 1 KiB per pool), made at the first acquire; nothing grows with acquires"
    );
}
