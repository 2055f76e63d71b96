//! A service with six faults from production life, switchable at run time, to practise
//! diagnosing each with curl alone (see docs/incident-walkthrough.md).
//!
//! ```text
//! cargo run --release --features heap,deadlock,pools-sqlx --example incident_demo
//! # then, with the printed token in $T:
//! curl -s -XPOST -H "Authorization: Bearer $T" 'http://127.0.0.1:6060/demo/fault?name=cpu'
//! ```
//!
//! Faults (`name=`): `cpu` (a hot loop in `pricing::recompute_all_quotes`), `leak` (a cache in
//! `sessions::remember_forever` that never evicts), `pool` (the database pool's max drops from 16
//! to 2 under load), `login-leak` (the seed's five whys: `auth::login`'s wrong-password path keeps
//! its database connection, until the pool is exhausted and every handler times out),
//! `deadlock` (two threads take two parking_lot locks in opposite order),
//! `hang` (the inventory service stops answering and checkouts, which read its socket without
//! a timeout, hang in `checkout::reserve_stock`).

use axum::http::Method;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use prodbg::pools::PoolRegistry;
use prodbg::{Admin, Scope};
use sqlx::sqlite::SqlitePoolOptions;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";

static CPU_FAULT: AtomicBool = AtomicBool::new(false);
static LEAK_FAULT: AtomicBool = AtomicBool::new(false);
static DEADLOCK_STARTED: AtomicBool = AtomicBool::new(false);
static HANG_FAULT: AtomicBool = AtomicBool::new(false);
static LOGIN_LEAK_FAULT: AtomicBool = AtomicBool::new(false);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, log_control) = prodbg::log_level::reloadable(filter);
    // The filter is global here, so prodbg's span layer goes next to the fmt layer, unfiltered.
    let (spans, spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer())
        .with(spans)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pools = PoolRegistry::new();
    let (pool_tx, pool_rx) = tokio::sync::watch::channel(16u32);

    let secret = match std::env::var("DEMO_TOKEN") {
        Ok(s) => s,
        Err(_) => prodbg::generate_secret()?,
    };
    let admin =
        Admin::from_env()
            .service_name("incident-demo")
            .token("oncall", Scope::Admin, &secret)
            .pool_registry(pools.clone())
            .log_control(log_control)
            .spans(spans_handle)
            .deadlock_detection(Duration::from_secs(2))
            .endpoint(
                Method::POST,
                "/demo/fault",
                Scope::Admin,
                "switch a fault on: ?name=cpu|leak|pool|login-leak|deadlock|hang",
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let pool_tx = pool_tx.clone();
                    async move {
                        switch_fault(q.get("name").map(String::as_str).unwrap_or(""), &pool_tx)
                    }
                },
            )
            .spawn()?;
    let url = admin.url();
    println!("incident demo: admin server on {url}/debug/");
    println!("token (admin scope): {secret}");
    println!("switch a fault on:  curl -s -XPOST -H 'Authorization: Bearer {secret}' '{url}/demo/fault?name=cpu'   (cpu|leak|pool|login-leak|deadlock|hang)");

    // The healthy background: request handlers that price quotes and remember sessions.
    std::thread::Builder::new()
        .name("pricing-worker".into())
        .spawn(pricing::run)?;
    std::thread::Builder::new()
        .name("session-cache".into())
        .spawn(sessions::run)?;
    let inventory = std::net::TcpListener::bind("127.0.0.1:0")?;
    let inventory_addr = inventory.local_addr()?;
    std::thread::Builder::new()
        .name("inventory".into())
        .spawn(move || checkout::inventory(inventory))?;
    for i in 0..2 {
        std::thread::Builder::new()
            .name(format!("checkout-{i}"))
            .spawn(move || checkout::run(inventory_addr, i))?;
    }
    runtime.block_on(async move {
        let handle = tokio::spawn(database::run(pools, pool_rx));
        tokio::signal::ctrl_c().await.ok();
        handle.abort();
    });
    admin.shutdown();
    Ok(())
}

fn switch_fault(
    name: &str,
    pool_tx: &tokio::sync::watch::Sender<u32>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    match name {
        "cpu" => CPU_FAULT.store(true, Ordering::SeqCst),
        "leak" => LEAK_FAULT.store(true, Ordering::SeqCst),
        "pool" => {
            let _ = pool_tx.send(2);
        }
        "hang" => HANG_FAULT.store(true, Ordering::SeqCst),
        "login-leak" => LOGIN_LEAK_FAULT.store(true, Ordering::SeqCst),
        "deadlock" => {
            if !DEADLOCK_STARTED.swap(true, Ordering::SeqCst) {
                locks::start_deadlock();
            }
        }
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                "unknown fault {other:?}; choose cpu, leak, pool, login-leak, deadlock or hang\n"
            ),
            )
        }
    }
    (StatusCode::OK, format!("fault {name} is on\n"))
}

mod pricing {
    use super::*;

    pub fn run() {
        loop {
            if CPU_FAULT.load(Ordering::Relaxed) {
                recompute_all_quotes();
            } else {
                std::hint::black_box(quote(7));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The fault: recomputes every quote on each tick instead of the changed ones.
    #[inline(never)]
    pub fn recompute_all_quotes() {
        let mut acc = 0u64;
        for i in 0..5_000_000u64 {
            acc = acc.wrapping_add(quote(i));
        }
        std::hint::black_box(acc);
    }

    #[inline(never)]
    fn quote(i: u64) -> u64 {
        std::hint::black_box(i.wrapping_mul(2_654_435_761) >> 7)
    }
}

mod checkout {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    /// Checkout requests on a handler thread: each reserves stock with the inventory service.
    pub fn run(inventory: SocketAddr, worker: u64) {
        for n in 0u64.. {
            let order_id = n * 2 + worker;
            let request = tracing::info_span!("request", route = "/orders/{id}/checkout", order_id);
            let _entered = request.enter();
            if let Err(e) = reserve_stock(inventory, order_id) {
                tracing::error!(order_id, "checkout of order {order_id} failed: {e}");
            }
            drop(_entered);
            drop(request);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The fault's victim: reads the inventory service's answer with no read timeout.
    #[inline(never)]
    pub fn reserve_stock(inventory: SocketAddr, order_id: u64) -> std::io::Result<()> {
        let _call = tracing::info_span!("inventory_call", peer = %inventory).entered();
        let mut conn = TcpStream::connect(inventory)?;
        writeln!(conn, "reserve {order_id}")?;
        let mut answer = [0u8; 3];
        conn.read_exact(&mut answer)?;
        if &answer != b"ok\n" {
            tracing::warn!(order_id, "order {order_id}: item out of stock");
        }
        Ok(())
    }

    /// The inventory service: answers each reservation, one in ten out of stock; with the
    /// fault on it keeps reading and never answers.
    pub fn inventory(listener: TcpListener) {
        let mut held = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            if HANG_FAULT.load(Ordering::Relaxed) {
                held.push(conn);
                continue;
            }
            let _ = conn.write_all(if n % 10 == 9 { b"no\n" } else { b"ok\n" });
        }
    }
}

mod sessions {
    use super::*;

    pub fn run() {
        let mut cache: Vec<Vec<u8>> = Vec::new();
        loop {
            if LEAK_FAULT.load(Ordering::Relaxed) {
                remember_forever(&mut cache);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The fault: 64 KiB per tick into a cache nothing ever evicts (~6 MB/s).
    #[inline(never)]
    pub fn remember_forever(cache: &mut Vec<Vec<u8>>) {
        cache.push(vec![0xAB; 64 * 1024]);
    }
}

mod database {
    use super::*;

    /// Load: 8 request handlers each holding a connection for 100 ms, and a login every 200 ms.
    /// When the pool's max drops from 16 to 2 (the `pool` fault), handlers queue in acquire and
    /// some time out (300 ms); with `login-leak`, failed logins keep their connections until
    /// none is left.
    pub async fn run(pools: PoolRegistry, mut max: tokio::sync::watch::Receiver<u32>) {
        loop {
            let size = *max.borrow_and_update();
            let Ok(pool) = SqlitePoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_millis(300))
                .connect("sqlite::memory:")
                .await
            else {
                return;
            };
            let _registration = pools.register("orders-db", prodbg::pools::sqlx(&pool));
            // Acquires go through the recorder: it counts waiters and timeouts (sqlx does not)
            // and names who holds each connection, for /debug/pools and /debug/pprof/pool_held.
            let recorder = pools.acquires("orders-db");
            // Production would keep the 60 s default; the demo reports a leak after 10 s.
            recorder.set_leak_threshold(Some(Duration::from_secs(10)));
            let mut load: Vec<_> = (0..8)
                .map(|_| {
                    let (pool, recorder) = (pool.clone(), recorder.clone());
                    tokio::spawn(async move {
                        loop {
                            let request = tracing::info_span!("request", route = "/orders/{id}");
                            orders::show(&recorder, &pool).instrument(request).await;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                })
                .collect();
            let (pool2, recorder2) = (pool.clone(), recorder.clone());
            load.push(tokio::spawn(async move {
                let kept = std::sync::Mutex::new(Vec::new());
                for attempt in 0u64.. {
                    let request = tracing::info_span!("request", route = "/login");
                    let _ = auth::login(&recorder2, &pool2, &kept, attempt)
                        .instrument(request)
                        .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
            if max.changed().await.is_err() {
                return;
            }
            load.iter().for_each(|h| h.abort());
            pool.close().await;
        }
    }
}

mod orders {
    use prodbg::pools::AcquireRecorder;
    use sqlx::SqlitePool;
    use std::time::Duration;

    /// Reads an order: holds a connection for 100 ms.
    pub async fn show(recorder: &AcquireRecorder, pool: &SqlitePool) {
        match recorder.acquire(pool).await {
            Ok(conn) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(conn);
            }
            Err(e) => tracing::warn!("orders-db: {e}"),
        }
    }
}

mod auth {
    use super::*;
    use prodbg::pools::{AcquireRecorder, Held};
    use sqlx::pool::PoolConnection;
    use sqlx::{Sqlite, SqlitePool};

    /// Connections a failed login forgot to give back (the bug).
    pub type Kept = std::sync::Mutex<Vec<Held<PoolConnection<Sqlite>>>>;

    /// Checks a password. With `login-leak` on, every third attempt is a wrong password, and
    /// that error path parks the connection in an audit list that is never drained.
    pub async fn login(
        recorder: &AcquireRecorder,
        pool: &SqlitePool,
        kept: &Kept,
        attempt: u64,
    ) -> Result<(), &'static str> {
        let mut conn = recorder.acquire(pool).await.map_err(|_| "no connection")?;
        sqlx::query("select 1")
            .execute(&mut **conn)
            .await
            .map_err(|_| "query failed")?;
        if LOGIN_LEAK_FAULT.load(Ordering::SeqCst) && attempt.is_multiple_of(3) {
            kept.lock().unwrap().push(conn); // the bug: the error path keeps the connection
            return Err("wrong password");
        }
        Ok(())
    }
}

mod locks {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Barrier;

    /// The fault: a transfer thread locks accounts then ledger; an audit thread the reverse.
    pub fn start_deadlock() {
        let accounts = Arc::new(Mutex::new(0u64));
        let ledger = Arc::new(Mutex::new(0u64));
        let both = Arc::new(Barrier::new(2));
        let (a, l, b) = (accounts.clone(), ledger.clone(), both.clone());
        let _ = std::thread::Builder::new()
            .name("transfer".into())
            .spawn(move || {
                prodbg::deadlock::name_current_thread();
                transfer_funds(&a, &l, &b)
            });
        let _ = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                prodbg::deadlock::name_current_thread();
                reconcile_ledger(&accounts, &ledger, &both)
            });
    }

    #[inline(never)]
    fn transfer_funds(accounts: &Mutex<u64>, ledger: &Mutex<u64>, both: &Barrier) {
        let mut a = accounts.lock();
        both.wait();
        let mut l = ledger.lock();
        *a += 1;
        *l += 1;
    }

    #[inline(never)]
    fn reconcile_ledger(accounts: &Mutex<u64>, ledger: &Mutex<u64>, both: &Barrier) {
        let mut l = ledger.lock();
        both.wait();
        let mut a = accounts.lock();
        *a += 1;
        *l += 1;
    }
}
