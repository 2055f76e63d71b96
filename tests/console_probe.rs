//! tokio-console support end to end: the console layer is this test binary's global subscriber,
//! and a real console client (console-api's generated gRPC client) watches the updates.
//! console-subscriber refuses to run without `--cfg tokio_unstable` (tokio emits no task data
//! then), so in that build the test checks that `spawn_console` says so instead of panicking.
#![cfg(feature = "console")]

#[cfg(not(tokio_unstable))]
#[test]
fn without_tokio_unstable_spawn_console_says_what_to_turn_on() {
    use prodbg::console::{console_command, spawn_console, ConsoleConfig};

    let err = spawn_console::<tracing_subscriber::Registry>(ConsoleConfig::default())
        .err()
        .expect("console needs tokio_unstable");
    assert!(
        matches!(err, prodbg::console::ConsoleError::NotCompiled),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("RUSTFLAGS=\"--cfg tokio_unstable\""),
        "{err}"
    );
    const { assert!(!prodbg::console::CONSOLE_COMPILED) };
    assert_eq!(
        console_command("127.0.0.1:6669".parse().expect("addr")),
        "tokio-console http://127.0.0.1:6669"
    );
}

#[cfg(tokio_unstable)]
mod live {
    use std::time::{Duration, Instant};

    use console_api::instrument::instrument_client::InstrumentClient;
    use console_api::instrument::InstrumentRequest;
    use prodbg::console::{console_command, spawn_console, ConsoleConfig};
    use tracing_subscriber::prelude::*;

    const PATIENCE: Duration = Duration::from_secs(20);

    #[test]
    fn a_console_client_receives_updates() {
        let mut config = ConsoleConfig::with_addr("127.0.0.1:0".parse().expect("addr"));
        config.publish_interval = Duration::from_millis(100);
        let (console_layer, addr) = spawn_console(config).expect("console server starts");
        tracing_subscriber::registry()
            .with(console_layer)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .init();
        assert_ne!(addr.port(), 0);
        assert_eq!(
            console_command(addr),
            format!("tokio-console http://{addr}")
        );

        // The host: a few tasks that stay alive, spawned after the layer is installed.
        let host = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("host runtime");
        for _ in 0..3 {
            host.spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }

        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let (updates, new_tasks) = client_rt.block_on(async {
            let deadline = Instant::now() + PATIENCE;
            let mut client = loop {
                match InstrumentClient::connect(format!("http://{addr}")).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("connect: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("cannot connect to the console server at {addr}: {e}"),
                }
            };
            let mut stream = client
                .watch_updates(InstrumentRequest {})
                .await
                .expect("watch_updates")
                .into_inner();
            let (mut updates, mut new_tasks) = (0usize, 0usize);
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.message()).await {
                    Ok(Ok(Some(update))) => {
                        updates += 1;
                        new_tasks += update.task_update.map_or(0, |t| t.new_tasks.len());
                        if new_tasks > 0 {
                            break;
                        }
                    }
                    Ok(Ok(None)) => panic!("the console server closed the stream"),
                    Ok(Err(status)) => panic!("the console stream failed: {status}"),
                    Err(_) => break,
                }
            }
            (updates, new_tasks)
        });
        assert!(
            updates > 0,
            "no update from the console server within {PATIENCE:?}"
        );
        assert!(
            new_tasks > 0,
            "{updates} updates, none with tasks: are tokio's tracing spans reaching the layer?"
        );
    }
}
