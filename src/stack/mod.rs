//! What the stack-taking probes share: the one [`Frame`] type, the symbolizer and what a
//! signal handler can read of the code it interrupted.

pub(crate) mod frame;
#[cfg(any(feature = "cpu", feature = "threads"))]
pub(crate) mod signal_context;
#[cfg(any(
    feature = "cpu",
    feature = "heap",
    feature = "threads",
    feature = "deadlock"
))]
pub(crate) mod symbolize;

pub(crate) use frame::Frame;
