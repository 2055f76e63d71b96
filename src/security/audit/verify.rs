//! Verification of an audit file or a rotated set, with the key and an optional checkpoint.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{open_line, Chainer, GENESIS_HASH};
use super::file::rotated_path;
use super::record::{AuditEntry, Checkpoint, ResumeReason};

/// A line of an audit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why verification failed. Every variant names the file and line where it can.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No file to verify.
    #[error("no audit file at {}", .0.display())]
    NoFiles(PathBuf),
    /// A line that is not a record and is not accounted for by a following `resumed`/`gap`.
    #[error(
        "{at}: not a valid audit record ({reason}), and no resumed/gap record accounts for it"
    )]
    Malformed {
        /// Its first line.
        at: Location,
        /// What is wrong with it.
        reason: String,
    },
    /// The hash does not match the line's bytes under the key given.
    #[error("{at}: hash does not match the record: it was edited, or the chain was re-hashed {hint}",
        hint = if *keyed { "without the key or with another key" } else { "(this check used no key: if the log is keyed, pass its key)" })]
    BadHash {
        /// The line.
        at: Location,
        /// Whether a key was given.
        keyed: bool,
    },
    /// A record says it is keyed when it verifies without a key, or the reverse.
    #[error("{at}: the record says keyed={claims_keyed} but verifies {how}: the chain was re-hashed",
        how = if *claims_keyed { "without a key" } else { "under the key" })]
    KeyedMismatch {
        /// The line.
        at: Location,
        /// What the record claims.
        claims_keyed: bool,
    },
    /// `prev_hash` is not the previous record's `hash`.
    #[error("{at}: prev_hash does not match the hash of the record before it ({previous}): a record was removed, inserted or reordered")]
    BrokenChain {
        /// The line.
        at: Location,
        /// The previous record.
        previous: Location,
    },
    /// `seq` does not follow the previous record's.
    #[error("{at}: seq is {found}, expected {expected}")]
    BadSequence {
        /// The line.
        at: Location,
        /// Previous `seq` + 1.
        expected: u64,
        /// What the line says.
        found: u64,
    },
    /// A `resumed`/`gap` record's `cut_bytes` does not match the bytes skipped before it.
    #[error("{at}: the record says {claimed} bytes were cut before it, but {actual} were")]
    BadCut {
        /// The line.
        at: Location,
        /// `cut_bytes`.
        claimed: u64,
        /// Unparsable bytes actually before it.
        actual: u64,
    },
    /// The files end before the checkpoint's record: the end was truncated.
    #[error("truncated: the checkpoint says {checkpoint_records} records, but the log ends at record {last_seq}{}",
        last.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    Truncated {
        /// The checkpoint's count.
        checkpoint_records: u64,
        /// The last `seq` found.
        last_seq: u64,
        /// The last record.
        last: Option<Location>,
    },
    /// The record at the checkpoint's position has another hash (or the hash is at another
    /// position).
    #[error(
        "{at}: record {seq} has hash {found}, the checkpoint says {expected} at record {records}"
    )]
    CheckpointMismatch {
        /// The line.
        at: Location,
        /// Its `seq`.
        seq: u64,
        /// Its hash.
        found: String,
        /// The checkpoint's head hash.
        expected: String,
        /// The checkpoint's count.
        records: u64,
    },
    /// Strict mode ([`VerifyOptions::strict`]): the log verified, but is not complete.
    #[error("strict: the log is not complete: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Strict(Vec<StrictProblem>),
    /// The checkpoint's record is older than the oldest file kept.
    #[error("cannot check the checkpoint: its record {records} is older than the oldest record kept ({first_seq})")]
    CheckpointRotatedAway {
        /// The checkpoint's count.
        records: u64,
        /// The first `seq` in the files.
        first_seq: u64,
    },
}

/// What strict verification refuses in a log that otherwise verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictProblem {
    /// The first record is not the chain's first (seq 1 after the genesis hash): the files
    /// before it were deleted or rotated away.
    MissingHead {
        /// The first record found.
        at: Location,
        /// Its `seq`.
        first_seq: u64,
    },
    /// Unparsable bytes at the end of a file that no record accounts for (junk appended, or a
    /// crash the writer has not resumed from yet).
    Junk {
        /// Where they start.
        at: Location,
        /// How many.
        bytes: u64,
    },
    /// A record starts a new chain after others: files in the wrong order, or a writer that
    /// found no earlier file.
    Restart {
        /// The record.
        at: Location,
    },
    /// Records lost to write errors or a full queue (`gap`) or to a truncation.
    Gap {
        /// The `gap` or `resumed` record.
        at: Location,
        /// Records lost.
        count: u64,
    },
    /// The chain resumed after a torn tail (a crash mid-write) or a truncation.
    Resumed {
        /// The `resumed` record.
        at: Location,
        /// Why.
        reason: ResumeReason,
    },
}

impl fmt::Display for StrictProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrictProblem::MissingHead { at, first_seq } => write!(
                f,
                "{at}: the log starts at record {first_seq}, not at the chain's start: earlier files are missing"
            ),
            StrictProblem::Junk { at, bytes } => write!(
                f,
                "{at}: {bytes} bytes that are not records and that no record accounts for"
            ),
            StrictProblem::Restart { at } => write!(
                f,
                "{at}: a new chain starts here (files out of order, or a writer that restarted without its earlier files)"
            ),
            StrictProblem::Gap { at, count } => write!(f, "{at}: {count} records lost"),
            StrictProblem::Resumed { at, reason } => {
                write!(f, "{at}: the chain resumed ({reason:?})")
            }
        }
    }
}

/// How to verify: [`VerifyOptions::default`] accepts what the writer accounted for (resumes,
/// gaps, rotated-away files, chain restarts, a torn tail); [`VerifyOptions::strict`] fails on
/// any of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Fail unless the log is complete: from the chain's start, no junk, no restart, no gap,
    /// no resume ([`VerifyError::Strict`]).
    pub strict: bool,
}

impl VerifyOptions {
    /// Strict verification.
    pub fn strict() -> VerifyOptions {
        VerifyOptions { strict: true }
    }
}

/// Records per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindCounts {
    /// `request` records.
    pub request: u64,
    /// `summary` records.
    pub summary: u64,
    /// `checkpoint` records.
    pub checkpoint: u64,
    /// `resumed` records.
    pub resumed: u64,
    /// `gap` records.
    pub gap: u64,
    /// `tls_reload` records.
    pub tls_reload: u64,
}

/// A `resumed` record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeNote {
    /// Where.
    pub at: Location,
    /// Why.
    pub reason: ResumeReason,
    /// Bytes skipped before it.
    pub cut_bytes: u64,
    /// For a truncation: records between the previous file's last and this one's `prev_hash`,
    /// lost with the truncated bytes.
    pub lost_records: u64,
}

/// A `gap` record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapNote {
    /// Where.
    pub at: Location,
    /// Records lost.
    pub count: u64,
    /// First lost record's time.
    pub first_ts: String,
    /// Last lost record's time.
    pub last_ts: String,
}

/// One file verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Records in it.
    pub records: u64,
    /// Its size.
    pub bytes: u64,
}

/// What [`verify_audit_log`] found. Everything it lists verified; the notes say what was
/// accounted for (resumes, gaps, torn tails not yet resumed, chain restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files, oldest first.
    pub files: Vec<FileSummary>,
    /// Records verified.
    pub records: u64,
    /// Records per kind.
    pub kinds: KindCounts,
    /// Requests counted by `summary` records.
    pub folded_requests: u64,
    /// Records lost: `gap` counts plus records lost in truncations.
    pub lost_records: u64,
    /// `resumed` records.
    pub resumes: Vec<ResumeNote>,
    /// `gap` records.
    pub gaps: Vec<GapNote>,
    /// Unparsable bytes at the end of a file that no record accounts for yet (a crash; the next
    /// start of the writer resumes after them), with their size.
    pub torn_tails: Vec<(Location, u64)>,
    /// Records that start a new chain (`seq` 1 after the genesis hash) after others: the writer
    /// found no earlier file when it started.
    pub chain_starts: Vec<Location>,
    /// `seq` of the first record; `from_genesis` when it is 1 after the genesis hash, else the
    /// files before it were rotated away and it is taken as the anchor.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub from_genesis: bool,
    /// `seq` and `hash` of the last record.
    pub head_seq: u64,
    /// See `head_seq` (64 zeros when empty).
    pub head_hash: String,
    /// Whether the check used a key. Without one it only detects accidental damage.
    pub keyed: bool,
    /// Where the checkpoint's record was found, if one was given.
    pub checkpoint_at: Option<Location>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kinds;
        write!(
            f,
            "ok: {} records in {} file(s) (request {}, summary {} folding {} requests, checkpoint {}, resumed {}, gap {}, tls_reload {}); head seq {} {}; {}",
            self.records,
            self.files.len(),
            k.request,
            k.summary,
            self.folded_requests,
            k.checkpoint,
            k.resumed,
            k.gap,
            k.tls_reload,
            self.head_seq,
            self.head_hash,
            if self.keyed { "keyed (HMAC-SHA256)" } else { "UNKEYED: detects accidents only, not forgery" },
        )?;
        match self.first_seq {
            Some(_) if self.from_genesis => write!(f, "; complete from genesis")?,
            Some(s) => write!(f, "; anchored at record {s} (earlier files rotated away)")?,
            None => {}
        }
        if self.lost_records > 0 {
            write!(f, "; {} records lost (gaps/truncation)", self.lost_records)?;
        }
        for r in &self.resumes {
            write!(
                f,
                "; {}: resumed ({:?}, {} bytes cut)",
                r.at, r.reason, r.cut_bytes
            )?;
        }
        for (at, n) in &self.torn_tails {
            write!(f, "; {at}: torn tail of {n} bytes, not yet resumed")?;
        }
        for at in &self.chain_starts {
            write!(f, "; {at}: a new chain starts")?;
        }
        if let Some(at) = &self.checkpoint_at {
            write!(f, "; checkpoint found at {at}")?;
        }
        Ok(())
    }
}

/// The files of a rotated set, oldest first: `base.N` … `base.1`, `base` (those that exist).
pub fn rotated_files(base: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|i| rotated_path(base, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if base.exists() {
        files.push(base.to_path_buf());
    }
    files
}

/// Verifies the rotated set at `base` ([`rotated_files`]): every record's keyed hash (with
/// `key`; plain SHA-256 without), the chain across files, `seq`, and that every unparsable
/// stretch is accounted for by a `resumed`/`gap` record. With a `checkpoint` (count + head
/// hash kept off the host), also that the log reaches it with that hash: a truncated end is
/// [`VerifyError::Truncated`].
pub fn verify_audit_log(
    base: &Path,
    key: Option<&[u8]>,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    verify_audit_log_with(base, key, checkpoint, VerifyOptions::default())
}

/// As [`verify_audit_log`], with options (strict mode).
pub fn verify_audit_log_with(
    base: &Path,
    key: Option<&[u8]>,
    checkpoint: Option<&Checkpoint>,
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let files = rotated_files(base);
    if files.is_empty() {
        return Err(VerifyError::NoFiles(base.to_path_buf()));
    }
    verify_audit_files_with(&files, key, checkpoint, options)
}

/// As [`verify_audit_files`], with options (strict mode).
pub fn verify_audit_files_with(
    paths: &[PathBuf],
    key: Option<&[u8]>,
    checkpoint: Option<&Checkpoint>,
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let (report, first_at) = verify_files(paths, key, checkpoint)?;
    if !options.strict {
        return Ok(report);
    }
    let mut problems = Vec::new();
    if let (Some(at), Some(first_seq), false) = (first_at, report.first_seq, report.from_genesis) {
        problems.push(StrictProblem::MissingHead { at, first_seq });
    }
    for at in &report.chain_starts {
        problems.push(StrictProblem::Restart { at: at.clone() });
    }
    for g in &report.gaps {
        problems.push(StrictProblem::Gap {
            at: g.at.clone(),
            count: g.count,
        });
    }
    for r in &report.resumes {
        problems.push(StrictProblem::Resumed {
            at: r.at.clone(),
            reason: r.reason,
        });
        if r.lost_records > 0 {
            problems.push(StrictProblem::Gap {
                at: r.at.clone(),
                count: r.lost_records,
            });
        }
    }
    for (at, bytes) in &report.torn_tails {
        problems.push(StrictProblem::Junk {
            at: at.clone(),
            bytes: *bytes,
        });
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(VerifyError::Strict(problems))
    }
}

/// As [`verify_audit_log`], for files named explicitly, oldest first (e.g. logrotate's
/// dated names).
pub fn verify_audit_files(
    paths: &[PathBuf],
    key: Option<&[u8]>,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    verify_files(paths, key, checkpoint).map(|(report, _)| report)
}

/// The verification; also returns where the first record is.
fn verify_files(
    paths: &[PathBuf],
    key: Option<&[u8]>,
    checkpoint: Option<&Checkpoint>,
) -> Result<(VerifyReport, Option<Location>), VerifyError> {
    let mut first_at = None;
    let chainer = Chainer::from_bytes(key);
    let mut report = VerifyReport {
        files: Vec::new(),
        records: 0,
        kinds: KindCounts::default(),
        folded_requests: 0,
        lost_records: 0,
        resumes: Vec::new(),
        gaps: Vec::new(),
        torn_tails: Vec::new(),
        chain_starts: Vec::new(),
        first_seq: None,
        from_genesis: false,
        head_seq: 0,
        head_hash: GENESIS_HASH.to_string(),
        keyed: chainer.keyed(),
        checkpoint_at: None,
    };
    let mut prev: Option<Location> = None;
    let mut same_seq: Option<(Location, u64, String)> = None;
    for path in paths {
        let io_err = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut buf = Vec::new();
        let (mut offset, mut line_no, mut records) = (0u64, 0usize, 0u64);
        // First unparsable line of the current stretch: where, its start offset, why.
        let mut junk: Option<(Location, u64, String)> = None;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let start = offset;
            offset += n as u64;
            let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let at = Location {
                file: path.clone(),
                line: line_no,
            };
            let line = match open_line(content) {
                Ok(l) => l,
                Err(reason) => {
                    if junk.is_none() {
                        let reason = if content.is_empty() {
                            "empty line".into()
                        } else {
                            reason
                        };
                        junk = Some((at, start, reason));
                    }
                    continue;
                }
            };
            if !line.hash_ok(&chainer) {
                return Err(VerifyError::BadHash {
                    at,
                    keyed: chainer.keyed(),
                });
            }
            let claims_keyed = match &line.entry {
                AuditEntry::Checkpoint(c) => Some(c.keyed),
                AuditEntry::Resumed(r) => Some(r.keyed),
                _ => None,
            };
            if let Some(claims_keyed) = claims_keyed.filter(|k| *k != chainer.keyed()) {
                return Err(VerifyError::KeyedMismatch { at, claims_keyed });
            }
            let claimed_cut = match &line.entry {
                AuditEntry::Resumed(r) => r.cut_bytes,
                AuditEntry::Gap(g) => g.cut_bytes,
                _ => 0,
            };
            let actual_cut = junk.as_ref().map_or(0, |(_, s, _)| start - s);
            if claimed_cut != actual_cut {
                return Err(match junk.take() {
                    Some((jat, _, reason)) if claimed_cut == 0 => {
                        VerifyError::Malformed { at: jat, reason }
                    }
                    _ => VerifyError::BadCut {
                        at,
                        claimed: claimed_cut,
                        actual: actual_cut,
                    },
                });
            }
            junk = None;
            let mut lost_in_truncation = 0;
            match &prev {
                None => {
                    report.first_seq = Some(line.seq);
                    first_at = Some(at.clone());
                    report.from_genesis = line.seq == 1 && line.prev_hash == GENESIS_HASH;
                }
                Some(_) if line.prev_hash == report.head_hash => {
                    if line.seq != report.head_seq + 1 {
                        return Err(VerifyError::BadSequence {
                            at,
                            expected: report.head_seq + 1,
                            found: line.seq,
                        });
                    }
                }
                Some(p) => {
                    let truncated = matches!(&line.entry, AuditEntry::Resumed(r) if r.reason == ResumeReason::Truncated);
                    if line.seq == 1 && line.prev_hash == GENESIS_HASH {
                        report.chain_starts.push(at.clone());
                    } else if truncated && line.seq > report.head_seq {
                        lost_in_truncation = line.seq - 1 - report.head_seq;
                    } else {
                        return Err(VerifyError::BrokenChain {
                            at,
                            previous: p.clone(),
                        });
                    }
                }
            }
            match &line.entry {
                AuditEntry::Request(_) => report.kinds.request += 1,
                AuditEntry::Summary(s) => {
                    report.kinds.summary += 1;
                    report.folded_requests += s.count;
                }
                AuditEntry::Checkpoint(_) => report.kinds.checkpoint += 1,
                AuditEntry::Resumed(r) => {
                    report.kinds.resumed += 1;
                    report.lost_records += lost_in_truncation;
                    report.resumes.push(ResumeNote {
                        at: at.clone(),
                        reason: r.reason,
                        cut_bytes: r.cut_bytes,
                        lost_records: lost_in_truncation,
                    });
                }
                AuditEntry::TlsReload(_) => report.kinds.tls_reload += 1,
                AuditEntry::Gap(g) => {
                    report.kinds.gap += 1;
                    report.lost_records += g.count;
                    report.gaps.push(GapNote {
                        at: at.clone(),
                        count: g.count,
                        first_ts: g.first_ts.clone(),
                        last_ts: g.last_ts.clone(),
                    });
                }
            }
            if let Some(cp) = checkpoint {
                if line.hash == cp.head_hash {
                    if line.seq != cp.records {
                        return Err(VerifyError::CheckpointMismatch {
                            at,
                            seq: line.seq,
                            found: line.hash,
                            expected: cp.head_hash.clone(),
                            records: cp.records,
                        });
                    }
                    report.checkpoint_at = Some(at.clone());
                } else if line.seq == cp.records {
                    same_seq = Some((at.clone(), line.seq, line.hash.clone()));
                }
            }
            report.records += 1;
            records += 1;
            report.head_seq = line.seq;
            report.head_hash = line.hash;
            prev = Some(at);
        }
        if let Some((at, start, _)) = junk {
            report.torn_tails.push((at, offset - start));
        }
        report.files.push(FileSummary {
            path: path.clone(),
            records,
            bytes: offset,
        });
    }
    if let (Some(cp), None) = (checkpoint, &report.checkpoint_at) {
        if let Some((at, seq, found)) = same_seq {
            return Err(VerifyError::CheckpointMismatch {
                at,
                seq,
                found,
                expected: cp.head_hash.clone(),
                records: cp.records,
            });
        }
        match report.first_seq {
            Some(first) if first > cp.records => {
                return Err(VerifyError::CheckpointRotatedAway {
                    records: cp.records,
                    first_seq: first,
                })
            }
            _ => {
                return Err(VerifyError::Truncated {
                    checkpoint_records: cp.records,
                    last_seq: report.head_seq,
                    last: prev,
                })
            }
        }
    }
    Ok((report, first_at))
}
