//! console-subscriber's layer plus its gRPC server on its own thread (see the module docs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use console_subscriber::{ConsoleLayer, ServerParts};
use tracing::Subscriber;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where the console server listens unless told otherwise: `127.0.0.1:6669`, tokio-console's
/// default.
pub const DEFAULT_CONSOLE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6669);

/// Settings for [`spawn_console`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleConfig {
    /// Listen address. Default [`DEFAULT_CONSOLE_ADDR`]; port 0 picks a free port (the bound
    /// address is returned by [`spawn_console`]).
    pub addr: SocketAddr,
    /// Allow a non-loopback `addr`. The console protocol has no authentication. Default `false`.
    pub allow_non_loopback: bool,
    /// How often the server sends updates to connected consoles. Default 1 s.
    pub publish_interval: Duration,
    /// How long data about completed tasks is kept for consoles that connect later. Default
    /// 1 h (console-subscriber's default; memory grows with task churn × retention).
    pub retention: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_CONSOLE_ADDR,
            allow_non_loopback: false,
            publish_interval: ConsoleLayer::DEFAULT_PUBLISH_INTERVAL,
            retention: ConsoleLayer::DEFAULT_RETENTION,
        }
    }
}

impl ConsoleConfig {
    /// The default settings with another listen address.
    pub fn with_addr(addr: SocketAddr) -> Self {
        Self {
            addr,
            ..Self::default()
        }
    }
}

/// Whether this build can serve tokio-console: console-subscriber refuses (panics) unless the
/// build has `--cfg tokio_unstable` (or its escape hatch `--cfg console_without_tokio_unstable`),
/// so [`spawn_console`] checks this first and returns [`ConsoleError::NotCompiled`] instead.
pub const CONSOLE_COMPILED: bool = cfg!(any(tokio_unstable, console_without_tokio_unstable));

/// Why the console server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The build lacks `--cfg tokio_unstable`, without which tokio emits no task data and
    /// console-subscriber refuses to start.
    #[error(
        "tokio-console needs the host built with RUSTFLAGS=\"--cfg tokio_unstable\" \
         (tokio emits no task data without it)"
    )]
    NotCompiled,
    /// The address is not loopback and [`ConsoleConfig::allow_non_loopback`] is not set.
    #[error(
        "refusing to serve tokio-console on non-loopback address {0}: the console protocol has \
         no authentication; bind 127.0.0.1 and tunnel, or set allow_non_loopback"
    )]
    NonLoopback(SocketAddr),
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot bind the tokio-console server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be started.
    #[error("cannot start the tokio-console server: {0}")]
    Start(String),
}

/// Starts tokio-console's gRPC server on its own thread and returns the layer that feeds it,
/// plus the address it listens on.
///
/// Add the layer to the host's subscriber exactly once, e.g.
/// `tracing_subscriber::registry().with(console_layer).with(fmt::layer()).init()`. The layer
/// carries its own filter (tokio's `runtime.*`/`tokio` spans and events only), so it neither
/// sees the host's other spans nor changes what the host's other layers log. A *global*
/// filter (an `EnvFilter` added with `.with(filter)` rather than `fmt::layer().with_filter(..)`)
/// at a level above `trace` would hide tokio's spans from it: put filters on the other layers.
///
/// Needs the host built with `RUSTFLAGS="--cfg tokio_unstable"`; without it returns
/// [`ConsoleError::NotCompiled`] (see [`CONSOLE_COMPILED`]). The server thread (`prodbg-console`) runs for the rest of the process.
pub fn spawn_console<S>(
    config: ConsoleConfig,
) -> Result<(impl Layer<S> + Send + Sync + 'static, SocketAddr), ConsoleError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !CONSOLE_COMPILED {
        return Err(ConsoleError::NotCompiled);
    }
    if !config.addr.ip().is_loopback() && !config.allow_non_loopback {
        return Err(ConsoleError::NonLoopback(config.addr));
    }
    let bind_err = |source| ConsoleError::Bind {
        addr: config.addr,
        source,
    };
    let listener = TcpListener::bind(config.addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| ConsoleError::Start(format!("cannot build its runtime: {e}")))?;

    let (layer, server) = ConsoleLayer::builder()
        .server_addr(addr)
        .publish_interval(config.publish_interval)
        .retention(config.retention)
        .build();

    std::thread::Builder::new()
        .name("prodbg-console".into())
        .spawn(move || {
            let served = {
                // Don't record the server's own tokio spans into the console it serves.
                let _quiet =
                    tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let ServerParts {
                        instrument_server,
                        aggregator,
                        ..
                    } = server.into_parts();
                    let aggregate = tokio::spawn(aggregator.run());
                    let served = tonic::transport::Server::builder()
                        .add_service(instrument_server)
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                        .await;
                    aggregate.abort();
                    served.map_err(|e| std::io::Error::other(e.to_string()))
                })
            };
            if let Err(error) = served {
                tracing::error!(target: "prodbg", %error, %addr, "tokio-console server stopped");
            }
        })
        .map_err(|e| ConsoleError::Start(format!("cannot spawn its thread: {e}")))?;

    tracing::info!(target: "prodbg", %addr, "tokio-console server listening");
    let layer = layer.with_filter(FilterFn::new(
        console_filter as fn(&tracing::Metadata<'_>) -> bool,
    ));
    Ok((layer, addr))
}

/// What the console layer sees: tokio's instrumentation, nothing of the host's own. Same rule as
/// console-subscriber's `spawn()`.
fn console_filter(meta: &tracing::Metadata<'_>) -> bool {
    if meta.is_event() {
        return meta.target().starts_with("runtime") || meta.target().starts_with("tokio");
    }
    meta.name().starts_with("runtime.") || meta.target().starts_with("tokio")
}

/// The command an operator runs to attach, e.g. `tokio-console http://127.0.0.1:6669`.
///
/// An unspecified bind address (`0.0.0.0`, `::`) is shown as the loopback address of the same
/// family. `tokio-console` installs with `cargo install --locked tokio-console`.
pub fn console_command(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    format!("tokio-console http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        assert_eq!(
            console_command(DEFAULT_CONSOLE_ADDR),
            "tokio-console http://127.0.0.1:6669"
        );
        assert_eq!(
            console_command("0.0.0.0:7000".parse().unwrap()),
            "tokio-console http://127.0.0.1:7000"
        );
        assert_eq!(
            console_command("[::]:7000".parse().unwrap()),
            "tokio-console http://[::1]:7000"
        );
    }

    #[cfg(any(tokio_unstable, console_without_tokio_unstable))]
    #[test]
    fn refuses_non_loopback() {
        let config = ConsoleConfig::with_addr("0.0.0.0:0".parse().unwrap());
        let err = spawn_console::<tracing_subscriber::Registry>(config)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("non-loopback")),
            "{err:?}"
        );
    }
}
