//! Secrets that stay secret, over real HTTP: planted secrets redacted from a child host's
//! `/debug/process` and `/debug/pprof/cmdline`, secret variables gone from its environment and
//! `/proc/<pid>/environ`, secrets read from files, SIGHUP that never kills the host, a lockout
//! that stops checking guesses, weak secrets refused at spawn, a warning for a plaintext
//! non-loopback bind, and secrets in request paths and cut queries kept out of the audit log.
//!
//! The child hosts are this test binary run again (`PRODBG_SECRETS_CHILD` set) with the test's
//! own name as the only filter: the test then plays the host, `Admin::from_env().spawn()`, and
//! serves until its stdin closes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use prodbg::{Admin, Limits, Scope};
use tracing_subscriber::layer::SubscriberExt;

const CHILD: &str = "PRODBG_SECRETS_CHILD";
/// Every planted secret holds this marker: no answer may show it.
const MARK: &str = "Q7xK";
const AUDIT_KEY: &str = "child-audit-key-0123456789abcdef-Zz";

/// A host running in a child process; killed (by its pid) when dropped.
struct ChildHost {
    child: Child,
    addr: SocketAddr,
    _stdin: ChildStdin,
    /// Keeps reading the child's output, so its writes never fail.
    _reader: (
        std::thread::JoinHandle<()>,
        std::sync::mpsc::Receiver<String>,
    ),
    _dir: tempfile::TempDir,
}

impl ChildHost {
    /// Runs test `test` of this binary again as a host with `env` and extra `args` (after
    /// `--`, where libtest takes them as filters that match no test).
    fn start(test: &str, env: &[(&str, String)], args: &[&str]) -> ChildHost {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        cmd.env(CHILD, "1")
            .env("PRODBG_ADDR", "127.0.0.1:0")
            .env("PRODBG_AUDIT_FILE", dir.path().join("audit.jsonl"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        // Lines read on a thread, so a child that never listens fails the test instead of
        // hanging it (a generous bound, not a timing assertion).
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let addr = loop {
            match rx.recv_timeout(std::time::Duration::from_secs(120)) {
                // libtest prints it after `test <name> ... ` on the same line.
                Ok(line) => match line.split_once("LISTENING ") {
                    Some((_, a)) => break a.trim().parse().unwrap(),
                    None => seen.push_str(&(line + "\n")),
                },
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!("the child host never listened ({e}, {status}):\n{seen}");
                }
            }
        };
        ChildHost {
            child,
            addr,
            _stdin: stdin,
            _reader: (reader, rx),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/proc/<pid>/environ`, as any process of the same user reads it.
    fn proc_environ(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/environ", self.pid())).unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    }
}

impl Drop for ChildHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: the host, configured from its environment, serving until stdin closes.
fn child_host() {
    let handle = Admin::from_env()
        .service_name("child-host")
        .spawn()
        .expect("the child host starts");
    println!("LISTENING {}", handle.local_addr());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    handle.shutdown();
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// A child host with secrets planted in JSON-valued variables, a URL whose password holds
/// `/`, `#` and `@`, and mysql/redis arguments: `/debug/process` and `/debug/pprof/cmdline`
/// show none of them, keep the harmless parts readable, and the token list and audit key are
/// gone from the child's environment and its `/proc/<pid>/environ`. SIGHUP (logrotate's
/// `postrotate kill -HUP`) does not kill it.
#[tokio::test]
async fn a_child_host_shows_no_planted_secret_and_survives_sighup() {
    const TEST: &str = "a_child_host_shows_no_planted_secret_and_survives_sighup";
    if is_child() {
        return child_host();
    }
    let env = [
        (
            "PRODBG_TOKENS",
            format!("ops:admin:{ADMIN_SECRET},viewer:read:{READ_SECRET}"),
        ),
        ("PRODBG_AUDIT_KEY", AUDIT_KEY.to_string()),
        (
            "SPRING_APPLICATION_JSON",
            format!(
                r#"{{"spring.datasource.username":"app","spring.datasource.password":"spring pw {MARK}"}}"#
            ),
        ),
        (
            "VCAP_SERVICES",
            format!(
                r#"{{"p-redis":[{{"name":"cache","plan":"small","credentials":{{"password":"vcap-{MARK}"}}}}],"user-provided":[{{"name":"smtp","smtp_password":"smtp-{MARK}"}}]}}"#
            ),
        ),
        (
            "DATABASE_URL",
            format!("postgres://app:url/pw#{MARK}@x@db:5432/app"),
        ),
    ];
    let mysql = format!("-pmysql-{MARK}");
    let redis = format!("redis-{MARK}");
    let cli = format!("cli-{MARK}");
    let host = ChildHost::start(TEST, &env, &[&mysql, "--requirepass", &redis, "-a", &cli]);

    let (s, process) = get(&host.url("/debug/process"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{process}");
    assert!(!process.contains(MARK), "{process}");
    for readable in [
        "spring.datasource.username",
        "p-redis",
        "smtp",
        "postgres://app:[redacted]@db:5432/app",
        "--requirepass",
        "PRODBG_AUDIT_FILE",
    ] {
        assert!(process.contains(readable), "{readable} missing: {process}");
    }
    assert!(
        !process.contains("PRODBG_TOKENS") && !process.contains("PRODBG_AUDIT_KEY"),
        "the secret variables are still in the environment: {process}"
    );

    let (s, cmdline) = get(&host.url("/debug/pprof/cmdline"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{cmdline}");
    assert!(!cmdline.contains(MARK), "{cmdline:?}");
    let args: Vec<&str> = cmdline.split('\0').collect();
    let tail = &args[args.len() - 5..];
    assert_eq!(
        tail,
        [
            "-p[redacted]",
            "--requirepass",
            "[redacted]",
            "-a",
            "[redacted]"
        ]
    );

    // What another process of the same user reads.
    let environ = host.proc_environ();
    assert!(environ.contains("SPRING_APPLICATION_JSON="), "{environ}");
    for gone in [
        ADMIN_SECRET,
        READ_SECRET,
        AUDIT_KEY,
        "PRODBG_TOKENS=",
        "PRODBG_AUDIT_KEY=",
    ] {
        assert!(!environ.contains(gone), "/proc/<pid>/environ holds {gone}");
    }

    // The audit chain is keyed with the key read (and removed) from the environment.
    let (s, audit) = get(&host.url("/debug/audit"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{audit}");
    assert!(audit.contains("\"keyed\":true"), "{audit}");

    // SIGHUP at its default action would terminate the host: prodbg's reopen hook takes it.
    assert_eq!(
        unsafe { libc::kill(host.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    for _ in 0..3 {
        assert_eq!(get(&host.url("/health/live"), None).await.0, 200);
        assert_eq!(get(&host.url("/debug/"), Some(ADMIN_SECRET)).await.0, 200);
    }
    let mut host = host;
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host died of SIGHUP"
    );
}

/// Tokens and the audit key from files (a Kubernetes secret mount, a systemd credential):
/// one entry per line, trailing newline trimmed.
#[tokio::test]
async fn a_child_host_reads_its_secrets_from_files() {
    const TEST: &str = "a_child_host_reads_its_secrets_from_files";
    if is_child() {
        return child_host();
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("ops:admin:{ADMIN_SECRET}\nviewer:read:{READ_SECRET}\n"),
    )
    .unwrap();
    let key = dir.path().join("audit-key");
    std::fs::write(&key, format!("{AUDIT_KEY}\n")).unwrap();
    let env = [
        ("PRODBG_TOKENS_FILE", tokens.display().to_string()),
        ("PRODBG_AUDIT_KEY_FILE", key.display().to_string()),
    ];
    let host = ChildHost::start(TEST, &env, &[]);
    assert_eq!(get(&host.url("/debug/"), Some(READ_SECRET)).await.0, 200);
    assert_eq!(
        get(&host.url("/debug/overrides"), Some(ADMIN_SECRET))
            .await
            .0,
        200
    );
    let (s, audit) = get(&host.url("/debug/audit"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{audit}");
    assert!(audit.contains("\"keyed\":true"), "{audit}");
}

/// A variable and its file both set, a missing file, a weak secret in a file: clear errors
/// naming the variable, never the secret.
#[test]
fn secret_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("ops:admin:{ADMIN_SECRET}\n")).unwrap();
    // Variables only this test uses.
    let (var, file_var) = ("HOSTILE_SECRETS_TOKENS", "HOSTILE_SECRETS_TOKENS_FILE");
    std::env::set_var(var, format!("ops:admin:{ADMIN_SECRET}"));
    std::env::set_var(file_var, &file);
    let err = Admin::builder()
        .tokens_from_env(var)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains(var) && err.contains(file_var), "{err}");
    assert!(!err.contains(ADMIN_SECRET), "{err}");
    assert!(std::env::var_os(var).is_none(), "read, so removed");

    std::env::set_var(file_var, dir.path().join("missing"));
    let err = Admin::builder()
        .tokens_from_env(var)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains(file_var) && err.contains("missing"), "{err}");

    std::fs::write(&file, "ops:admin:0123456789abcdef0123456789abcde\n").unwrap();
    std::env::set_var(file_var, &file);
    let err = Admin::builder()
        .tokens_from_env(var)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("128 bits"), "{err}");
    assert!(!err.contains("0123456789abcdef0123456789abcde"), "{err}");
    std::env::remove_var(file_var);
}

/// A reqwest client whose connections come from `ip`.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str, secret: &str) -> (u16, String) {
    let r = client.get(url).bearer_auth(secret).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Past the limit a client's guesses are no longer checked: a correct guess of a token never
/// used from that address gets 429 like a wrong one, Bearer or Basic; the token already used
/// from there still gets in, and another address is not affected.
#[tokio::test]
async fn a_locked_client_gets_no_200_for_a_correct_guess_but_keeps_its_own_token() {
    let server = spawn_with(|b| {
        b.limits({
            let mut l = Limits::default();
            l.auth_failures_per_minute = 5;
            l
        })
    });
    let url = server.url("/debug/overrides");
    let attacker = client_from(Ipv4Addr::LOCALHOST);
    assert_eq!(status(&attacker, &url, READ_SECRET).await.0, 200);
    let mut statuses = Vec::new();
    for _ in 0..200 {
        statuses.push(
            status(&attacker, &url, "wrong-guess-0123456789abcdef")
                .await
                .0,
        );
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");

    let (s, body) = status(&attacker, &url, ADMIN_SECRET).await;
    assert_eq!(s, 429, "a correct guess while locked: {body}");
    assert!(
        error_message(&body, "too_many_requests").contains("already used from this address"),
        "{body}"
    );
    let r = attacker
        .get(&url)
        .header("authorization", basic("ops", ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        429,
        "a correct Basic guess while locked"
    );
    assert_eq!(status(&attacker, &url, READ_SECRET).await.0, 200);
    let elsewhere = client_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(status(&elsewhere, &url, ADMIN_SECRET).await.0, 200);
}

/// Secrets with less than 128 estimated bits are refused at spawn, naming the token, never
/// the secret: 31 hex digits, 16 printable characters, a repeated pattern, a short audit key.
/// 32 hex digits are enough.
#[tokio::test]
async fn weak_secrets_are_refused_at_spawn() {
    for weak in [
        "0123456789abcdef0123456789abcde",
        "Kx8!mQ2#vL9@pR4$",
        "abababababababababababababababab",
    ] {
        let err = Admin::builder()
            .bind("127.0.0.1:0")
            .token("ops", Scope::Admin, weak)
            .spawn()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"ops\"") && err.contains("too easy to guess"),
            "{err}"
        );
        assert!(!err.contains(weak), "{err}");
    }
    let err = builder()
        .audit_key("short-key-012345")
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit key") && err.contains("128 bits"),
        "{err}"
    );
    assert!(!err.contains("short-key-012345"), "{err}");

    let hex32 = "0123456789abcdef0123456789abcdef";
    let handle = Admin::builder()
        .bind("127.0.0.1:0")
        .token("ops", Scope::Admin, hex32)
        .spawn()
        .unwrap();
    let (s, _) = get(&format!("{}/debug/", handle.url()), Some(hex32)).await;
    assert_eq!(s, 200);
}

/// Collects every event's level and message.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.0));
    }
}

/// Binding off loopback over plain HTTP (allowed by `allow_plaintext`) warns that the tokens
/// travel in cleartext; a loopback bind does not.
#[tokio::test]
async fn a_plaintext_non_loopback_bind_warns_at_spawn() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let handle = tracing::subscriber::with_default(subscriber, || {
        builder()
            .bind("0.0.0.0:0")
            .allow_plaintext()
            .spawn()
            .unwrap()
    });
    let warned: Vec<String> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, m)| *level == tracing::Level::WARN && m.contains("cleartext"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", capture.0.lock().unwrap());
    assert!(warned[0].contains("non-loopback"), "{}", warned[0]);
    let port = handle.local_addr().port();
    let (s, _) = get(&format!("http://127.0.0.1:{port}/health/live"), None).await;
    assert_eq!(s, 200);
    handle.shutdown();

    let quiet = Capture::default();
    let subscriber = tracing_subscriber::registry().with(quiet.clone());
    let handle = tracing::subscriber::with_default(subscriber, || builder().spawn().unwrap());
    assert!(
        !quiet
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("cleartext")),
        "a loopback bind warned"
    );
    handle.shutdown();
}

/// Secrets in the path (a hex reset token, `/token/<x>`) and a URL in the query whose password
/// runs past the audit log's 512-byte clip never reach the audit file; the records are there,
/// redacted.
#[tokio::test]
async fn secrets_in_paths_and_cut_queries_stay_out_of_the_audit_log() {
    let server = spawn();
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let reset = server.url(&format!("/reset/{hex}"));
    assert_eq!(get(&reset, Some(READ_SECRET)).await.0, 404);
    assert_eq!(get(&reset, None).await.0, 401);
    let token_path = server.url(&format!("/token/abc-{MARK}-123"));
    assert_eq!(get(&token_path, Some(READ_SECRET)).await.0, 404);
    let long = format!(
        "next=postgres://app:{}@db/app",
        format!("pw-{MARK}-").repeat(80)
    );
    let (s, _) = get(
        &server.url(&format!("/debug/overrides?{long}")),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(s, 400);
    let Server { handle, audit, .. } = server;
    handle.shutdown();
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(hex), "{text}");
    assert!(!text.contains(MARK), "{text}");
    assert!(text.contains("/reset/[redacted]"), "{text}");
    assert!(text.contains("/token/[redacted]"), "{text}");
    assert!(
        text.contains("next=postgres://app:[redacted]@db/app"),
        "{text}"
    );
}
