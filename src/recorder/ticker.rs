//! A named background thread that does one piece of work every period until it is stopped:
//! the flight recorders' slice rotation. Between ticks the thread holds no reference to what
//! it works on (a `Weak`), so dropping the owner stops it at once.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The thread; dropping it stops the thread and joins it (unless the drop runs on the thread
/// itself, which then ends on its own).
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts thread `name` calling `tick(&owner)` every `period` while `owner` lives.
    pub(crate) fn start<T: Send + Sync + 'static>(
        name: &str,
        period: Duration,
        owner: Weak<T>,
        tick: impl Fn(&T) + Send + 'static,
    ) -> std::io::Result<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let (stopped, cv) = &*flag;
                loop {
                    let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    let (guard, _) = cv
                        .wait_timeout(guard, period)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    let Some(owner) = owner.upgrade() else { return };
                    tick(&owner);
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (stopped, cv) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(h) = self.thread.take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ticks_while_the_owner_lives_and_stops_when_dropped() {
        let owner = Arc::new(AtomicU32::new(0));
        let ticker = Ticker::start(
            "test-ticker",
            Duration::from_millis(5),
            Arc::downgrade(&owner),
            |n: &AtomicU32| {
                n.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        while owner.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(ticker); // joins: no tick after this
        let seen = owner.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(owner.load(Ordering::SeqCst), seen);
    }
}
