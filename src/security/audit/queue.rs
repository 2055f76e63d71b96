//! The bounded queue between the request path and the audit thread, and the thread itself.
//!
//! A request never writes the file: it queues its record (at most [`MAX_QUEUED_RECORDS`]
//! records and [`MAX_QUEUED_BYTES`] bytes) and may wait, asynchronously and at most
//! [`RECORD_WAIT`], for the thread to have written it. When the queue is full (the disk is slow
//! or hung) the record is dropped and counted, and the thread writes one `gap` record for the
//! dropped ones when it catches up. Folded requests never touch the queue, so a hung disk never
//! holds back `/health/live`.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::options::AuditError;
use super::writer::Inner;

/// Records waiting for the audit thread, at most.
pub(crate) const MAX_QUEUED_RECORDS: usize = 4096;
/// Bytes of records waiting for the audit thread, at most.
pub(crate) const MAX_QUEUED_BYTES: usize = 4 << 20;
/// How long a request that needs a record waits for it to be written before it is answered
/// anyway (the record stays queued).
pub(crate) const RECORD_WAIT: Duration = Duration::from_secs(2);
/// How long a flush (the server's shutdown) and the last handle's drop wait for the thread.
pub(crate) const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Work for the audit thread.
pub(super) enum Job {
    /// One serialized entry; `ack` is told once it was written (or lost).
    Entry {
        json: Vec<u8>,
        kind: &'static str,
        ts: String,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Write every folded count now; tell `done`.
    Flush { done: mpsc::Sender<()> },
}

/// Records dropped because the queue was full, not yet turned into a `gap` record.
#[derive(Debug)]
pub(super) struct Dropped {
    pub(super) count: u64,
    pub(super) first_ts: String,
    pub(super) last_ts: String,
}

#[derive(Default)]
struct Q {
    jobs: VecDeque<Job>,
    bytes: usize,
    dropped: Option<Dropped>,
    stop: bool,
}

/// The queue: a mutex held only to push or pop, and a condition variable.
#[derive(Default)]
pub(super) struct Queue {
    q: Mutex<Q>,
    cv: Condvar,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Q> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an entry; `false` when the queue is full (the entry is dropped and counted).
    pub(super) fn push_entry(&self, job: Job) -> bool {
        let Job::Entry { json, ts, .. } = &job else {
            return self.push(job);
        };
        let mut q = self.lock();
        if q.jobs.len() >= MAX_QUEUED_RECORDS || q.bytes + json.len() > MAX_QUEUED_BYTES {
            match q.dropped.as_mut() {
                Some(d) => {
                    d.count += 1;
                    if *ts < d.first_ts {
                        d.first_ts = ts.clone();
                    }
                    if *ts > d.last_ts {
                        d.last_ts = ts.clone();
                    }
                }
                None => {
                    q.dropped = Some(Dropped {
                        count: 1,
                        first_ts: ts.clone(),
                        last_ts: ts.clone(),
                    })
                }
            }
            return false;
        }
        q.bytes += json.len();
        q.jobs.push_back(job);
        drop(q);
        self.cv.notify_one();
        true
    }

    fn push(&self, job: Job) -> bool {
        self.lock().jobs.push_back(job);
        self.cv.notify_one();
        true
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_one();
    }

    /// Waits up to `timeout` for work; returns the jobs, the dropped count, and whether to stop.
    fn wait(&self, timeout: Duration) -> (Vec<Job>, Option<Dropped>, bool) {
        let mut q = self.lock();
        if q.jobs.is_empty() && q.dropped.is_none() && !q.stop {
            q = self
                .cv
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.bytes = 0;
        let jobs = std::mem::take(&mut q.jobs).into();
        (jobs, q.dropped.take(), q.stop)
    }
}

/// Owns the audit thread: the last [`AuditLog`](super::AuditLog) handle dropped stops it after
/// it wrote every queued record, the folded counts and a final checkpoint, waiting at most
/// [`FLUSH_WAIT`] (a hung disk must not hang the host's shutdown). Without a thread it does
/// that final flush itself.
pub(super) struct Owner {
    pub(super) inner: Arc<Inner>,
    /// The thread and the channel it says it exited on (`Mutex`: the receiver is not `Sync`).
    thread: Option<Mutex<(JoinHandle<()>, mpsc::Receiver<()>)>>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("threaded", &self.threaded())
            .finish_non_exhaustive()
    }
}

impl Owner {
    /// Starts the thread when the log has a background thread.
    pub(super) fn start(inner: Arc<Inner>) -> Result<Owner, AuditError> {
        if !inner.cfg.background {
            return Ok(Owner {
                inner,
                thread: None,
            });
        }
        let (exited_tx, exited_rx) = mpsc::channel::<()>();
        let me = inner.clone();
        let period = inner.cfg.tick_period();
        let handle = std::thread::Builder::new()
            .name("prodbg-audit".into())
            .spawn(move || {
                run(&me, period);
                let _ = exited_tx.send(());
            })
            .map_err(AuditError::Thread)?;
        Ok(Owner {
            inner,
            thread: Some(Mutex::new((handle, exited_rx))),
        })
    }

    /// Whether records go through the thread.
    pub(super) fn threaded(&self) -> bool {
        self.thread.is_some()
    }

    /// Writes the folded counts now and syncs: through the thread (waiting at most
    /// [`FLUSH_WAIT`]) or inline.
    pub(super) fn flush(&self) {
        if self.thread.is_none() {
            self.inner.flush(false);
            return;
        }
        let (tx, rx) = mpsc::channel();
        self.inner.queue.push(Job::Flush { done: tx });
        let _ = rx.recv_timeout(FLUSH_WAIT);
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        match self.thread.take() {
            None => self.inner.flush(true),
            Some(t) => {
                let (handle, exited) = t.into_inner().unwrap_or_else(|p| p.into_inner());
                self.inner.queue.stop();
                if exited.recv_timeout(FLUSH_WAIT).is_ok() {
                    let _ = handle.join();
                } else {
                    tracing::error!(target: "prodbg",
                        "the audit thread did not finish writing within 5 s (a hung audit disk?); leaving it behind");
                }
            }
        }
    }
}

fn run(inner: &Inner, period: Duration) {
    let mut last_tick = Instant::now();
    loop {
        let (jobs, dropped, stop) = inner.queue.wait(period);
        if let Some(d) = dropped {
            inner.note_dropped(d);
        }
        // A batch: every entry written, one sync (under `FsyncPolicy::Always`), then the
        // waiting requests told.
        let mut acks = Vec::new();
        for job in jobs {
            match job {
                Job::Entry {
                    json,
                    kind,
                    ts,
                    ack,
                } => {
                    inner.append_batched(json, kind, &ts);
                    acks.extend(ack);
                }
                Job::Flush { done } => {
                    acknowledge(inner, &mut acks);
                    inner.flush(false);
                    let _ = done.send(());
                }
            }
        }
        acknowledge(inner, &mut acks);
        if stop {
            inner.flush(true);
            return;
        }
        if last_tick.elapsed() >= period {
            last_tick = Instant::now();
            inner.tick();
        }
    }
}

fn acknowledge(inner: &Inner, acks: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
    if acks.is_empty() {
        return;
    }
    inner.sync_batch();
    for ack in acks.drain(..) {
        let _ = ack.send(());
    }
}
