//! Off-host symbolization over real HTTP: `?symbolize=false` profiles whose mappings carry
//! path, offsets and build id, decoded with an independent decoder (pprof-rs's prost types),
//! and Go's symbol protocol at `/debug/pprof/symbol`.
#![cfg(feature = "cpu")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::decode_pprof as decode;
use common::*;

/// The profiler is process-global: these tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[inline(never)]
fn prodbg_offline_hot_loop_m3(n: u64) -> u64 {
    (0..n).fold(7u64, |a, x| {
        std::hint::black_box(a.wrapping_mul(31).wrapping_add(x))
    })
}

fn hot() -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            std::hint::black_box(prodbg_offline_hot_loop_m3(100_000));
        }
    });
    (stop, t)
}

async fn post(url: &str, body: String) -> (u16, String) {
    let r = client()
        .post(url)
        .bearer_auth(PROFILE_SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn profile(server: &Server, query: &str) -> pprof::protos::Profile {
    let r = client()
        .get(server.url(&format!("/debug/pprof/profile?seconds=1{query}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    decode(&r.bytes().await.unwrap())
}

fn build_id_of_self() -> String {
    // The GNU build-id note of this test binary, read from the file.
    let bytes = std::fs::read("/proc/self/exe").unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w[4..12] == [20, 0, 0, 0, 3, 0, 0, 0] && &w[12..16] == b"GNU\0")
        .expect("a GNU build-id note of 20 bytes");
    bytes[at + 16..at + 36]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn unsymbolized_profile_carries_real_mappings_and_the_symbol_endpoint_names_them() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    let (stop, t) = hot();
    let p = profile(&server, "&symbolize=false").await;
    let s = |i: i64| p.string_table[i as usize].clone();
    assert!(!p.sample.is_empty());
    assert!(
        p.function.is_empty(),
        "no functions in an unsymbolized profile"
    );
    assert!(p
        .location
        .iter()
        .all(|l| l.line.is_empty() || l.address == 0));
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let main = &p.mapping[0];
    assert_eq!(s(main.filename), exe.display().to_string());
    assert_eq!(s(main.build_id), build_id_of_self());
    assert!(!main.has_functions && !main.has_filenames && !main.has_line_numbers);
    assert!(main.memory_start < main.memory_limit && main.memory_start % 4096 == 0);
    assert!(p.mapping.iter().any(|m| s(m.filename).contains("libc.so")));
    assert!(p.mapping.iter().any(|m| s(m.filename) == "[vdso]"));
    // Every location with an address lies in the mapping it names.
    for l in p.location.iter().filter(|l| l.address != 0) {
        let m = &p.mapping[l.mapping_id as usize - 1];
        assert!(
            (m.memory_start..m.memory_limit).contains(&l.address),
            "{l:?}"
        );
    }

    // Go's symbol protocol names the profile's addresses: the hot function among them.
    let (code, body) = get(&server.url("/debug/pprof/symbol"), Some(PROFILE_SECRET)).await;
    assert_eq!((code, body.as_str()), (200, "num_symbols: 1\n"));
    let addrs: Vec<String> = p
        .location
        .iter()
        .filter(|l| l.mapping_id == 1)
        .map(|l| format!("{:#x}", l.address))
        .take(4000)
        .collect();
    let (code, body) = post(&server.url("/debug/pprof/symbol"), addrs.join("+")).await;
    assert_eq!(code, 200, "{body}");
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("num_symbols: 1"));
    let named: Vec<(&str, &str)> = lines.map(|l| l.split_once(' ').unwrap()).collect();
    assert!(named.iter().all(|(a, _)| addrs.iter().any(|x| x == a)));
    assert!(
        named
            .iter()
            .any(|(_, n)| n.ends_with("prodbg_offline_hot_loop_m3")),
        "{named:?}"
    );
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();

    // A symbolized profile carries the same real mappings, marked symbolized.
    let p = profile(&server, "").await;
    let main = &p.mapping[0];
    assert_eq!(p.string_table[main.build_id as usize], build_id_of_self());
    assert!(main.has_functions && main.has_line_numbers && main.has_inline_frames);
}

#[tokio::test]
async fn symbol_requests_are_bounded_and_bad_ones_refused() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    let url = server.url("/debug/pprof/symbol");
    let many: Vec<String> = (1..=4097u64).map(|i| i.to_string()).collect();
    let (code, body) = post(&url, many.join("+")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("at most 4096"), "{body}");
    let (code, body) = post(&url, "0x10+nonsense".into()).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "num_symbols: 1\n"),
        "no name for 0x10"
    );
    let (code, body) = get(
        &server.url("/debug/pprof/profile?symbolize=false&format=svg"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("format=pprof only"), "{body}");
}
