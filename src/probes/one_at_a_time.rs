//! A process-wide "one at a time" flag that knows when the run holding it ends: the CPU and
//! wall-clock profilers and heap growth profiles each own one, so a second request gets
//! "busy, N s left" instead of a second set of timers (or two more heap dumps in memory).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Free, or held until a deadline.
#[derive(Debug)]
pub(crate) struct OneAtATime(Mutex<Option<Instant>>);

impl OneAtATime {
    pub(crate) const fn new() -> OneAtATime {
        OneAtATime(Mutex::new(None))
    }

    /// Whether a run holds the flag now.
    pub(crate) fn running(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Takes the flag for a run of `duration`; `Err(time left)` while another run holds it.
    pub(crate) fn acquire(&'static self, duration: Duration) -> Result<Held, Duration> {
        let mut active = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(deadline) = *active {
            return Err(deadline.saturating_duration_since(Instant::now()));
        }
        *active = Some(Instant::now() + duration);
        Ok(Held(self))
    }
}

/// The flag, held; frees it on drop.
#[derive(Debug)]
pub(crate) struct Held(&'static OneAtATime);

impl Drop for Held {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
