//! The probes, one folder each: core files that know no HTTP and a `mod.rs` (the probe's
//! face) with its [`ProbeSpec`](crate::seam::ProbeSpec) and [`Probe`](crate::seam::Probe) impl.
//!
//! [`register`] is the one list of probes: adding a probe is one folder and one line there.

#[cfg(feature = "console")]
pub(crate) mod console;
pub(crate) mod cpu;
pub(crate) mod custom;
pub(crate) mod deadlock;
mod errors;
mod fds;
mod health;
pub(crate) mod heap;
mod incidents;
pub(crate) mod log_level;
mod memory;
#[cfg(any(feature = "cpu", feature = "heap"))]
mod one_at_a_time;
mod overrides;
pub(crate) mod pools;
mod process;
mod spans;
pub(crate) mod threads;
pub(crate) mod tokio_rt;
mod wall;

pub(crate) use health::ReadinessCheck;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::seam::{Probe, ProbeContext, Route};

/// What the host configured for the probes (the builder's probe options).
#[derive(Debug, Default)]
pub(crate) struct HostProbes {
    pub(crate) checks: Vec<ReadinessCheck>,
    pub(crate) pools: pools::PoolRegistry,
    pub(crate) runtimes: tokio_rt::RuntimeRegistry,
    pub(crate) console_addr: Option<SocketAddr>,
    pub(crate) log: Option<log_level::LogControl>,
    pub(crate) spans: Option<crate::layer::SpansHandle>,
    pub(crate) deadlock_interval: Option<Duration>,
    pub(crate) flight: cpu::FlightRecorder,
    pub(crate) build_info: BTreeMap<String, String>,
    pub(crate) custom: Vec<Route>,
    pub(crate) incidents: Option<Arc<crate::incidents::Incidents>>,
}

/// A probe compiled in with `$feature`, else its 501 stand-in built from `$spec`.
macro_rules! gated {
    ($feature:literal, $cx:expr, $spec:path, $probe:expr) => {{
        #[cfg(feature = $feature)]
        let probe: Arc<dyn Probe> = Arc::new($probe);
        #[cfg(not(feature = $feature))]
        let probe: Arc<dyn Probe> =
            Arc::new(crate::seam::not_compiled::NotCompiled::new(&$spec, $cx));
        probe
    }};
}

/// Every probe, in index order: one line each.
pub(crate) fn register(
    cx: &ProbeContext,
    host: HostProbes,
) -> Result<Vec<Arc<dyn Probe>>, crate::error::Error> {
    #[cfg(not(feature = "deadlock"))]
    let _ = host.deadlock_interval;
    #[cfg(not(feature = "cpu"))]
    let _ = host.flight;
    Ok(vec![
        Arc::new(health::Health::new(cx, host.checks)),
        gated!("cpu", cx, cpu::SPEC, cpu::Cpu::new(cx, host.flight)),
        gated!("wall", cx, wall::SPEC, wall::Wall::new(cx, host.flight)),
        gated!("heap", cx, heap::SPEC, heap::Heap::new(cx)),
        Arc::new(memory::Memory::new(cx)),
        Arc::new(log_level::LogLevel::new(cx, host.log)),
        Arc::new(spans::SpansProbe::new(cx, host.spans.clone())),
        Arc::new(errors::ErrorsProbe::new(cx, host.spans)),
        Arc::new(overrides::OverridesProbe::new(cx)),
        Arc::new(pools::Pools::new(cx, host.pools)),
        Arc::new(tokio_rt::Tokio::new(cx, host.runtimes, host.console_addr)),
        gated!("threads", cx, threads::SPEC, threads::Threads::new(cx)),
        gated!(
            "deadlock",
            cx,
            deadlock::SPEC,
            deadlock::Deadlocks::new(cx, host.deadlock_interval)?
        ),
        Arc::new(process::Process::new(cx, host.build_info)),
        Arc::new(fds::Fds::new(cx)),
        Arc::new(incidents::IncidentsProbe::new(cx, host.incidents)),
        Arc::new(custom::Custom::new(cx, host.custom)),
    ])
}
