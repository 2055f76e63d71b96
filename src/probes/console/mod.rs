//! tokio-console support: console-subscriber's layer plus its gRPC server on its own thread.
//!
//! [`spawn_console`] binds the address (loopback `127.0.0.1:6669` by default), starts
//! console-subscriber's gRPC server and event aggregator on a dedicated OS thread
//! (`prodbg-console`) with its own small current-thread Tokio runtime, and returns the
//! [`tracing_subscriber::Layer`] that feeds it. The host adds that layer to the subscriber it
//! already builds, *before* any other layer that filters globally:
//!
//! ```no_run
//! use tracing_subscriber::{fmt, prelude::*};
//! use prodbg::console::{console_command, spawn_console, ConsoleConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (console_layer, addr) = spawn_console(ConsoleConfig::default())?;
//! tracing_subscriber::registry().with(console_layer).with(fmt::layer()).init();
//! eprintln!("attach with: {}", console_command(addr)); // tokio-console http://127.0.0.1:6669
//! # Ok(()) }
//! ```
//!
//! # The host must be built with `--cfg tokio_unstable`
//!
//! Tokio emits the task spans tokio-console shows only when the host is compiled with
//! `RUSTFLAGS="--cfg tokio_unstable"` (console-subscriber turns on tokio's `tracing` feature).
//! console-subscriber panics when built without it; [`spawn_console`] returns
//! [`ConsoleError::NotCompiled`] instead, so a host can log that and carry on.
//!
//! # Why a dedicated thread
//!
//! The layer must be installed when the host starts its subscriber, which is usually before the
//! admin server exists, and the gRPC server must keep answering when the host's runtime is
//! wedged. So it gets its own thread and runtime, like the admin server, and never touches the
//! host's runtime. On that thread the server's own spans are not recorded (it runs under a
//! no-op subscriber), so the console does not watch itself.
//!
//! # Security
//!
//! The console protocol has no authentication: anyone who can connect sees every task's name,
//! fields and source location. [`spawn_console`] therefore refuses a non-loopback address unless
//! [`ConsoleConfig::allow_non_loopback`] is set; reach it through an SSH tunnel or
//! `kubectl port-forward` instead.

mod spawn;

pub use spawn::{
    console_command, spawn_console, ConsoleConfig, ConsoleError, CONSOLE_COMPILED,
    DEFAULT_CONSOLE_ADDR,
};
