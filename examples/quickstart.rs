//! A small service doing real work, with the prodbg admin server up.
//!
//! ```text
//! cargo run --release --features heap --example quickstart
//! ```
//!
//! Configured from the environment (`PRODBG_ADDR`, `PRODBG_TOKENS`, `PRODBG_AUDIT_FILE`); when
//! no token is given it generates an admin token and prints it once, with a ready-to-paste curl.
//! Without `PRODBG_AUDIT_FILE` the audit log goes to a private directory (mode 0700):
//! `$XDG_RUNTIME_DIR/prodbg-quickstart/audit.jsonl`, else `<tmp>/prodbg-quickstart-<uid>/…`.
//! Ctrl-C or SIGTERM shut the admin server down in order, writing the folded audit counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prodbg::{Admin, Scope};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

// jemalloc, with heap sampling compiled in but inactive until POST /debug/pprof/heap/activate.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's log filter, wrapped so PUT /debug/log-level can change it for a while. It
    // filters the fmt layer only, so tokio-console (when on) still sees tokio's spans; prodbg's
    // span layer (/debug/spans, /debug/errors) shares it, the cheapest way to install it.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, log_control) = prodbg::log_level::reloadable(filter);
    let (console_layer, console_addr) = console();
    let (spans, spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
    tracing_subscriber::registry()
        .with(console_layer)
        .with(
            tracing_subscriber::fmt::layer()
                .and_then(spans)
                .with_filter(filter),
        )
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut builder = Admin::from_env()
        .tokio_runtime("main", runtime.handle().clone())
        .service_name("quickstart")
        .build_info("version", env!("CARGO_PKG_VERSION"))
        .log_control(log_control)
        .spans(spans_handle)
        .readiness_check("work-loop", Duration::from_secs(1), || async { Ok(()) });
    let generated = if std::env::var_os("PRODBG_TOKENS").is_none() {
        let secret = prodbg::generate_secret()?;
        builder = builder.token("quickstart", Scope::Admin, &secret);
        Some(secret)
    } else {
        None
    };
    if std::env::var_os("PRODBG_AUDIT_FILE").is_none() {
        let audit = private_dir()?.join("audit.jsonl");
        println!("audit log: {}", audit.display());
        builder = builder.audit_file(audit);
    }
    if let Some(addr) = console_addr {
        builder = builder.tokio_console(addr);
    }
    let admin = builder.spawn()?;

    println!("prodbg admin server: {}/debug/", admin.url());
    match &generated {
        Some(secret) => {
            println!("generated admin token (shown once): {secret}");
            println!(
                "try:  curl -s -H 'Authorization: Bearer {secret}' {}/debug/memory",
                admin.url()
            );
            println!("      curl -s -H 'Authorization: Bearer {secret}' '{}/debug/pprof/profile?seconds=5&format=svg' -o cpu.svg", admin.url());
            let hostport = admin.local_addr();
            println!("browser: http://quickstart:{secret}@{hostport}/debug/   (or open /debug/ and log in as quickstart)");
            println!("go:    go tool pprof -top 'http://quickstart:{secret}@{hostport}/debug/pprof/profile?seconds=5'");
        }
        None => println!(
            "try:  curl -s -H \"Authorization: Bearer $SECRET\" {}/debug/",
            admin.url()
        ),
    }
    if let Some(addr) = console_addr {
        println!("tokio-console:  tokio-console http://{addr}");
    }

    let work = Arc::new(AtomicU64::new(0));
    // Two plain threads doing CPU work.
    for i in 0..2 {
        let work = work.clone();
        std::thread::Builder::new()
            .name(format!("cruncher-{i}"))
            .spawn(move || loop {
                work.fetch_add(crunch(20_000), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            })?;
    }
    runtime.block_on(async move {
        // Requests: a span per request with its route, one in 50 slow, one in 20 failing.
        tokio::spawn(async {
            for n in 0u64.. {
                let route = ["/users/{id}", "/orders/{id}", "/search"][n as usize % 3];
                let request = tracing::info_span!("request", route, id = n);
                tracing::Instrument::instrument(handle_request(n), request).await;
            }
        });
        // Several async tasks that allocate: a small cache that churns.
        for t in 0..4 {
            let work = work.clone();
            tokio::spawn(async move {
                let mut cache: HashMap<u64, Vec<u8>> = HashMap::new();
                let mut n = 0u64;
                loop {
                    n += 1;
                    cache.insert(n % 512, vec![t as u8; 1024 + (n % 4096) as usize]);
                    if n.is_multiple_of(64) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        work.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // SIGTERM (what `kill`, systemd and Kubernetes send) or Ctrl-C: an orderly shutdown,
        // so the audit log's folded counts and a last checkpoint reach the file.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    admin.shutdown();
    Ok(())
}

/// The demo's audit directory, private to this user: `$XDG_RUNTIME_DIR/prodbg-quickstart`
/// (already private on systemd hosts) or `<tmp>/prodbg-quickstart-<uid>`, created with mode
/// 0700; an existing one must be a real directory of this user that no one else can enter (so
/// nobody can plant a link or a file where the audit log goes in a shared `/tmp`).
fn private_dir() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(run) => std::path::PathBuf::from(run).join("prodbg-quickstart"),
        None => std::env::temp_dir().join(format!("prodbg-quickstart-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display()).into()),
    }
    let m = std::fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a directory of uid {uid} with mode 0700 (it is {}, uid {}, mode {:04o}); remove it or set PRODBG_AUDIT_FILE",
            dir.display(),
            if m.is_dir() { "a directory" } else { "not a directory" },
            m.uid(),
            m.mode() & 0o7777
        )
        .into());
    }
    Ok(dir)
}

/// tokio-console's layer and address, with the `console` feature in a `--cfg tokio_unstable`
/// build (`RUSTFLAGS="--cfg tokio_unstable" cargo run --example quickstart --features heap,console`).
#[cfg(feature = "console")]
fn console<S>() -> (
    Option<impl tracing_subscriber::Layer<S>>,
    Option<std::net::SocketAddr>,
)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match prodbg::console::spawn_console(Default::default()) {
        Ok((layer, addr)) => (Some(layer), Some(addr)),
        Err(e) => {
            eprintln!("tokio-console is off: {e}");
            (None, None)
        }
    }
}

#[cfg(not(feature = "console"))]
fn console() -> (
    Option<tracing_subscriber::layer::Identity>,
    Option<std::net::SocketAddr>,
) {
    (None, None)
}

/// One simulated request: some work, now and then slow or failing.
async fn handle_request(n: u64) {
    let slow = n.is_multiple_of(50);
    tokio::time::sleep(Duration::from_millis(if slow { 1500 } else { 20 })).await;
    if n.is_multiple_of(20) {
        tracing::error!(request_id = n, "upstream refused request {n}");
    }
}

#[inline(never)]
fn crunch(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, x| {
        std::hint::black_box(acc.wrapping_mul(31).wrapping_add(x))
    })
}
