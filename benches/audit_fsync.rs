//! What an audit record costs under each fsync policy, measured through the public API: a real
//! admin server with `.audit_file(..)`, `.audit_key(..)` and `.audit_fsync(..)`, and keep-alive
//! clients making authenticated requests to a no-op host endpoint (`GET`, no body), each of
//! which leaves one `request` record. The cost of a record is a request's time with the policy
//! minus its time on a server without an audit file (records then go to `tracing` only, and
//! this bench installs no subscriber), in rounds interleaved across the servers so that drift
//! in the machine's load hits every policy alike. Printed: min / median / max over the rounds.
//!
//! The audit files go under `$AUDIT_BENCH_DIR`, else the current directory (cargo runs benches
//! in the package root): point it at the disk that matters, not a tmpfs.
//!
//! `cargo bench --bench audit_fsync`

pub mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::admin::SECRET;
use common::clock::process_cpu_time;
use common::http::Client;
use common::stats::min_median_max;
use prodbg::audit::{FsyncPolicy, Rotation};
use prodbg::{Admin, AdminHandle, Scope};

const KEY: &str = "bench-audit-key-0123456789abcdef";
const PATH: &str = "/debug/bench/noop";
const ROUND: Duration = Duration::from_millis(300);
const ROUNDS: usize = 31;
const CLIENTS: usize = 4;

struct Case {
    name: &'static str,
    policy: Option<FsyncPolicy>,
}

const CASES: [Case; 4] = [
    Case {
        name: "no audit file",
        policy: None,
    },
    Case {
        name: "Never",
        policy: Some(FsyncPolicy::Never),
    },
    Case {
        name: "Every(1 s) (default)",
        policy: Some(FsyncPolicy::Every(Duration::from_secs(1))),
    },
    Case {
        name: "Always",
        policy: Some(FsyncPolicy::Always),
    },
];

fn main() {
    let base = std::env::var_os("AUDIT_BENCH_DIR").map_or_else(
        || std::env::current_dir().expect("the current directory"),
        Into::into,
    );
    let dir = tempfile::Builder::new()
        .prefix("audit-fsync-bench")
        .tempdir_in(&base)
        .expect("temp dir for the audit files");
    let servers: Vec<(AdminHandle, Option<std::path::PathBuf>)> = CASES
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let file = case
                .policy
                .map(|_| dir.path().join(format!("audit-{i}.jsonl")));
            (spawn(case.policy, file.as_deref()), file)
        })
        .collect();
    for (server, _) in &servers {
        let mut c = Client::connect(server.local_addr());
        (0..200).for_each(|_| {
            c.get(PATH);
        });
    }
    println!(
        "audit record cost by fsync policy: files in {} (keyed chain, rotation off), \
         {ROUNDS} rounds of {ROUND:?} per case, interleaved (each round runs every case, in turn first)",
        dir.path().display()
    );

    // One client, sequential requests: the latency (wall) and the CPU each record adds.
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut requests = vec![0u64; CASES.len()];
    for r in 0..ROUNDS {
        for i in rotated(r) {
            let cpu_start = process_cpu_time().as_secs_f64();
            let (n, secs) = run(servers[i].0.local_addr(), 1, ROUND);
            cpu[i].push((process_cpu_time().as_secs_f64() - cpu_start) * 1e6 / n as f64);
            wall[i].push(secs * 1e6 / n as f64);
            requests[i] += n;
        }
    }
    println!();
    println!("one keep-alive client, sequential GETs");
    table("wall µs/request", &wall);
    println!();
    table("CPU µs/request", &cpu);
    println!("(CPU: the whole process's, client + server + audit thread; Δ: a round's figure minus the same round's \"no audit file\" one)");

    // Several clients at once: the admin server's throughput.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for r in 0..ROUNDS {
        for i in rotated(r) {
            let (n, secs) = run(servers[i].0.local_addr(), CLIENTS, ROUND);
            rates[i].push(n as f64 / secs);
            requests[i] += n;
        }
    }
    println!();
    println!("{CLIENTS} keep-alive clients at once: requests (= records) per second (min / median / max)");
    let (_, none_med, _) = min_median_max(rates[0].clone());
    for (i, case) in CASES.iter().enumerate() {
        let (lo, med, hi) = min_median_max(rates[i].clone());
        println!(
            "{:<22} {:>8.0} / {:>8.0} / {:>8.0} req/s   ÷ none {:.2}",
            case.name,
            lo,
            med,
            hi,
            med / none_med
        );
    }

    println!();
    for (i, (server, file)) in servers.into_iter().enumerate() {
        server.shutdown();
        if let Some(file) = file {
            println!(
                "{:<22} {} request records in the file for {} requests",
                CASES[i].name,
                request_records(&file),
                requests[i] + 200
            );
        }
    }
}

fn spawn(policy: Option<FsyncPolicy>, file: Option<&Path>) -> AdminHandle {
    let mut b = Admin::builder()
        .bind("127.0.0.1:0")
        .token("bench", Scope::Read, SECRET)
        .endpoint(Method::GET, PATH, Scope::Read, "no-op", || async { "ok" });
    if let (Some(policy), Some(file)) = (policy, file) {
        b = b
            .audit_file(file)
            .audit_key(KEY)
            .audit_fsync(policy)
            .audit_rotation(Rotation::Never);
    }
    b.spawn().expect("spawn the admin server")
}

/// `clients` threads, each on its own keep-alive connection, GET `PATH` for `d`; returns the
/// requests answered and the seconds taken.
fn run(addr: SocketAddr, clients: usize, d: Duration) -> (u64, f64) {
    let start = Instant::now();
    let n: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    let mut n = 0u64;
                    while start.elapsed() < d {
                        c.get(PATH);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    (n, start.elapsed().as_secs_f64())
}

/// Per case: min / median / max over the rounds, the same of each round's difference from the
/// same round without an audit file (the record's cost), and the median ratio to it.
fn table(what: &str, samples: &[Vec<f64>]) {
    println!(
        "{:<22} {:>28}   {:>30}   {:>7}",
        "policy", what, "Δ µs/record (min / med / max)", "÷ none"
    );
    let base = &samples[0];
    for (i, case) in CASES.iter().enumerate() {
        let (lo, med, hi) = min_median_max(samples[i].clone());
        let deltas: Vec<f64> = samples[i].iter().zip(base).map(|(t, b)| t - b).collect();
        let ratios: Vec<f64> = samples[i].iter().zip(base).map(|(t, b)| t / b).collect();
        let (dlo, dmed, dhi) = min_median_max(deltas);
        let (_, rmed, _) = min_median_max(ratios);
        let delta = if i == 0 {
            "—".to_string()
        } else {
            format!("{dlo:.1} / {dmed:.1} / {dhi:.1}")
        };
        println!(
            "{:<22} {:>28}   {:>30}   {:>7.2}",
            case.name,
            format!("{lo:.1} / {med:.1} / {hi:.1}"),
            delta,
            rmed
        );
    }
}

/// The cases in round `r`'s order: each case goes first in turn.
fn rotated(r: usize) -> impl Iterator<Item = usize> {
    (0..CASES.len()).map(move |i| (i + r) % CASES.len())
}

fn request_records(file: &Path) -> usize {
    let f = std::fs::File::open(file).expect("open the audit file");
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("{\"kind\":\"request\""))
        .count()
}
