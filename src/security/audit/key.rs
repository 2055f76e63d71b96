//! The chain key: a host-provided secret, never written, logged or printed.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256, the keyed chain's MAC.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Fewer than [`AuditKey::MIN_LEN`] bytes after decoding.
    #[error("the audit key is {len} bytes long; it needs at least {min} (e.g. `openssl rand -hex 32`)", min = AuditKey::MIN_LEN)]
    TooShort {
        /// Length of the decoded key.
        len: usize,
    },
    /// `hex:` prefix followed by something that is not hex.
    #[error("the audit key starts with `hex:` but the rest is not an even number of hex digits")]
    BadHex,
    /// The environment variable is set but not valid UTF-8.
    #[error("{var} is not valid UTF-8", var = AuditKey::ENV)]
    NotUnicode,
}

/// The secret key of the audit chain (HMAC-SHA256).
///
/// Its bytes are zeroed on drop; `Debug` prints `AuditKey([redacted])`; no `Display`, no
/// `Serialize`. prodbg never writes it anywhere: it lives in memory only.
#[derive(Clone)]
pub struct AuditKey {
    bytes: Vec<u8>,
}

impl AuditKey {
    /// The environment variable [`AuditKey::from_env`] reads.
    pub const ENV: &'static str = "PRODBG_AUDIT_KEY";
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A key from raw bytes (at least [`Self::MIN_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<AuditKey, KeyError> {
        let key = AuditKey {
            bytes: bytes.into(),
        };
        if key.bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: key.bytes.len(),
            });
        }
        Ok(key)
    }

    /// Parses the text form used by `PRODBG_AUDIT_KEY` (surrounding whitespace is ignored):
    /// - `hex:<digits>`: hex-decoded;
    /// - otherwise, 32 or more hex digits (an even number, nothing else): hex-decoded, so
    ///   `openssl rand -hex 32` output works as is;
    /// - otherwise: the text's UTF-8 bytes, used raw.
    ///
    /// The writer and `verify` both use this function, so a key given the same way to both
    /// always matches.
    pub fn parse(text: &str) -> Result<AuditKey, KeyError> {
        let text = text.trim();
        if let Some(h) = text.strip_prefix("hex:") {
            return hex::decode(h)
                .map_err(|_| KeyError::BadHex)
                .and_then(AuditKey::new);
        }
        let all_hex = text.len() >= 32
            && text.len().is_multiple_of(2)
            && text.bytes().all(|b| b.is_ascii_hexdigit());
        if all_hex {
            if let Ok(bytes) = hex::decode(text) {
                return AuditKey::new(bytes);
            }
        }
        AuditKey::new(text.as_bytes().to_vec())
    }

    /// Reads [`Self::ENV`] with [`Self::parse`]. Unset or empty: `Ok(None)` (unkeyed chain).
    pub fn from_env() -> Result<Option<AuditKey>, KeyError> {
        match std::env::var(Self::ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => AuditKey::parse(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::NotUnicode),
        }
    }

    /// The key's bytes, e.g. for [`verify_audit_log`](super::verify_audit_log).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn mac(&self) -> Option<HmacSha256> {
        <HmacSha256 as Mac>::new_from_slice(&self.bytes).ok()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

impl Drop for AuditKey {
    fn drop(&mut self) {
        for b in self.bytes.iter_mut() {
            // SAFETY: `b` is a valid, exclusive reference to a byte of our own buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}
