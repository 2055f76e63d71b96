//! The writer: one `write_all` per line to an `O_APPEND` file, the chain head advanced only
//! after it succeeded; gaps, torn tails, rotation, reopening, checkpoints and folded counts.
//! With a background thread only that thread (`queue.rs`) writes; what requests read (the head,
//! the counters) is published apart from the writer's state, so a hung write never blocks them.

#[cfg(test)]
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::chain::{Chainer, GENESIS_HASH};
use super::file::{last_record_of, open_file, rotated_path, scan_tail, OpenFile, Tail};
use super::fold::{FoldTable, Folding, Verdict};
use super::options::{AuditError, AuditStats, FsyncPolicy, Rotation, AUDIT_TARGET};
use super::queue::{Dropped, Queue};
use super::record::{
    now_ts, AuditEntry, AuditRecord, Checkpoint, CheckpointRecord, Gap, ResumeReason, Resumed,
    Summary,
};
use super::sighup::HUP_GEN;

/// Options, as the builder set them.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) path: Option<PathBuf>,
    pub(super) fsync: FsyncPolicy,
    pub(super) rotation: Rotation,
    pub(super) checkpoint_records: u64,
    pub(super) checkpoint_interval: Duration,
    pub(super) fold_interval: Duration,
    pub(super) reopen_check: Duration,
    pub(super) background: bool,
    pub(super) events: bool,
}

impl Config {
    pub(super) fn tick_period(&self) -> Duration {
        let mut p = Duration::from_millis(250)
            .min(self.checkpoint_interval)
            .min(self.fold_interval)
            .min(self.reopen_check);
        if let FsyncPolicy::Every(d) = self.fsync {
            p = p.min(d);
        }
        p.max(Duration::from_millis(5))
    }
}

/// A fault the tests make the next write suffer.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Nothing written, ENOSPC.
    Fail,
    /// This many bytes written, then ENOSPC; the log truncates them away.
    Partial(usize),
    /// As `Partial`, and the truncation fails too: the fragment stays in the file.
    PartialNoRepair(usize),
}

/// Shared by every handle and the background thread.
pub(super) struct Inner {
    pub(super) cfg: Config,
    pub(super) chainer: Chainer,
    /// The writer's state: locked by the writing thread (the audit thread, or the caller
    /// without one) and by nothing a request waits on.
    state: Mutex<State>,
    folds: Mutex<(FoldTable, Instant)>,
    /// What readers see: updated by the writer after each change, never held during I/O.
    published: Mutex<Published>,
    pub(super) queue: Queue,
    write_errors: AtomicU64,
    queue_dropped: AtomicU64,
    #[cfg(test)]
    faults: Mutex<VecDeque<Fault>>,
}

/// The head and counters as of the last write, for readers.
#[derive(Debug, Clone)]
struct Published {
    head_seq: u64,
    head_hash: String,
    written: u64,
    pending_lost: u64,
    latest: Option<Checkpoint>,
}

#[derive(Debug)]
pub(super) struct GapAcc {
    count: u64,
    first_ts: String,
    last_ts: String,
    error: String,
}

#[derive(Debug)]
pub(super) struct State {
    /// `None` with a path: lost (renamed away and the reopen failed, …); retried on each write.
    pub(super) file: Option<OpenFile>,
    pub(super) head_seq: u64,
    pub(super) head_hash: String,
    /// Size of the file as last seen, and the end of its last good line: bytes between them
    /// are a fragment that the next record must account for (`cut_bytes`).
    pub(super) len: u64,
    pub(super) good_end: u64,
    /// The last good line has no `\n` yet (a crash right before it).
    pub(super) needs_newline: bool,
    pub(super) pending_resume: Option<Resumed>,
    pub(super) gap: Option<GapAcc>,
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: Instant,
    pub(super) latest: Option<Checkpoint>,
    pub(super) last_identity_check: Instant,
    pub(super) last_rotate_failure: Option<Instant>,
    pub(super) dirty: bool,
    pub(super) last_sync: Instant,
    pub(super) hup_seen: u64,
    pub(super) written: u64,
}

impl State {
    fn new() -> State {
        let now = Instant::now();
        State {
            file: None,
            head_seq: 0,
            head_hash: GENESIS_HASH.to_string(),
            len: 0,
            good_end: 0,
            needs_newline: false,
            pending_resume: None,
            gap: None,
            since_checkpoint: 0,
            last_checkpoint: now,
            latest: None,
            last_identity_check: now,
            last_rotate_failure: None,
            dirty: false,
            last_sync: now,
            hup_seen: HUP_GEN.load(Ordering::Relaxed),
            written: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncPoint {
    Append,
    /// An append of a batch the audit thread syncs once at its end ([`Inner::sync_batch`]).
    Batched,
    Tick,
    Flush,
}

enum Emit {
    Record {
        kind: &'static str,
        seq: u64,
        hash: String,
        line: Vec<u8>,
    },
    Checkpoint(Checkpoint),
}

pub(super) fn resumed(reason: ResumeReason, keyed: bool) -> Resumed {
    Resumed {
        ts: now_ts(),
        reason,
        message: match reason {
            ResumeReason::TornTail => "chain resumed after torn tail".into(),
            ResumeReason::Truncated => "chain resumed after the file shrank".into(),
        },
        cut_bytes: 0,
        previous_bytes: None,
        found_bytes: None,
        keyed,
    }
}

impl Inner {
    /// Opens the file (continuing the chain from its last good record, or from `<file>.1`'s
    /// when the file is new or holds no good record), queues a `resumed` record for a torn
    /// tail and writes it.
    pub(super) fn open(cfg: Config, chainer: Chainer) -> Result<Arc<Inner>, AuditError> {
        let mut state = State::new();
        if let Some(path) = &cfg.path {
            let open_err = |source| AuditError::Open {
                path: path.clone(),
                source,
            };
            let file = open_file(path).map_err(open_err)?;
            let tail = if file.regular {
                scan_tail(&file.file, file.len).map_err(open_err)?
            } else {
                Tail::default()
            };
            let last = match tail.last {
                Some(l) => Some(l),
                None => last_record_of(&rotated_path(path, 1)),
            };
            if let Some(l) = &last {
                if !l.hash_ok(&chainer) {
                    tracing::warn!(target: "prodbg", file = %path.display(),
                        "the last audit record does not verify under the configured key (key changed, or keyed/unkeyed switched?); the chain continues from it");
                }
                state.head_seq = l.seq;
                state.head_hash = l.hash.clone();
            }
            state.len = file.len;
            state.good_end = tail.good_end;
            state.needs_newline = tail.needs_newline;
            if state.len > state.good_end && file.regular {
                state.pending_resume = Some(resumed(ResumeReason::TornTail, chainer.keyed()));
            }
            state.file = Some(file);
        }
        let inner = Inner::assemble(cfg, chainer, state);
        // Write the `resumed` record now, so a torn tail is accounted for even if nothing follows.
        inner.tick();
        Ok(inner)
    }

    /// A log without a file (`cfg.path` is `None`): nothing can fail.
    pub(super) fn in_memory(cfg: Config, chainer: Chainer) -> Arc<Inner> {
        Inner::assemble(cfg, chainer, State::new())
    }

    fn assemble(cfg: Config, chainer: Chainer, state: State) -> Arc<Inner> {
        let published = Published {
            head_seq: state.head_seq,
            head_hash: state.head_hash.clone(),
            written: 0,
            pending_lost: 0,
            latest: None,
        };
        Arc::new(Inner {
            cfg,
            chainer,
            state: Mutex::new(state),
            folds: Mutex::new((FoldTable::default(), Instant::now())),
            published: Mutex::new(published),
            queue: Queue::default(),
            write_errors: AtomicU64::new(0),
            queue_dropped: AtomicU64::new(0),
            #[cfg(test)]
            faults: Mutex::new(VecDeque::new()),
        })
    }

    fn lock_published(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies what readers see from the writer's state (called with the state locked).
    fn publish(&self, st: &State) {
        let mut p = self.lock_published();
        p.head_seq = st.head_seq;
        if p.head_hash != st.head_hash {
            p.head_hash.clone_from(&st.head_hash);
        }
        p.written = st.written;
        p.pending_lost = st.gap.as_ref().map_or(0, |g| g.count);
        if p.latest != st.latest {
            p.latest.clone_from(&st.latest);
        }
    }

    pub(super) fn head(&self) -> Checkpoint {
        let p = self.lock_published();
        Checkpoint {
            ts: now_ts(),
            records: p.head_seq,
            head_hash: p.head_hash.clone(),
            file: self.cfg.path.as_ref().map(|p| p.display().to_string()),
            keyed: self.chainer.keyed(),
        }
    }

    pub(super) fn latest(&self) -> Option<Checkpoint> {
        self.lock_published().latest.clone()
    }

    pub(super) fn stats(&self) -> AuditStats {
        let (folded, over_budget) = {
            let f = self.lock_folds();
            (f.0.folded(), f.0.over_budget())
        };
        let p = self.lock_published().clone();
        AuditStats {
            records: p.head_seq,
            written: p.written,
            write_errors: self.write_errors.load(Ordering::Relaxed),
            pending_lost: p.pending_lost,
            queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
            folded,
            over_budget,
            keyed: self.chainer.keyed(),
        }
    }

    #[cfg(test)]
    pub(super) fn checkpoint_now(&self) -> Checkpoint {
        let mut out = Vec::new();
        let cp = {
            let mut st = self.lock_state();
            self.prepare(&mut st, Instant::now());
            let _ = self.flush_pending(&mut st, &mut out);
            let cp = self.checkpoint_locked(&mut st, &mut out);
            self.publish(&st);
            cp
        };
        self.emit(out);
        cp
    }

    #[cfg(test)]
    pub(super) fn reopen_now(&self) -> io::Result<()> {
        let mut out = Vec::new();
        let res = {
            let mut st = self.lock_state();
            let res = self.reopen_locked(&mut st);
            if res.is_ok() {
                let _ = self.flush_pending(&mut st, &mut out);
            }
            self.publish(&st);
            res
        };
        self.emit(out);
        res
    }

    /// Whether `rec` is written in full (`Some(json)`, its size charged to its client when it
    /// is of a folding kind) or was folded (`None`, with the summaries an early flush of a full
    /// table produced).
    pub(super) fn fold(
        &self,
        rec: AuditRecord,
        folding: Folding,
    ) -> Result<(String, Vec<u8>), Vec<Summary>> {
        let now = Instant::now();
        let mut folds = self.lock_folds();
        match folds.0.decide(&rec, folding, now) {
            Verdict::Fold => Err(folds.0.add(&rec, now)),
            Verdict::Record => {
                let ts = rec.ts.clone();
                let entry = AuditEntry::Request(rec);
                let json = match serde_json::to_vec(&entry) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!(target: "prodbg", error = %e, "cannot serialize an audit record");
                        return Err(Vec::new());
                    }
                };
                if folding != Folding::Never {
                    if let AuditEntry::Request(rec) = &entry {
                        folds.0.charge(rec, json.len() as u64, now);
                    }
                }
                Ok((ts, json))
            }
        }
    }

    #[cfg(test)]
    pub(super) fn inject_fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(fault);
    }
    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_folds(&self) -> MutexGuard<'_, (FoldTable, Instant)> {
        self.folds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkpoint_of(&self, st: &State, ts: String) -> Checkpoint {
        Checkpoint {
            ts,
            records: st.head_seq,
            head_hash: st.head_hash.clone(),
            file: self.cfg.path.as_ref().map(|p| p.display().to_string()),
            keyed: self.chainer.keyed(),
        }
    }

    /// Appends one entry (request or summary); on failure it joins the pending gap.
    pub(super) fn append_entry(&self, entry: &AuditEntry, ts: &str) {
        match serde_json::to_vec(entry) {
            Ok(json) => self.append_json(json, entry.kind(), ts),
            Err(e) => {
                tracing::error!(target: "prodbg", error = %e, "cannot serialize an audit record");
            }
        }
    }

    /// Appends one serialized entry; on failure it joins the pending gap (counted, never
    /// emitted: a lost record's fields must not reach the host's logs or `/debug/errors`).
    pub(super) fn append_json(&self, json: Vec<u8>, kind: &'static str, ts: &str) {
        self.append_at(json, kind, ts, SyncPoint::Append);
    }

    /// As [`Inner::append_json`], leaving the sync to [`Inner::sync_batch`] (the audit thread
    /// writes a batch, syncs once, then tells the waiting requests: a group commit).
    pub(super) fn append_batched(&self, json: Vec<u8>, kind: &'static str, ts: &str) {
        self.append_at(json, kind, ts, SyncPoint::Batched);
    }

    /// Syncs what a batch appended, if the policy syncs on append (`Always`).
    pub(super) fn sync_batch(&self) {
        let sync = self.sync_due(&mut self.lock_state(), SyncPoint::Append);
        self.sync(sync);
    }

    fn append_at(&self, json: Vec<u8>, kind: &'static str, ts: &str, at: SyncPoint) {
        let mut out = Vec::new();
        let sync = {
            let mut st = self.lock_state();
            self.prepare(&mut st, Instant::now());
            let res = self
                .flush_pending(&mut st, &mut out)
                .and_then(|()| self.write_json(&mut st, &json, kind, &mut out));
            match res {
                Ok(_) => {
                    st.since_checkpoint += 1;
                    if self.cfg.checkpoint_records > 0
                        && st.since_checkpoint >= self.cfg.checkpoint_records
                    {
                        self.checkpoint_locked(&mut st, &mut out);
                    }
                }
                Err(e) => self.note_lost(&mut st, ts, &e),
            }
            self.publish(&st);
            self.sync_due(&mut st, at)
        };
        self.sync(sync);
        self.emit(out);
    }

    pub(super) fn write_summaries(&self, summaries: Vec<Summary>) {
        for s in summaries {
            let ts = s.ts.clone();
            self.append_entry(&AuditEntry::Summary(s), &ts);
        }
    }

    /// Records the queue dropped (it was full): they join the pending gap, written before the
    /// next record.
    pub(super) fn note_dropped(&self, d: Dropped) {
        self.queue_dropped.fetch_add(d.count, Ordering::Relaxed);
        let mut st = self.lock_state();
        match st.gap.as_mut() {
            Some(g) => {
                g.count += d.count;
                if d.first_ts < g.first_ts {
                    g.first_ts = d.first_ts;
                }
                if d.last_ts > g.last_ts {
                    g.last_ts = d.last_ts;
                }
            }
            None => {
                tracing::error!(target: "prodbg", dropped = d.count,
                    "the audit queue was full (the audit file is slow or hung); dropped records will be counted in a gap record");
                st.gap = Some(GapAcc {
                    count: d.count,
                    first_ts: d.first_ts,
                    last_ts: d.last_ts,
                    error: format!(
                        "the audit queue was full ({} records or {} bytes waiting): the audit file is slow or hung",
                        super::queue::MAX_QUEUED_RECORDS,
                        super::queue::MAX_QUEUED_BYTES
                    ),
                });
            }
        }
        self.publish(&st);
    }

    fn note_lost(&self, st: &mut State, ts: &str, e: &io::Error) {
        let n = self.write_errors.load(Ordering::Relaxed);
        match st.gap.as_mut() {
            Some(g) => {
                g.count += 1;
                if *ts < *g.first_ts {
                    g.first_ts = ts.to_string();
                }
                if *ts > *g.last_ts {
                    g.last_ts = ts.to_string();
                }
            }
            None => {
                tracing::error!(target: "prodbg", error = %e, write_errors = n,
                    "cannot write the audit file; lost records will be counted in a gap record");
                st.gap = Some(GapAcc {
                    count: 1,
                    first_ts: ts.to_string(),
                    last_ts: ts.to_string(),
                    error: e.to_string(),
                });
            }
        }
    }

    /// Bytes the next line must declare as cut (the fragment plus the `\n` that ends it).
    fn cut(st: &State) -> u64 {
        if st.len > st.good_end {
            st.len - st.good_end + 1
        } else {
            0
        }
    }

    /// Writes the pending `resumed` and `gap` records; `Err` if the file is still unwritable.
    fn flush_pending(&self, st: &mut State, out: &mut Vec<Emit>) -> io::Result<()> {
        if st.len > st.good_end && st.pending_resume.is_none() && st.gap.is_none() {
            // Defensive: a fragment nobody accounted for.
            st.pending_resume = Some(resumed(ResumeReason::TornTail, self.chainer.keyed()));
        }
        if let Some(mut r) = st.pending_resume.clone() {
            r.ts = now_ts();
            r.cut_bytes = Self::cut(st);
            self.write_entry(st, &AuditEntry::Resumed(r), out)?;
            st.pending_resume = None;
            st.since_checkpoint += 1;
        }
        if let Some(g) = st.gap.as_ref() {
            let gap = Gap {
                ts: now_ts(),
                count: g.count,
                first_ts: g.first_ts.clone(),
                last_ts: g.last_ts.clone(),
                error: g.error.clone(),
                cut_bytes: Self::cut(st),
            };
            self.write_entry(st, &AuditEntry::Gap(gap), out)?;
            st.gap = None;
            st.since_checkpoint += 1;
        }
        Ok(())
    }

    fn write_entry(
        &self,
        st: &mut State,
        entry: &AuditEntry,
        out: &mut Vec<Emit>,
    ) -> io::Result<()> {
        let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
        self.write_json(st, &json, entry.kind(), out)
    }

    /// Seals and writes one line; advances the head only if the whole line was written.
    fn write_json(
        &self,
        st: &mut State,
        json: &[u8],
        kind: &'static str,
        out: &mut Vec<Emit>,
    ) -> io::Result<()> {
        let seq = st.head_seq + 1;
        let (line, hash) = self
            .chainer
            .seal(json, seq, &st.head_hash)
            .ok_or_else(|| io::Error::other("cannot seal the audit record"))?;
        self.write_line(st, &line)?;
        st.head_seq = seq;
        st.head_hash = hash.clone();
        st.written += 1;
        out.push(Emit::Record {
            kind,
            seq,
            hash,
            line,
        });
        Ok(())
    }

    fn write_line(&self, st: &mut State, line: &[u8]) -> io::Result<()> {
        let Some(path) = self.cfg.path.as_deref() else {
            return Ok(()); // in memory: the chain lives in the events
        };
        let prefix = st.len > st.good_end || st.needs_newline;
        if let (Rotation::Size { max_bytes, keep }, false) = (self.cfg.rotation, prefix) {
            let regular = st.file.as_ref().is_some_and(|f| f.regular);
            if regular && st.len > 0 && st.len + line.len() as u64 > max_bytes {
                self.rotate(st, path, keep);
            }
        }
        let Some(f) = st.file.as_ref() else {
            return Err(io::Error::other("the audit file is not open"));
        };
        let file = f.file.clone();
        let regular = f.regular;
        let mut buf = Vec::with_capacity(line.len() + 1);
        let prefix = st.len > st.good_end || st.needs_newline;
        if prefix {
            buf.push(b'\n');
        }
        buf.extend_from_slice(line);
        let (res, repair) = self.write_all(&file, &buf);
        match res {
            Ok(()) => {
                if regular {
                    st.len += buf.len() as u64;
                    st.good_end = st.len;
                }
                st.needs_newline = false;
                st.dirty = true;
                Ok(())
            }
            Err(e) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                if regular {
                    let actual = file.metadata().map(|m| m.len()).unwrap_or(st.len);
                    if actual > st.len {
                        let repaired = repair && file.set_len(st.len).is_ok();
                        if !repaired {
                            if st.needs_newline {
                                // The `\n` went out: the good line is complete now.
                                st.good_end += 1;
                                st.needs_newline = false;
                            }
                            st.len = actual;
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// The whole line in one `write_all` to the `O_APPEND` fd (on Linux, one `write(2)` to a
    /// regular file unless it fails part-way). Returns whether truncating a partial write away
    /// is allowed (the tests' faults can forbid it).
    fn write_all(&self, file: &File, buf: &[u8]) -> (io::Result<()>, bool) {
        #[cfg(test)]
        {
            let fault = self
                .faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
            match fault {
                None => {}
                Some(Fault::Fail) => return (Err(enospc()), true),
                Some(Fault::Partial(n)) => {
                    let _ = (&*file).write_all(&buf[..n.min(buf.len())]);
                    return (Err(enospc()), true);
                }
                Some(Fault::PartialNoRepair(n)) => {
                    let _ = (&*file).write_all(&buf[..n.min(buf.len())]);
                    return (Err(enospc()), false);
                }
            }
        }
        let mut f = file;
        (f.write_all(buf), true)
    }

    fn checkpoint_locked(&self, st: &mut State, out: &mut Vec<Emit>) -> Checkpoint {
        let ts = now_ts();
        let rec = CheckpointRecord {
            ts: ts.clone(),
            records: st.head_seq + 1,
            file: self.cfg.path.as_ref().map(|p| p.display().to_string()),
            keyed: self.chainer.keyed(),
        };
        // If this write fails the checkpoint still goes out, for the head as it is.
        let _ = self.write_entry(st, &AuditEntry::Checkpoint(rec), out);
        let cp = self.checkpoint_of(st, ts);
        st.since_checkpoint = 0;
        st.last_checkpoint = Instant::now();
        st.latest = Some(cp.clone());
        out.push(Emit::Checkpoint(cp.clone()));
        cp
    }

    /// The file to sync now, if the policy says so at this point.
    fn sync_due(&self, st: &mut State, at: SyncPoint) -> Option<Arc<File>> {
        let due = match (self.cfg.fsync, at) {
            (FsyncPolicy::Never, _) | (_, SyncPoint::Batched) => false,
            (FsyncPolicy::Always, _) | (_, SyncPoint::Flush) => true,
            // With a background thread, appends never wait for an interval's sync.
            (FsyncPolicy::Every(_), SyncPoint::Append) if self.cfg.background => false,
            (FsyncPolicy::Every(d), _) => st.last_sync.elapsed() >= d,
        };
        if !st.dirty || !due {
            return None;
        }
        st.dirty = false;
        st.last_sync = Instant::now();
        st.file
            .as_ref()
            .filter(|f| f.regular)
            .map(|f| f.file.clone())
    }

    fn sync(&self, file: Option<Arc<File>>) {
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                tracing::error!(target: "prodbg", error = %e, "cannot sync the audit file");
            }
        }
    }

    pub(super) fn tick(&self) {
        let summaries = {
            let mut folds = self.lock_folds();
            if folds.1.elapsed() >= self.cfg.fold_interval {
                folds.1 = Instant::now();
                folds.0.take(Instant::now(), false)
            } else {
                Vec::new()
            }
        };
        self.write_summaries(summaries);
        let mut out = Vec::new();
        let sync = {
            let mut st = self.lock_state();
            self.prepare(&mut st, Instant::now());
            let ok = self.flush_pending(&mut st, &mut out).is_ok();
            if ok
                && st.since_checkpoint > 0
                && st.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval
            {
                self.checkpoint_locked(&mut st, &mut out);
            }
            self.publish(&st);
            self.sync_due(&mut st, SyncPoint::Tick)
        };
        self.sync(sync);
        self.emit(out);
    }

    /// Writes every folded count (over-budget ones included) and syncs; `final_` adds a
    /// checkpoint when anything was written since the last.
    pub(super) fn flush(&self, final_: bool) {
        let summaries = {
            let mut folds = self.lock_folds();
            folds.1 = Instant::now();
            folds.0.take(Instant::now(), true)
        };
        self.write_summaries(summaries);
        let mut out = Vec::new();
        let sync = {
            let mut st = self.lock_state();
            self.prepare(&mut st, Instant::now());
            let ok = self.flush_pending(&mut st, &mut out).is_ok();
            if final_ && ok && st.since_checkpoint > 0 {
                self.checkpoint_locked(&mut st, &mut out);
            }
            self.publish(&st);
            self.sync_due(&mut st, SyncPoint::Flush)
        };
        self.sync(sync);
        self.emit(out);
    }

    fn emit(&self, out: Vec<Emit>) {
        if !self.cfg.events {
            return;
        }
        for e in out {
            match e {
                Emit::Record {
                    kind,
                    seq,
                    hash,
                    line,
                } => {
                    let record = String::from_utf8_lossy(line.trim_ascii_end());
                    tracing::info!(target: AUDIT_TARGET, kind, seq, hash = %hash, record = %record, "prodbg audit record");
                }
                Emit::Checkpoint(cp) => {
                    tracing::info!(target: AUDIT_TARGET, records = cp.records, head_hash = %cp.head_hash,
                        file = cp.file.as_deref().unwrap_or(""), keyed = cp.keyed, "prodbg audit checkpoint");
                }
            }
        }
    }
}
