//! Tests of the audit log: forgery, faults, rotation, checkpoints, folding, leaks.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::chain::{open_line, Chainer};
use super::log::Fault;
use super::*;

const KEY: &[u8] = b"test-key-0123456789-abcdefghij";
const WRONG_KEY: &[u8] = b"wrong-key-0123456789-abcdefghij";

fn key() -> AuditKey {
    AuditKey::new(KEY.to_vec()).unwrap()
}

fn rec(i: usize) -> AuditRecord {
    AuditRecord {
        ts: format!("2026-01-01T00:00:{:02}.{:03}Z", (i / 1000) % 60, i % 1000),
        request_id: format!("r{i}"),
        client: "127.0.0.1:40000".into(),
        token_id: Some("ops".into()),
        via: None,
        method: "GET".into(),
        path: "/debug/memory".into(),
        query: None,
        status: 200,
        outcome: Outcome::Allowed,
        duration_ms: 1.25,
        bytes: 10,
        details: Default::default(),
    }
}

/// A keyed log with no background thread, no fsync and no events (tests drive time).
fn builder(path: &Path) -> AuditLogBuilder {
    AuditLog::builder()
        .file(path)
        .key(key())
        .background_thread(false)
        .fsync(FsyncPolicy::Never)
        .emit_events(false)
}

fn write_log(path: &Path, n: usize) {
    let log = builder(path).build().unwrap();
    for i in 0..n {
        log.append(rec(i));
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_audit_log(path, Some(KEY), None)
}

/// What a forger does: recomputes every hash after an edit, with `key` (None: plain SHA-256).
fn rehash(lines: &[String], key: Option<&[u8]>) -> Vec<String> {
    let chainer = Chainer::from_bytes(key);
    let mut prev = GENESIS_HASH.to_string();
    lines
        .iter()
        .map(|l| {
            let opened = open_line(l.as_bytes()).unwrap();
            let body = String::from_utf8(opened.body).unwrap().replace(
                &format!("\"prev_hash\":\"{}\"", opened.prev_hash),
                &format!("\"prev_hash\":\"{prev}\""),
            );
            let hash = chainer.hash(&prev, body.as_bytes()).unwrap();
            prev = hash.clone();
            format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
        })
        .collect()
}

fn line_of(e: &VerifyError) -> usize {
    match e {
        VerifyError::BadHash { at, .. }
        | VerifyError::BrokenChain { at, .. }
        | VerifyError::Malformed { at, .. }
        | VerifyError::KeyedMismatch { at, .. }
        | VerifyError::BadSequence { at, .. }
        | VerifyError::BadCut { at, .. }
        | VerifyError::CheckpointMismatch { at, .. } => at.line,
        other => panic!("no line in {other:?}"),
    }
}

#[test]
fn keyed_chain_verifies_and_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 5);
    let report = verify(&path).unwrap();
    assert_eq!(report.kinds.request, 5);
    assert_eq!(report.kinds.checkpoint, 1, "final checkpoint on drop");
    assert!(report.from_genesis && report.keyed);
    assert_eq!(report.head_seq, 6);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Every line: kind first, then the chain fields, hash last.
    for l in lines(&path) {
        assert!(l.starts_with("{\"kind\":"), "{l}");
        assert!(l.contains(",\"seq\":") && l.contains(",\"prev_hash\":\""));
    }
}

#[test]
fn forged_file_is_rejected_naming_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 5);
    let original = lines(&path);
    let mut edited = original.clone();
    edited[2] = edited[2].replace("\"token_id\":\"ops\"", "\"token_id\":\"mallory\"");
    assert_ne!(edited[2], original[2]);

    // Edited, not re-hashed.
    write_lines(&path, &edited);
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadHash { .. }) && line_of(&e) == 3,
        "{e}"
    );

    // Re-hashed with plain SHA-256: rejected with the key, at the edited line.
    write_lines(&path, &rehash(&edited, None));
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadHash { keyed: true, .. }) && line_of(&e) == 1,
        "{e}"
    );
    // (line 1: every line was re-hashed, so the first one already fails under the key.)

    // Re-hashed with a wrong key: rejected too.
    write_lines(&path, &rehash(&edited, Some(WRONG_KEY)));
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadHash { .. }) && line_of(&e) == 1,
        "{e}"
    );

    // A forger who only re-hashes from the edit onwards: the first bad line is the edited one.
    let mut partial = original.clone();
    let tail = rehash(&edited, None);
    partial[2..].clone_from_slice(&tail[2..]);
    write_lines(&path, &partial);
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::BadHash { .. }) && line_of(&e) == 3,
        "{e}"
    );

    // Without a key, the plain re-hash is caught by the keyed checkpoint it left in place …
    write_lines(&path, &rehash(&edited, None));
    let e = verify_audit_log(&path, None, None).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::KeyedMismatch {
                claims_keyed: true,
                ..
            }
        ),
        "{e}"
    );
    // … and a forger who also flips it gets an "unkeyed" report, which the key still rejects.
    let flipped: Vec<String> = edited
        .iter()
        .map(|l| l.replace("\"keyed\":true", "\"keyed\":false"))
        .collect();
    write_lines(&path, &rehash(&flipped, None));
    let report = verify_audit_log(&path, None, None).unwrap();
    assert!(!report.keyed);
    assert!(report.to_string().contains("UNKEYED"));
    assert!(verify(&path).is_err());
}

#[test]
fn deleted_inserted_and_reordered_lines_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 5);
    let original = lines(&path);

    let mut deleted = original.clone();
    deleted.remove(1);
    write_lines(&path, &deleted);
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::BrokenChain { .. }) && line_of(&e) == 2,
        "{e}"
    );

    let mut swapped = original.clone();
    swapped.swap(1, 2);
    write_lines(&path, &swapped);
    assert_eq!(line_of(&verify(&path).unwrap_err()), 2);

    let mut inserted = original.clone();
    inserted.insert(3, original[1].clone());
    write_lines(&path, &inserted);
    assert_eq!(line_of(&verify(&path).unwrap_err()), 4);

    let mut junk = original.clone();
    junk.insert(2, "{\"kind\":\"request\"}".into());
    write_lines(&path, &junk);
    let e = verify(&path).unwrap_err();
    assert!(
        matches!(e, VerifyError::Malformed { .. }) && line_of(&e) == 3,
        "{e}"
    );
}

#[test]
fn unkeyed_log_verifies_without_key_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).unkeyed().build().unwrap();
    assert!(!log.is_keyed() && !log.head().keyed);
    log.append(rec(0));
    drop(log);
    let report = verify_audit_log(&path, None, None).unwrap();
    assert!(!report.keyed);
    assert!(lines(&path).last().unwrap().contains("\"keyed\":false"));
    let e = verify(&path).unwrap_err();
    assert!(matches!(e, VerifyError::BadHash { .. }) && line_of(&e) == 1);
    // And a keyed log needs its key.
    let keyed = dir.path().join("keyed.jsonl");
    write_log(&keyed, 2);
    let e = verify_audit_log(&keyed, None, None).unwrap_err();
    assert!(e.to_string().contains("pass its key"), "{e}");
}

#[test]
fn torn_tail_is_resumed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 5);
    let before = lines(&path);
    let fragment = "{\"kind\":\"request\",\"ts\":\"2026-01-01T00:0";
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(fragment.as_bytes())
        .unwrap();
    // Before the writer restarts: verify reports the torn tail, not an error.
    let report = verify(&path).unwrap();
    assert_eq!(report.torn_tails.len(), 1);
    assert_eq!(report.torn_tails[0].1, fragment.len() as u64);

    let log = builder(&path).build().unwrap();
    let after = lines(&path);
    assert_eq!(
        after.len(),
        before.len() + 2,
        "fragment line + resumed line"
    );
    assert!(after[before.len() + 1].contains("chain resumed after torn tail"));
    log.append(rec(9));
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(report.resumes.len(), 1);
    assert_eq!(report.resumes[0].reason, ResumeReason::TornTail);
    assert_eq!(report.resumes[0].cut_bytes, fragment.len() as u64 + 1);
    assert!(report.torn_tails.is_empty());
    assert_eq!(report.kinds.request, 6);

    // A forged cut count is caught.
    let mut forged = lines(&path);
    let i = forged
        .iter()
        .position(|l| l.contains("\"kind\":\"resumed\""))
        .unwrap();
    forged[i] = forged[i].replace(
        &format!("\"cut_bytes\":{}", fragment.len() + 1),
        "\"cut_bytes\":1",
    );
    write_lines(&path, &forged);
    assert!(verify(&path).is_err());
}

#[test]
fn crash_garbage_and_missing_newline_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    // A block of NULs (a crash on ext4 can leave one), ending in a newline.
    let path = dir.path().join("nul.jsonl");
    write_log(&path, 3);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    f.write_all(b"\n").unwrap();
    drop(f);
    write_log(&path, 2);
    let report = verify(&path).unwrap();
    assert_eq!(report.resumes[0].cut_bytes, 4097 + 1);
    assert_eq!(report.kinds.request, 5);

    // A complete last record missing only its newline: no resume needed.
    let path = dir.path().join("nonl.jsonl");
    write_log(&path, 3);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.trim_end()).unwrap();
    write_log(&path, 2);
    let report = verify(&path).unwrap();
    assert!(report.resumes.is_empty());
    assert_eq!(report.kinds.request, 5);
}

#[test]
fn failed_writes_become_one_gap_record_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    log.append(rec(0));
    // rec(1) fails; the retry of the gap record (on the tick that follows, here after each
    // append) writes part of a line, which is truncated away; rec(2)'s write of the pending gap
    // fails, so rec(2) is lost too; its retry fails; rec(3) goes out after the gap record.
    log.inject_fault(Fault::Fail);
    log.inject_fault(Fault::Partial(30));
    log.inject_fault(Fault::Fail);
    log.inject_fault(Fault::Fail);
    log.append(rec(1));
    log.append(rec(2));
    assert_eq!(log.stats().pending_lost, 2);
    assert_eq!(log.stats().write_errors, 4);
    assert_eq!(log.stats().records, 1, "the head did not advance");
    assert!(
        fs::read_to_string(&path).unwrap().ends_with("}\n"),
        "partial write truncated away"
    );
    log.append(rec(3));
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(report.gaps[0].count, 2);
    assert_eq!(report.gaps[0].first_ts, rec(1).ts);
    assert_eq!(report.gaps[0].last_ts, rec(2).ts);
    assert_eq!(report.kinds.request, 2);
    assert_eq!(report.lost_records, 2);

    // A partial line that cannot be truncated stays, and the gap record accounts for it.
    let path = dir.path().join("fragment.jsonl");
    let log = builder(&path).build().unwrap();
    log.append(rec(0));
    log.inject_fault(Fault::PartialNoRepair(40));
    log.append(rec(1));
    log.append(rec(2));
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(report.gaps[0].count, 1);
    let gap = lines(&path)
        .into_iter()
        .find(|l| l.contains("\"kind\":\"gap\""))
        .unwrap();
    assert!(gap.contains("\"cut_bytes\":41"), "{gap}");
    assert!(gap.contains("No space left on device"), "{gap}");
}

#[test]
fn dev_full_counts_errors_without_failing() {
    let log = AuditLog::builder()
        .file("/dev/full")
        .key(key())
        .background_thread(false)
        .emit_events(false)
        .build()
        .unwrap();
    for i in 0..3 {
        log.append(rec(i));
    }
    let s = log.stats();
    assert_eq!((s.pending_lost, s.records), (3, 0));
    assert!(
        s.write_errors >= 3,
        "each append, and each retry of the gap record"
    );
}

#[test]
fn rotation_keeps_k_files_and_the_chain_continues_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotation = Rotation::Size {
        max_bytes: 4096,
        keep: 4,
    };
    let log = builder(&path).rotation(rotation).build().unwrap();
    for i in 0..200 {
        log.append(rec(i));
    }
    let head = log.head();
    drop(log);
    for i in 1..=3 {
        assert!(super::file::rotated_path(&path, i).exists(), ".{i}");
    }
    assert!(!super::file::rotated_path(&path, 4).exists());
    for f in rotated_files(&path) {
        assert!(fs::metadata(&f).unwrap().len() <= 4096, "{}", f.display());
    }
    let report = verify_audit_log(&path, Some(KEY), Some(&head)).unwrap();
    assert_eq!(report.files.len(), 4);
    assert!(!report.from_genesis, "the oldest files were deleted");
    assert!(report.first_seq.unwrap() > 1);
    assert_eq!(report.head_seq, 201);
    assert!(report.to_string().contains("anchored at record"));
    assert_eq!(
        report.files.iter().map(|f| f.records).sum::<u64>(),
        report.records
    );

    // A restart continues the chain (and `seq`) in the rotated set.
    let log = builder(&path).rotation(rotation).build().unwrap();
    log.append(rec(999));
    assert_eq!(log.head().records, 202);
    drop(log);
    verify_audit_log(&path, Some(KEY), None).unwrap();

    // Removing a middle file breaks the chain at the next file's first line.
    fs::remove_file(super::file::rotated_path(&path, 2)).unwrap();
    let files = vec![
        super::file::rotated_path(&path, 3),
        super::file::rotated_path(&path, 1),
        path.clone(),
    ];
    let e = verify_audit_files(&files, Some(KEY), None).unwrap_err();
    assert!(
        matches!(e, VerifyError::BrokenChain { .. }) && line_of(&e) == 1,
        "{e}"
    );
}

#[test]
fn a_new_file_continues_from_the_rotated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 3);
    fs::rename(&path, super::file::rotated_path(&path, 1)).unwrap();
    write_log(&path, 3);
    let report = verify_audit_log(&path, Some(KEY), None).unwrap();
    assert_eq!(report.files.len(), 2);
    assert!(report.from_genesis && report.chain_starts.is_empty());
    assert_eq!(report.kinds.request, 6);
}

#[test]
fn rename_rotation_is_followed_by_inode_check_and_by_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let old1 = dir.path().join("audit.jsonl-20260101");
    let old2 = dir.path().join("audit.jsonl-20260102");
    let log = builder(&path)
        .rotation(Rotation::Never)
        .reopen_check_interval(Duration::ZERO)
        .build()
        .unwrap();
    for i in 0..3 {
        log.append(rec(i));
    }
    fs::rename(&path, &old1).unwrap(); // logrotate without copytruncate
    for i in 3..6 {
        log.append(rec(i));
    }
    assert!(path.exists(), "reopened by the inode check");
    assert_eq!(lines(&old1).len(), 3);

    // The host's own SIGHUP handler calls reopen().
    fs::rename(&path, &old2).unwrap();
    log.reopen().unwrap();
    log.append(rec(6));
    drop(log);
    let report =
        verify_audit_files(&[old1.clone(), old2.clone(), path.clone()], Some(KEY), None).unwrap();
    assert_eq!(report.kinds.request, 7);
    assert_eq!(
        report.files.iter().map(|f| f.records).collect::<Vec<_>>(),
        vec![3, 3, 2]
    );
}

#[test]
fn sighup_hook_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let old = dir.path().join("audit.jsonl.old");
    let log = builder(&path)
        .reopen_check_interval(Duration::from_secs(3600))
        .reopen_on_sighup(true)
        .build()
        .unwrap();
    log.append(rec(0));
    fs::rename(&path, &old).unwrap();
    log.append(rec(1));
    assert!(!path.exists(), "no check due yet");
    // SAFETY: our handler is installed; raising a signal in-process is fine.
    assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
    log.append(rec(2));
    assert!(path.exists(), "reopened after SIGHUP");
    drop(log);
    verify_audit_files(&[old, path], Some(KEY), None).unwrap();
}

#[test]
fn copytruncate_is_detected_and_noted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let copy = super::file::rotated_path(&path, 1);
    let log = builder(&path).rotation(Rotation::Never).build().unwrap();
    for i in 0..5 {
        log.append(rec(i));
    }
    fs::copy(&path, &copy).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    log.append(rec(5));
    let first = lines(&path).remove(0);
    assert!(first.contains("\"reason\":\"truncated\""), "{first}");
    // Records written between logrotate's copy and its truncate are lost, and reported.
    for i in 6..8 {
        log.append(rec(i));
    }
    let copy2 = dir.path().join("audit.jsonl.copy2");
    fs::copy(&path, &copy2).unwrap();
    log.append(rec(8)); // lands after the copy: lost in the truncation
    log.append(rec(9));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    log.append(rec(10));
    drop(log);
    let report = verify_audit_files(&[copy, copy2, path], Some(KEY), None).unwrap();
    assert_eq!(report.resumes.len(), 2);
    assert!(report
        .resumes
        .iter()
        .all(|r| r.reason == ResumeReason::Truncated));
    assert_eq!(report.resumes[0].lost_records, 0);
    assert_eq!(report.resumes[1].lost_records, 2);
    assert_eq!(report.lost_records, 2);
}

#[test]
fn checkpoints_by_count_detect_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path)
        .checkpoint_every(10, Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..25 {
        log.append(rec(i));
    }
    let cp = log.latest_checkpoint().unwrap();
    assert_eq!(cp.records, 22, "checkpoint records are seq 11 and 22");
    assert!(cp.keyed);
    assert_eq!(
        cp.file.as_deref(),
        Some(path.display().to_string().as_str())
    );
    drop(log);
    let report = verify_audit_log(&path, Some(KEY), Some(&cp)).unwrap();
    assert_eq!(report.checkpoint_at.as_ref().unwrap().line, 22);
    assert_eq!(report.kinds.checkpoint, 3);

    // Cut the end at the checkpoint's own line: truncation detected.
    let all = lines(&path);
    write_lines(&path, &all[..21]);
    let e = verify_audit_log(&path, Some(KEY), Some(&cp)).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Truncated {
                checkpoint_records: 22,
                last_seq: 21,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("truncated"), "{e}");
    // Cutting after it is not detectable from that checkpoint (only from a later one).
    write_lines(&path, &all[..23]);
    verify_audit_log(&path, Some(KEY), Some(&cp)).unwrap();
    // A checkpoint whose hash differs from the record at its position.
    let wrong = Checkpoint::anchor(22, &"ab".repeat(32));
    let e = verify_audit_log(&path, Some(KEY), Some(&wrong)).unwrap_err();
    assert!(
        matches!(e, VerifyError::CheckpointMismatch { .. }) && line_of(&e) == 22,
        "{e}"
    );
}

#[test]
fn checkpoints_by_time_from_the_background_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path)
        .background_thread(true)
        .checkpoint_every(1000, Duration::from_millis(50))
        .build()
        .unwrap();
    log.append(rec(0));
    std::thread::sleep(Duration::from_millis(400));
    let cp = log.latest_checkpoint().expect("a timed checkpoint");
    assert_eq!(cp.records, 2);
    let n = lines(&path).len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lines(&path).len(),
        n,
        "no checkpoint when nothing was written"
    );
    drop(log);
    verify_audit_log(&path, Some(KEY), Some(&cp)).unwrap();
}

/// Captures `tracing` events (target + fields) as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={:?}", field.name(), value));
            }
        }
        let mut v = V(format!(
            "{} {}",
            event.metadata().target(),
            event.metadata().level()
        ));
        event.record(&mut v);
        self.0.lock().unwrap().push(v.0);
    }
}

#[test]
fn checkpoint_event_is_emitted_and_nothing_leaks_the_key() {
    use tracing_subscriber::layer::SubscriberExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let (debug_texts, error_text) = tracing::subscriber::with_default(subscriber, || {
        let builder = builder(&path)
            .emit_events(true)
            .checkpoint_every(5, Duration::from_secs(3600));
        let builder_debug = format!("{builder:?}");
        let log = builder.build().unwrap();
        for i in 0..5 {
            log.append(rec(i));
        }
        let cp = log.head();
        let texts = vec![
            builder_debug,
            format!("{log:?}"),
            format!("{:?}", key()),
            format!("{cp:?}"),
            serde_json::to_string(&cp).unwrap(),
            format!("{:?}", log.stats()),
        ];
        drop(log);
        let err = verify_audit_log(&path, Some(WRONG_KEY), None).unwrap_err();
        (texts, format!("{err} {err:?}"))
    });
    let events = capture.0.lock().unwrap().clone();
    let checkpoint = events
        .iter()
        .find(|e| e.contains("prodbg audit checkpoint"))
        .expect("checkpoint event");
    assert!(checkpoint.starts_with("prodbg::audit INFO"), "{checkpoint}");
    assert!(
        checkpoint.contains("records=6") && checkpoint.contains("keyed=true"),
        "{checkpoint}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.contains("prodbg audit record"))
            .count()
            >= 5
    );

    let file = fs::read(&path).unwrap();
    let key_text = String::from_utf8_lossy(KEY).into_owned();
    let key_hex = hex::encode(KEY);
    let mut haystacks = debug_texts;
    haystacks.push(error_text);
    haystacks.push(String::from_utf8_lossy(&file).into_owned());
    haystacks.extend(events);
    for h in &haystacks {
        assert!(
            !h.contains(&key_text) && !h.contains(&key_hex),
            "key leaked in: {h}"
        );
        assert!(!h.contains("test-key"), "key leaked in: {h}");
    }
}

#[test]
fn ten_thousand_folded_health_probes_cost_under_10_kb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    for i in 0..10_000 {
        let mut r = rec(i);
        r.path = "/health/live".into();
        r.token_id = None;
        r.client = format!("10.0.0.{}:{}", i % 3, 30000 + i % 1000);
        log.record(r, Folding::Always);
    }
    assert_eq!(log.stats().folded, 10_000);
    drop(log);
    let size = fs::metadata(&path).unwrap().len();
    assert!(size <= 10 * 1024, "{size} bytes");
    let report = verify(&path).unwrap();
    assert_eq!(report.folded_requests, 10_000);
    assert_eq!(report.kinds.request, 0);
    assert_eq!(report.kinds.summary, 3, "one per client");
    let summary = lines(&path)
        .into_iter()
        .find(|l| l.contains("\"10.0.0.1\""))
        .unwrap();
    assert!(summary.contains("\"count\":3333"), "{summary}");
    assert!(summary.contains("\"10.0.0.1\":3333"), "{summary}");
    println!("10 000 folded probes: {size} bytes: {summary}");
}

#[test]
fn repeated_denials_fold_after_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    let denial = |client: &str| AuditRecord {
        client: client.into(),
        token_id: None,
        status: 401,
        outcome: Outcome::Denied,
        ..rec(0)
    };
    for _ in 0..100 {
        log.record(denial("192.0.2.7:5555"), Folding::Repeats);
    }
    log.record(denial("192.0.2.8:5555"), Folding::Repeats);
    log.flush();
    let report = verify(&path).unwrap();
    assert_eq!(
        report.kinds.request, 2,
        "the first from each client in full"
    );
    assert_eq!(report.folded_requests, 99);
    // Many distinct folded keys from one client: the table stays bounded by flushing early,
    // and past the client's byte budget its requests are only counted.
    for i in 0..1000 {
        let mut r = denial("192.0.2.9:1");
        r.path = format!("/nope/{i}");
        let _ = log.record(r, Folding::Always);
    }
    assert!(log.stats().over_budget > 900, "{:?}", log.stats());
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(report.folded_requests, 1099);
    let text = fs::read_to_string(&path).unwrap();
    let of_client: usize = text
        .lines()
        .filter(|l| l.contains("192.0.2.9"))
        .map(str::len)
        .sum();
    assert!(
        of_client <= super::fold::CLIENT_BUDGET_BYTES as usize + 1024,
        "{of_client} bytes for one client"
    );
    let over = text
        .lines()
        .find(|l| l.contains("\"over_budget\":true"))
        .expect("an over-budget summary");
    assert!(over.contains("\"192.0.2.9\""), "{over}");
}

#[test]
fn denials_by_a_token_fold_naming_it_and_each_client_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    for _ in 0..3 {
        let r = AuditRecord {
            token_id: Some("viewer".into()),
            method: "POST".into(),
            path: "/debug/pprof/heap/activate".into(),
            status: 403,
            outcome: Outcome::Denied,
            ..rec(0)
        };
        let _ = log.record(r, Folding::Repeats);
    }
    log.flush();
    let text = fs::read_to_string(&path).unwrap();
    let summary = text
        .lines()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .expect("a summary");
    assert!(
        summary.contains("\"token_id\":\"viewer\"") && summary.contains("\"count\":2"),
        "{summary}"
    );
    // 10 000 of each kind of anonymous answer from one client: a few KiB.
    let before = text.len();
    for i in 0..10_000 {
        for (method, path, status) in [
            ("other", "/debug/memory", 401),
            ("POST", "/health/live", 405),
            ("GET", "/health/live", 400),
        ] {
            let r = AuditRecord {
                client: format!("198.51.100.1:{}", 1000 + i % 5000),
                token_id: None,
                method: method.into(),
                path: path.into(),
                query: Some(format!("x={i}")),
                status,
                outcome: Outcome::from_status(status),
                ..rec(i)
            };
            let _ = log.record(r, Folding::Repeats);
        }
    }
    drop(log);
    let report = verify(&path).unwrap();
    let size = fs::metadata(&path).unwrap().len() as usize - before;
    assert!(size <= 6 * 1024, "{size} bytes for 30 000 requests");
    assert_eq!(report.folded_requests, 2 + 30_000 - 3);
}

#[test]
fn summaries_are_flushed_every_fold_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path)
        .background_thread(true)
        .fold_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    log.record(rec(0), Folding::Always);
    std::thread::sleep(Duration::from_millis(400));
    assert!(fs::read_to_string(&path)
        .unwrap()
        .contains("\"kind\":\"summary\""));
    drop(log);
}

#[test]
fn concurrent_appends_from_a_tokio_runtime_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path)
        .background_thread(true)
        .checkpoint_every(100, Duration::from_millis(20))
        .rotation(Rotation::Size {
            max_bytes: 64 * 1024,
            keep: 100,
        })
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..250 {
                        log.append(rec(t * 1000 + i));
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(log);
    let report = verify_audit_log(&path, Some(KEY), None).unwrap();
    assert_eq!(report.kinds.request, 2000);
    assert!(report.from_genesis && report.files.len() > 1);
}

#[test]
fn cancelled_requests_are_recorded_as_499() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    let pending = log.begin(rec(0));
    std::thread::sleep(Duration::from_millis(5));
    drop(pending); // the client hung up
    let mut timed_out = log.begin(rec(1));
    timed_out.set_cancel_status(504);
    drop(timed_out);
    let mut ok = log.begin(rec(2));
    ok.record_mut()
        .details
        .insert("directive".into(), "debug".into());
    ok.finish(200, 42, Folding::Never);
    drop(log);
    let l = lines(&path);
    assert!(
        l[0].contains("\"status\":499") && l[0].contains("\"outcome\":\"cancelled\""),
        "{}",
        l[0]
    );
    let d: f64 = serde_json::from_str::<serde_json::Value>(&l[0]).unwrap()["duration_ms"]
        .as_f64()
        .unwrap();
    assert!(d >= 5.0, "{d}");
    assert!(l[1].contains("\"status\":504") && l[1].contains("\"outcome\":\"error\""));
    assert!(
        l[2].contains("\"status\":200") && l[2].contains("\"details\":{\"directive\":\"debug\"}")
    );
    verify(&path).unwrap();
}

#[test]
fn late_details_are_recorded_however_the_request_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    let cancelled = log.begin(rec(0));
    cancelled
        .details_slot()
        .insert("request_body", serde_json::json!({"bytes": 2}));
    drop(cancelled); // the client hung up while the handler ran
    let mut answered = log.begin(rec(1));
    answered
        .details_slot()
        .insert("request_body", serde_json::json!({"bytes": 3}));
    let rec = answered.record_mut();
    rec.details.insert("previous".into(), "a".into());
    rec.details.insert("request_body".into(), "forged".into());
    answered.finish(200, 0, Folding::Never);
    drop(log);
    let l: Vec<serde_json::Value> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(l[0]["status"], 499);
    assert_eq!(
        l[0]["details"],
        serde_json::json!({"request_body": {"bytes": 2}})
    );
    assert_eq!(
        l[1]["details"],
        serde_json::json!({"previous": "a", "request_body": {"bytes": 3}})
    );
    verify(&path).unwrap();
}

#[test]
fn mutations_record_details_and_queries_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    let mut r = rec(0)
        .detail("directive", "info,prodbg::audit=off")
        .detail("ttl_s", 900)
        .detail("previous", "info");
    r.method = "PUT".into();
    r.path = "/debug/log-level".into();
    r.query = Some("seconds=5&token=hunter2".into());
    log.append(r);
    drop(log);
    let l = lines(&path).remove(0);
    assert!(l.contains("\"details\":{\"directive\":\"info,prodbg::audit=off\",\"previous\":\"info\",\"ttl_s\":900}"), "{l}");
    assert!(
        l.contains("\"query\":\"seconds=5&token=[redacted]\"") && !l.contains("hunter2"),
        "{l}"
    );
    verify(&path).unwrap();
}

#[test]
fn key_parsing() {
    assert_eq!(
        AuditKey::parse("00112233445566778899aabbccddeeff")
            .unwrap()
            .as_bytes()
            .len(),
        16
    );
    assert_eq!(
        AuditKey::parse("hex:00112233445566778899aabbccddeeff")
            .unwrap()
            .as_bytes()[1],
        0x11
    );
    assert_eq!(
        AuditKey::parse("  correct horse battery staple \n")
            .unwrap()
            .as_bytes(),
        b"correct horse battery staple"
    );
    assert!(matches!(
        AuditKey::parse("short"),
        Err(KeyError::TooShort { len: 5 })
    ));
    assert!(matches!(AuditKey::parse("hex:zz"), Err(KeyError::BadHex)));
    assert_eq!(format!("{:?}", key()), "AuditKey([redacted])");
}

#[test]
fn in_memory_log_chains_without_a_file() {
    let log = AuditLog::in_memory();
    log.append(rec(0));
    log.append(rec(1));
    assert_eq!(log.head().records, 2);
    assert!(log.path().is_none());
}

#[allow(dead_code)]
fn _paths_are_send_sync(p: PathBuf) -> impl Send + Sync {
    let log = AuditLog::in_memory();
    (p, log)
}

/// Prints one line of each kind (`cargo test example_lines -- --nocapture`); with
/// `AUDIT_EXAMPLE_OUT=<dir>` the log is kept there for `examples/verify_audit`.
#[test]
fn example_lines_of_each_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("AUDIT_EXAMPLE_OUT")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let path = dir.join("audit.jsonl");
    let _ = fs::remove_file(&path);
    let log = builder(&path).build().unwrap();
    let mut put = rec(1)
        .detail("directive", "debug")
        .detail("ttl_s", 900)
        .detail("previous", "info");
    put.method = "PUT".into();
    put.path = "/debug/log-level".into();
    put.ts = super::record::now_ts();
    log.append(put);
    for i in 0..3 {
        let mut r = rec(i);
        r.ts = super::record::now_ts();
        r.path = "/health/live".into();
        r.token_id = None;
        log.record(r, Folding::Always);
    }
    log.flush();
    log.inject_fault(Fault::Fail);
    let mut lost = rec(2);
    lost.ts = super::record::now_ts();
    log.append(lost);
    log.checkpoint();
    drop(log);
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"kind\":\"req")
        .unwrap();
    drop(builder(&path).build().unwrap());
    let text = fs::read_to_string(&path).unwrap();
    for kind in ["request", "summary", "gap", "checkpoint", "resumed"] {
        let l = text
            .lines()
            .find(|l| l.starts_with(&format!("{{\"kind\":\"{kind}\"")))
            .unwrap();
        println!("{l}");
    }
    println!("{}", verify(&path).unwrap());
}

fn strict(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    verify_audit_files_with(paths, Some(KEY), None, VerifyOptions::strict())
}

fn strict_problems(paths: &[PathBuf]) -> Vec<StrictProblem> {
    match strict(paths) {
        Err(VerifyError::Strict(p)) => p,
        other => panic!("expected a strict failure, got {other:?}"),
    }
}

#[test]
fn strict_verification_fails_on_a_missing_head_junk_wrong_order_gaps_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotation = Rotation::Size {
        max_bytes: 2048,
        keep: 10,
    };
    let log = builder(&path).rotation(rotation).build().unwrap();
    for i in 0..20 {
        log.append(rec(i));
    }
    drop(log);
    let files = rotated_files(&path);
    assert!(files.len() >= 3, "{files:?}");
    // Complete: strict passes.
    let report = strict(&files).unwrap();
    assert!(report.from_genesis);

    // The head deleted: the rest verifies, but not strictly.
    let without_head = files[1..].to_vec();
    let report = verify_audit_files(&without_head, Some(KEY), None).unwrap();
    assert!(!report.from_genesis);
    let p = strict_problems(&without_head);
    assert!(
        matches!(&p[..], [StrictProblem::MissingHead { first_seq, .. }] if *first_seq > 1),
        "{p:?}"
    );

    // Files in the wrong order: the oldest last starts a new chain.
    let mut wrong = files.clone();
    wrong.rotate_left(1);
    let p = strict_problems(&wrong);
    assert!(
        p.iter().any(|p| matches!(p, StrictProblem::Restart { .. }))
            && p.iter()
                .any(|p| matches!(p, StrictProblem::MissingHead { .. })),
        "{p:?}"
    );
    let err = strict(&wrong).unwrap_err().to_string();
    assert!(err.contains("a new chain starts here"), "{err}");

    // Junk appended to the last file.
    let last = files.last().unwrap().clone();
    let mut f = fs::OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(b"{\"kind\":\"request\",\"forged\":true}\n")
        .unwrap();
    drop(f);
    verify_audit_files(&files, Some(KEY), None).unwrap();
    let p = strict_problems(&files);
    assert!(
        matches!(&p[..], [StrictProblem::Junk { bytes, .. }] if *bytes > 10),
        "{p:?}"
    );

    // A gap (failed writes), and a resumed chain after a torn tail.
    let gapped = dir.path().join("gapped.jsonl");
    let log = builder(&gapped).build().unwrap();
    log.append(rec(0));
    log.inject_fault(Fault::Fail);
    log.append(rec(1));
    log.append(rec(2));
    drop(log);
    let p = strict_problems(std::slice::from_ref(&gapped));
    assert!(
        matches!(&p[..], [StrictProblem::Gap { count: 1, .. }]),
        "{p:?}"
    );
    let torn = dir.path().join("torn.jsonl");
    write_log(&torn, 3);
    let mut f = fs::OpenOptions::new().append(true).open(&torn).unwrap();
    f.write_all(b"{\"kind\":\"req").unwrap();
    drop(f);
    write_log(&torn, 1);
    let p = strict_problems(std::slice::from_ref(&torn));
    assert!(matches!(&p[..], [StrictProblem::Resumed { .. }]), "{p:?}");

    // A restart: a writer that found no earlier file, appended after another chain.
    let restarted = dir.path().join("restarted.jsonl");
    write_log(&restarted, 2);
    let other = dir.path().join("other.jsonl");
    write_log(&other, 2);
    let mut text = fs::read_to_string(&restarted).unwrap();
    text.push_str(&fs::read_to_string(&other).unwrap());
    fs::write(&restarted, text).unwrap();
    let p = strict_problems(std::slice::from_ref(&restarted));
    assert!(
        matches!(&p[..], [StrictProblem::Restart { at }] if at.line > 2),
        "{p:?}"
    );
}

#[test]
fn the_file_is_opened_without_following_links_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.jsonl");
    fs::write(&real, "").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = builder(&link).build().unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");

    let loose = dir.path().join("loose.jsonl");
    fs::write(&loose, "").unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o666)).unwrap();
    let err = builder(&loose).build().unwrap_err().to_string();
    assert!(
        err.contains("mode is 0666") && err.contains("chmod 600"),
        "{err}"
    );

    let err = super::file::check_owner_mode(u32::MAX - 1, 0o100600)
        .unwrap_err()
        .to_string();
    assert!(err.contains("owned by uid"), "{err}");
    builder(&real).build().unwrap();
}

#[test]
fn a_hung_writer_never_blocks_the_caller_and_a_full_queue_becomes_a_counted_gap() {
    // A FIFO that nobody reads: the audit thread's write blocks once the pipe is full.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let log = builder(&fifo).background_thread(true).build().unwrap();
    let n = super::queue::MAX_QUEUED_RECORDS + 2000;
    for i in 0..n {
        let _ = log.record(rec(i), Folding::Never);
    }
    // Every call returned; the queue holds at most its bound and the rest is counted once the
    // thread sees it. Read the FIFO: the writer resumes and writes the gap record.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || fs::read(&fifo).unwrap()
    });
    log.flush();
    let s = log.stats();
    assert!(s.queue_dropped > 0, "{s:?}");
    drop(log);
    let bytes = reader.join().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let gap = text
        .lines()
        .find(|l| l.contains("\"kind\":\"gap\""))
        .expect("a gap record");
    assert!(gap.contains("audit queue was full"), "{gap}");
    let gap: serde_json::Value = serde_json::from_str(gap).unwrap();
    assert_eq!(gap["count"].as_u64(), Some(s.queue_dropped), "{gap}");
}

#[test]
fn many_addresses_share_one_global_budget_and_ipv6_counts_per_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = builder(&path).build().unwrap();
    // One host rotating through its /64 is one client.
    for i in 0..2000u32 {
        let r = AuditRecord {
            client: format!("[2001:db8:1:2::{:x}]:443", i + 1),
            token_id: None,
            status: 401,
            outcome: Outcome::Denied,
            ..rec(0)
        };
        let _ = log.record(r, Folding::Repeats);
    }
    log.flush();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"2001:db8:1:2::/64\":1999"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"kind\":\"request\""))
            .count(),
        1
    );
    // 100 000 addresses, each sending one invented request: the global budget caps the bytes.
    let before = text.len();
    for i in 0..100_000u32 {
        let r = AuditRecord {
            client: format!("10.{}.{}.{}:1", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            token_id: None,
            status: 401,
            outcome: Outcome::Denied,
            ..rec(0)
        };
        let _ = log.record(r, Folding::Repeats);
    }
    drop(log);
    let report = verify(&path).unwrap();
    assert_eq!(
        report.folded_requests + report.kinds.request,
        2000 + 100_000
    );
    let size = fs::metadata(&path).unwrap().len() - before as u64;
    assert!(
        size <= super::fold::GLOBAL_BUDGET_BYTES + 64 * 1024,
        "{size} bytes for 100 000 addresses"
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"over_budget\":true") && l.contains("\"*\"")),
        "the rest counted for client *"
    );
}
