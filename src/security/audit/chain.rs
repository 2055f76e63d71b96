//! The chain: how a record's bytes and the previous hash make its hash, and how a line is
//! sealed and opened again.
//!
//! A line is `BODY` with `,"hash":"<64 hex>"` inserted before its closing `}`, where `BODY` is
//! the record's JSON object ending in `,"seq":N,"prev_hash":"<64 hex>"}`. Then
//!
//! ```text
//! keyed:    hash = hex(HMAC-SHA256(key, unhex(prev_hash) || BODY))
//! unkeyed:  hash = hex(SHA-256(unhex(prev_hash) || BODY))
//! ```
//!
//! The hash covers the exact bytes on disk (nothing is re-serialized to check it), so any edit
//! — a field, whitespace, an added key — changes it.

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::key::{AuditKey, HmacSha256};
use super::record::{AuditEntry, ChainFields};

/// The `prev_hash` of the first record of a chain: 64 zeros.
pub(super) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Computes chain hashes with or without a key.
#[derive(Clone)]
pub(crate) struct Chainer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Chainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chainer")
            .field("keyed", &self.keyed())
            .finish()
    }
}

impl Chainer {
    pub(crate) fn new(key: Option<&AuditKey>) -> Chainer {
        Chainer {
            mac: key.and_then(AuditKey::mac),
        }
    }

    /// For `verify`: any key length is accepted (HMAC takes any).
    pub(crate) fn from_bytes(key: Option<&[u8]>) -> Chainer {
        Chainer {
            mac: key.and_then(|k| <HmacSha256 as Mac>::new_from_slice(k).ok()),
        }
    }

    pub(crate) fn keyed(&self) -> bool {
        self.mac.is_some()
    }

    /// The hash of `body` chained to `prev_hash`; `None` if `prev_hash` is not 64 hex digits.
    pub(crate) fn hash(&self, prev_hash: &str, body: &[u8]) -> Option<String> {
        let mut prev = [0u8; 32];
        hex::decode_to_slice(prev_hash, &mut prev).ok()?;
        Some(match &self.mac {
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(&prev);
                mac.update(body);
                hex::encode(mac.finalize().into_bytes())
            }
            None => {
                let mut d = Sha256::new();
                d.update(prev);
                d.update(body);
                hex::encode(d.finalize())
            }
        })
    }

    /// Seals an entry's JSON object (`{"kind":…}`) as record `seq` after `prev_hash`:
    /// returns the line (with its `\n`) and the new hash.
    pub(crate) fn seal(
        &self,
        entry_json: &[u8],
        seq: u64,
        prev_hash: &str,
    ) -> Option<(Vec<u8>, String)> {
        let open = entry_json.strip_suffix(b"}")?;
        let mut body = Vec::with_capacity(entry_json.len() + 100 + SUFFIX_LEN);
        body.extend_from_slice(open);
        body.extend_from_slice(
            format!(",\"seq\":{seq},\"prev_hash\":\"{prev_hash}\"}}").as_bytes(),
        );
        let hash = self.hash(prev_hash, &body)?;
        body.pop();
        body.extend_from_slice(HASH_KEY);
        body.extend_from_slice(hash.as_bytes());
        body.extend_from_slice(b"\"}\n");
        Some((body, hash))
    }
}

/// A line taken apart: the parsed entry and its chain fields, and the bytes its hash covers.
#[derive(Debug, Clone)]
pub(crate) struct OpenedLine {
    pub(crate) entry: AuditEntry,
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) body: Vec<u8>,
}

impl OpenedLine {
    /// Whether the line's hash matches its bytes under `chainer`.
    pub(crate) fn hash_ok(&self, chainer: &Chainer) -> bool {
        chainer.hash(&self.prev_hash, &self.body).as_deref() == Some(self.hash.as_str())
    }
}

/// Splits a line (without its `\n`) into body and hash and parses the body.
pub(crate) fn open_line(line: &[u8]) -> Result<OpenedLine, String> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err("the line does not end with a `\"hash\":\"…\"}` field".into());
    }
    let cut = line.len() - SUFFIX_LEN;
    if &line[cut..cut + HASH_KEY.len()] != HASH_KEY {
        return Err("`hash` is not the line's last field".into());
    }
    let hash = &line[cut + HASH_KEY.len()..line.len() - 2];
    if !hash
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err("`hash` is not 64 lowercase hex digits".into());
    }
    let mut body = Vec::with_capacity(cut + 1);
    body.extend_from_slice(&line[..cut]);
    body.push(b'}');
    let fields: ChainFields =
        serde_json::from_slice(&body).map_err(|e| format!("not an audit record: {e}"))?;
    if fields.prev_hash.len() != 64 || hex::decode(&fields.prev_hash).is_err() {
        return Err("`prev_hash` is not 64 hex digits".into());
    }
    Ok(OpenedLine {
        entry: fields.entry,
        seq: fields.seq,
        prev_hash: fields.prev_hash,
        hash: String::from_utf8_lossy(hash).into_owned(),
        body,
    })
}
