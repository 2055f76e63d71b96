//! Following the file: rotation by size, a rename by logrotate (device/inode compared with the
//! path), the SIGHUP hook, a shrink (copytruncate) and outside writes, each noticed before the
//! next line goes out and keeping the chain verifiable.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::file::{open_file, rotated_path, scan_tail, Tail};
use super::options::FsyncPolicy;
use super::record::ResumeReason;
use super::sighup::HUP_GEN;
use super::writer::{resumed, Inner, State};

impl Inner {
    pub(super) fn rotate(&self, st: &mut State, path: &Path, keep: usize) {
        if st
            .last_rotate_failure
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        if let (Some(f), false) = (st.file.as_ref(), self.cfg.fsync == FsyncPolicy::Never) {
            let _ = f.file.sync_data();
        }
        let keep = keep.max(2);
        let renamed = (1..keep - 1)
            .rev()
            .try_for_each(|i| {
                match std::fs::rename(rotated_path(path, i), rotated_path(path, i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
            .and_then(|()| std::fs::rename(path, rotated_path(path, 1)));
        if let Err(e) = renamed {
            st.last_rotate_failure = Some(Instant::now());
            tracing::error!(target: "prodbg", error = %e, file = %path.display(),
                "cannot rotate the audit file; writing on to it");
            return;
        }
        match open_file(path) {
            Ok(f) => {
                st.len = f.len;
                st.good_end = f.len;
                st.needs_newline = false;
                st.file = Some(f);
                st.dirty = false;
            }
            Err(e) => {
                st.last_rotate_failure = Some(Instant::now());
                st.file = None;
                tracing::error!(target: "prodbg", error = %e, file = %path.display(),
                    "cannot create the audit file after rotating it");
            }
        }
    }

    /// Notices a rename (device/inode changed), a SIGHUP, a shrink (copytruncate) or outside
    /// writes before the next line goes out.
    pub(super) fn prepare(&self, st: &mut State, now: Instant) {
        let Some(path) = self.cfg.path.as_deref() else {
            return;
        };
        if st.file.is_none() {
            // Lost (a failed reopen or rotation): try again; the next write fails until then.
            let _ = self.reopen_locked(st);
        }
        let hup = HUP_GEN.load(Ordering::Relaxed);
        let check_due = now.duration_since(st.last_identity_check) >= self.cfg.reopen_check;
        if st.file.is_some() && (check_due || hup != st.hup_seen) {
            st.last_identity_check = now;
            st.hup_seen = hup;
            let moved = match (std::fs::metadata(path), st.file.as_ref()) {
                (Ok(m), Some(f)) => m.dev() != f.dev || m.ino() != f.ino,
                (Err(e), _) => e.kind() == io::ErrorKind::NotFound,
                _ => false,
            };
            if moved {
                if let Err(e) = self.reopen_locked(st) {
                    tracing::error!(target: "prodbg", error = %e, file = %path.display(),
                        "the audit file was moved and cannot be reopened");
                }
            }
        }
        let Some(f) = st.file.as_ref() else {
            return;
        };
        if !f.regular {
            return;
        }
        let Ok(actual) = f.file.metadata().map(|m| m.len()) else {
            return;
        };
        if actual < st.len {
            let previous = st.len;
            let file = f.file.clone();
            let tail = scan_tail(&file, actual).unwrap_or_default();
            st.len = actual;
            st.good_end = tail.good_end;
            st.needs_newline = tail.needs_newline;
            let mut r = resumed(ResumeReason::Truncated, self.chainer.keyed());
            r.previous_bytes = Some(previous);
            r.found_bytes = Some(actual);
            st.pending_resume = Some(r);
            tracing::warn!(target: "prodbg", file = %path.display(), previous, actual,
                "the audit file shrank (copytruncate?); the chain resumes with a note");
        } else if actual > st.len {
            tracing::warn!(target: "prodbg", file = %path.display(), bytes = actual - st.len,
                "someone else wrote to the audit file; verify will flag those bytes");
            st.len = actual;
            st.good_end = actual;
            st.needs_newline = false;
        }
    }

    pub(super) fn reopen_locked(&self, st: &mut State) -> io::Result<()> {
        let Some(path) = self.cfg.path.as_deref() else {
            return Ok(());
        };
        if let (Some(f), false) = (st.file.as_ref(), self.cfg.fsync == FsyncPolicy::Never) {
            let _ = f.file.sync_data();
        }
        let f = open_file(path)?;
        let tail = if f.regular {
            scan_tail(&f.file, f.len)?
        } else {
            Tail::default()
        };
        if let Some(last) = &tail.last {
            if last.hash != st.head_hash {
                tracing::warn!(target: "prodbg", file = %path.display(),
                    "the reopened audit file ends with a record of another chain; verify will report the break");
            }
        }
        st.len = f.len;
        st.good_end = tail.good_end;
        st.needs_newline = tail.needs_newline;
        if st.len > st.good_end && st.pending_resume.is_none() {
            st.pending_resume = Some(resumed(ResumeReason::TornTail, self.chainer.keyed()));
        }
        st.file = Some(f);
        st.dirty = false;
        st.last_identity_check = Instant::now();
        Ok(())
    }
}
