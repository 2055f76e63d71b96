//! The real `go tool pprof` (Debian `golang-go`; `.ci/run` installs it) against the server, as an
//! operator types it: `go tool pprof -top http://user:secret@host/debug/pprof/profile?seconds=2`
//! and `…/debug/pprof/allocs`. Go sends the URL's user and password as Basic auth. On jemalloc
//! with profiling compiled in, as tests/heap_http.rs sets it up. A missing `go` fails the test
//! with the install command; it never skips.
#![cfg(all(feature = "heap", feature = "cpu"))]

mod common;
#[cfg(feature = "tls")]
#[path = "common/tls.rs"]
mod pki;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:14\0";

#[inline(never)]
fn prodbg_gopprof_hot_z3(stop: &AtomicBool) -> u64 {
    let mut x = 7u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = black_box(x.rotate_left(5) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
    }
    x
}

#[inline(never)]
fn prodbg_gopprof_leak_m5(into: &mut Vec<Vec<u8>>) {
    for i in 0..256 {
        into.push(black_box(vec![i as u8; 64 * 1024]));
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("prodbg-go-pprof-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["home", "pprof", "gocache"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One CPU profile at a time per process: the tests of this binary take turns.
static ONE_PROFILE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn pprof_top(dir: &Path, url: String) -> (String, String) {
    let dir = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || go_tool_pprof(&dir, &["-top", &url]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_reads_cpu_and_allocs_profiles_through_basic_auth() {
    let _turn = ONE_PROFILE.lock().await;
    let scratch = Scratch::new();
    let server = spawn_with(|b| b.service_name("go-pprof-test"));
    let addr = server.handle.local_addr();

    // CPU: a thread spinning in a known function.
    let stop = Arc::new(AtomicBool::new(false));
    let hot = {
        let stop = stop.clone();
        std::thread::spawn(move || prodbg_gopprof_hot_z3(&stop))
    };
    let url = format!("http://prof:{PROFILE_SECRET}@{addr}/debug/pprof/profile?seconds=2");
    let (top, stderr) = pprof_top(&scratch.0, url).await;
    stop.store(true, Ordering::Relaxed);
    hot.join().unwrap();
    println!("-- go tool pprof (cpu) stderr:\n{stderr}-- stdout:\n{top}");
    assert!(
        top.contains("prodbg_gopprof_hot_z3"),
        "hot function not in -top:\n{top}"
    );

    // allocs: heap sampling switched on (admin), a known function holding 16 MiB.
    let r = client()
        .post(server.url("/debug/pprof/heap/activate"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let mut held = Vec::new();
    prodbg_gopprof_leak_m5(&mut held);
    let url = format!("http://prof:{PROFILE_SECRET}@{addr}/debug/pprof/allocs");
    let (top, stderr) = pprof_top(&scratch.0, url).await;
    println!("-- go tool pprof (allocs) stderr:\n{stderr}-- stdout:\n{top}");
    assert!(
        top.contains("prodbg_gopprof_leak_m5"),
        "leaking function not in -top:\n{top}"
    );
    drop(held);
    let r = client()
        .post(server.url("/debug/pprof/heap/deactivate"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Both fetches were Basic-authenticated as the profile token, and nothing else was asked
    // (no remote symbolization: the profiles carry their function names).
    let fetched: Vec<(String, String)> = server
        .audit_lines()
        .iter()
        .filter(|l| l["path"].as_str().unwrap().starts_with("/debug/pprof/"))
        .filter(|l| {
            !l["path"]
                .as_str()
                .unwrap()
                .starts_with("/debug/pprof/heap/")
        })
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                format!("{} {}", l["status"], l["token_id"]),
            )
        })
        .collect();
    assert_eq!(
        fetched,
        [
            (
                "/debug/pprof/profile".to_string(),
                "200 \"prof\"".to_string()
            ),
            (
                "/debug/pprof/allocs".to_string(),
                "200 \"prof\"".to_string()
            ),
        ],
    );
    let saved: Vec<String> = std::fs::read_dir(scratch.0.join("pprof"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    println!("PPROF_TMPDIR holds {saved:?}");
    assert_eq!(
        saved.len(),
        2,
        "pprof saves each fetched profile: {saved:?}"
    );
}

/// `go tool pprof` over `https://`. Go's `go tool pprof` fetches http(s) URLs itself and
/// ignores pprof's `-tls_ca`/`-tls_cert`/`-tls_key` flags (cmd/pprof's fetcher; the standalone
/// google/pprof honours them), so it trusts the CA the way every Go program on Linux can:
/// `SSL_CERT_FILE`, with the profile token as Basic credentials in the URL. Without the CA it
/// refuses the server.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_reads_a_cpu_profile_over_https_trusting_the_ca() {
    let _turn = ONE_PROFILE.lock().await;
    let scratch = Scratch::new();
    let ca = pki::Ca::new("prodbg test CA");
    let cert = ca.server(0x81);
    let server = spawn_with(|b| {
        b.service_name("go-pprof-tls-test")
            .tls(&cert.cert, &cert.key)
    });
    let ca_file = scratch.0.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let addr = server.handle.local_addr();
    let url = format!("https://prof:{PROFILE_SECRET}@{addr}/debug/pprof/profile?seconds=2");

    let run = |url: String, trust: bool| {
        let (dir, ca_file) = (scratch.0.clone(), ca_file.clone());
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &Path)> = if trust {
                vec![("SSL_CERT_FILE", ca_file.as_path())]
            } else {
                Vec::new()
            };
            go_tool_pprof_env(&dir, &env, &["-top", &url])
        })
    };
    let untrusted = run(url.replace("seconds=2", "seconds=1"), false)
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        !untrusted.status.success() && stderr.contains("unknown authority"),
        "without the CA go tool pprof must refuse the server:\n{stderr}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let hot = {
        let stop = stop.clone();
        std::thread::spawn(move || prodbg_gopprof_hot_z3(&stop))
    };
    let out = run(url, true).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    hot.join().unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof failed:\n{stderr}\n{top}"
    );
    assert!(
        top.contains("prodbg_gopprof_hot_z3"),
        "hot function not in -top:\n{top}"
    );
}
