//! Recording field values into a compact, capped buffer, and reading them back redacted.
//!
//! A buffer is a sequence of `[field index: u8][kind: u8][len: u16 LE, top bit = truncated]
//! [payload]`: text for strings and formatted values, the raw 8 bytes of integers and floats
//! (formatted only when a report reads them), one byte for booleans. A later entry for the same
//! field (from `Span::record`) replaces an earlier one when read. Names are not stored: they
//! are `&'static str` in the callsite's metadata.

use std::fmt::{self, Write as _};

use serde::ser::{Serialize, SerializeMap, Serializer};
use tracing::field::FieldSet;
use tracing::field::{Field, Visit};

use super::options::RedactFn;
use crate::security::redact::redact_env;
use crate::stack::labels::{self, MAX_LABEL_VALUE_BYTES};

/// Longest single field value kept, in bytes; longer values are cut at a character boundary
/// and shown ending in `…`.
pub const MAX_VALUE_BYTES: usize = 256;
const TRUNCATED: u16 = 0x8000;
const HEADER: usize = 4;
const KIND_STR: u8 = 0;
const KIND_U64: u8 = 1;
const KIND_I64: u8 = 2;
const KIND_F64: u8 = 3;
const KIND_BOOL: u8 = 4;
/// Marks a field index as "none".
pub(crate) const NO_FIELD: u8 = u8::MAX;

/// Field values as a report shows them: redacted, in recording order, as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields(pub(crate) Vec<(&'static str, String)>);

impl Fields {
    /// The value of field `name`, if recorded.
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(' ')?;
            }
            write!(f, "{k}={v:?}")?;
        }
        Ok(())
    }
}

/// Which fields of a callsite matter beyond being recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Special {
    /// Indices of the chosen label fields.
    pub(crate) label: [u8; 2],
    /// Index of a field named `error`.
    pub(crate) error: u8,
    /// Index of a field named `otel.status_code`.
    pub(crate) otel_status: u8,
}

impl Special {
    /// Whether any field of the callsite is special.
    pub(crate) fn any(&self) -> bool {
        self.label != [NO_FIELD; 2] || self.error != NO_FIELD || self.otel_status != NO_FIELD
    }

    pub(crate) const NONE: Special = Special {
        label: [NO_FIELD; 2],
        error: NO_FIELD,
        otel_status: NO_FIELD,
    };
}

/// A [`Visit`] that appends to a buffer of at most `cap` bytes.
pub(crate) struct Recorder<'a> {
    buf: &'a mut Vec<u8>,
    cap: usize,
    keep: bool,
    special: Special,
    /// Bit `i` set: field `i` (< 64) is special.
    mask: u64,
    /// Label value ids found (0 = field absent).
    pub(crate) labels: [u16; 2],
    /// An `error` field, or `otel.status_code = "ERROR"`, was seen.
    pub(crate) error: bool,
    /// Values cut short or left out for lack of room.
    pub(crate) truncated: u32,
}

/// Bit `idx` of a field mask; 0 for indices past 63 (and for [`NO_FIELD`]). Branch-free.
#[inline]
fn bit(idx: u8) -> u64 {
    (1u64 << (idx & 63)) & ((idx < 64) as u64).wrapping_neg()
}

/// Copies `n` bytes from `src` to `dst`, inline for the short values fields usually hold
/// (a call to `memcpy` costs more than the copy).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes, and they must not overlap.
#[inline(always)]
unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY (all branches): every read is within `src[..n]` and every write within
    // `dst[..n]` (the two 8- or 4-byte words overlap when `n` is not a multiple of the word).
    unsafe {
        if n > 16 {
            std::ptr::copy_nonoverlapping(src, dst, n);
        } else if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
    }
}

impl<'a> Recorder<'a> {
    /// `keep`: whether values stay in `buf` (for reports); otherwise only the special fields
    /// are looked at and nothing is written.
    #[inline]
    pub(crate) fn new(buf: &'a mut Vec<u8>, cap: usize, keep: bool, special: Special) -> Self {
        let mask = bit(special.label[0])
            | bit(special.label[1])
            | bit(special.error)
            | bit(special.otel_status);
        Recorder {
            buf,
            cap,
            keep,
            special,
            mask,
            labels: [0; 2],
            error: false,
            truncated: 0,
        }
    }

    #[inline]
    fn is_special(&self, idx: usize) -> bool {
        if idx < 64 {
            self.mask >> idx & 1 != 0
        } else {
            let i = idx.min(NO_FIELD as usize - 1) as u8;
            self.special.label.contains(&i)
                || i == self.special.error
                || i == self.special.otel_status
        }
    }

    /// Looks at the value of a special field.
    #[inline(never)]
    fn special_value(&mut self, field: &Field, value: &str) {
        let idx = field.index().min(NO_FIELD as usize - 1) as u8;
        if idx == self.special.error {
            self.error = true;
        }
        if idx == self.special.otel_status && value.eq_ignore_ascii_case("error") {
            self.error = true;
        }
        for k in 0..2 {
            if self.special.label[k] == idx {
                self.labels[k] = labels::value_id(field.name(), value);
            }
        }
    }

    /// Room left for one value, in bytes; counts a value left out when there is none.
    #[inline]
    fn room(&mut self) -> usize {
        let room = self
            .cap
            .saturating_sub(self.buf.len() + HEADER)
            .min(MAX_VALUE_BYTES);
        if room == 0 {
            self.truncated += 1;
        }
        room
    }

    /// Makes room for `extra` more bytes without letting the capacity grow past the byte cap
    /// (plus one entry header): doubling, capped.
    #[inline]
    fn grow(&mut self, extra: usize) {
        let len = self.buf.len();
        if self.buf.capacity() - len < extra {
            let want = (len + extra)
                .max(self.buf.capacity() * 2)
                .min(self.cap + HEADER + 8)
                .max(len + extra);
            self.buf.reserve_exact(want - len);
        }
    }

    /// Appends one entry.
    #[inline]
    fn push(&mut self, idx: u8, kind: u8, hdr: u16, payload: &[u8]) {
        let n = payload.len();
        self.grow(HEADER + n);
        let len = self.buf.len();
        let [h0, h1] = hdr.to_le_bytes();
        // SAFETY: `grow` made room for `HEADER + n` more bytes, all written here before
        // `set_len` exposes them; `payload` is not in `buf` (which is borrowed mutably).
        unsafe {
            let p = self.buf.as_mut_ptr().add(len);
            p.cast::<[u8; HEADER]>().write([idx, kind, h0, h1]);
            copy_short(payload.as_ptr(), p.add(HEADER), n);
            self.buf.set_len(len + HEADER + n);
        }
    }

    /// Appends a whole entry in place when it needs nothing else: `keep`, whole
    /// (`0 < payload.len() + HEADER <= cap - len`, payload at most [`MAX_VALUE_BYTES`]) and
    /// within the buffer's capacity. Returns whether it did; otherwise the caller takes the
    /// general path, which handles every case. Whether the field is special is the caller's
    /// business.
    #[inline(always)]
    fn try_put_fast(&mut self, field: &Field, kind: u8, payload: &[u8]) -> bool {
        let n = payload.len();
        let len = self.buf.len();
        if !self.keep
            || n > MAX_VALUE_BYTES
            || len + HEADER + n.max(1) > self.cap
            || self.buf.capacity() - len < HEADER + n
        {
            return false;
        }
        let [h0, h1] = (n as u16).to_le_bytes();
        // SAFETY: the capacity check above leaves room for `HEADER + n` more bytes, all written
        // here before `set_len` exposes them; `payload` is not in `buf` (borrowed mutably).
        unsafe {
            let p = self.buf.as_mut_ptr().add(len);
            p.cast::<[u8; HEADER]>().write([index(field), kind, h0, h1]);
            copy_short(payload.as_ptr(), p.add(HEADER), n);
            self.buf.set_len(len + HEADER + n);
        }
        true
    }

    #[inline(never)]
    fn put_str(&mut self, field: &Field, value: &str) {
        let special = self.is_special(field.index());
        if self.keep {
            let room = self.room();
            if room > 0 {
                // A value about to be cut is redacted whole first: cut first, a URL ending
                // before its `@` would show its password as a host.
                let redacted;
                let whole = if value.len() > room {
                    redacted = redact_env(field.name(), value);
                    redacted.as_str()
                } else {
                    value
                };
                let cut = whole.len() > room;
                let v = labels::truncate(whole, room);
                let hdr = v.len() as u16 | if cut { TRUNCATED } else { 0 };
                self.push(index(field), KIND_STR, hdr, v.as_bytes());
                if cut {
                    self.truncated += 1;
                }
            }
        }
        if special {
            self.special_value(field, value);
        }
    }

    /// A number or boolean: a plain one kept whole in place, anything else by [`put_raw`].
    ///
    /// [`put_raw`]: Self::put_raw
    #[inline(always)]
    fn record_raw(&mut self, field: &Field, kind: u8, bits: u64) {
        let special = self.is_special(field.index());
        if special || !self.keep {
            if special {
                self.put_raw(field, kind, bits);
            }
        } else if !self.try_put_fast(field, kind, &bits.to_le_bytes()) {
            self.put_raw(field, kind, bits);
        }
    }

    /// A number or boolean: stored raw, formatted when read (or now, for a special field).
    #[inline(never)]
    fn put_raw(&mut self, field: &Field, kind: u8, bits: u64) {
        let special = self.is_special(field.index());
        if self.keep {
            if self.cap >= self.buf.len() + HEADER + 8 {
                let [h0, h1] = 8u16.to_le_bytes();
                self.grow(HEADER + 8);
                let len = self.buf.len();
                // SAFETY: `reserve` made room for the 12 bytes written before `set_len`.
                unsafe {
                    let p = self.buf.as_mut_ptr().add(len);
                    p.cast::<[u8; HEADER]>().write([index(field), kind, h0, h1]);
                    p.add(HEADER).cast::<u64>().write_unaligned(bits.to_le());
                    self.buf.set_len(len + HEADER + 8);
                }
            } else {
                self.truncated += 1;
            }
        }
        if special {
            let mut tmp = StackStr::new();
            let _ = write_raw(&mut tmp, kind, bits);
            self.special_value(field, tmp.as_str());
        }
    }

    fn put_fmt(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let special = self.is_special(field.index());
        if !self.keep {
            if special {
                let mut tmp = StackStr::new();
                let _ = tmp.write_fmt(value);
                self.special_value(field, tmp.as_str());
            }
            return;
        }
        let room = self.room();
        if room == 0 {
            return;
        }
        let start = self.buf.len();
        self.grow(HEADER + room);
        self.buf.extend_from_slice(&[index(field), KIND_STR, 0, 0]);
        let mut w = Bounded {
            buf: self.buf,
            limit: start + HEADER + room,
            cut: false,
        };
        let _ = w.write_fmt(value);
        let mut cut = w.cut;
        if cut {
            // Redacted whole before it is cut (see `put_str`): formatted again, up to a bound.
            let mut full = String::new();
            let capped = fmt::Write::write_fmt(
                &mut Capped {
                    out: &mut full,
                    limit: MAX_REDACTED_BYTES,
                },
                value,
            );
            let redacted = redact_env(field.name(), &full);
            cut = capped.is_err() || redacted.len() > room;
            self.buf.truncate(start + HEADER);
            self.buf
                .extend_from_slice(labels::truncate(&redacted, room).as_bytes());
        }
        let n = self.buf.len() - start - HEADER;
        let hdr = n as u16 | if cut { TRUNCATED } else { 0 };
        self.buf[start + 2..start + HEADER].copy_from_slice(&hdr.to_le_bytes());
        if cut {
            self.truncated += 1;
        }
        if special {
            // SAFETY: `Bounded` only appends whole `&str`s or prefixes cut at char boundaries.
            let v = unsafe { std::str::from_utf8_unchecked(&self.buf[start + HEADER..]) };
            let mut tmp = StackStr::new();
            let _ = tmp.write_str(v);
            self.special_value(field, tmp.as_str());
        }
    }
}

fn index(field: &Field) -> u8 {
    field.index().min(NO_FIELD as usize - 1) as u8
}

fn write_raw(w: &mut impl fmt::Write, kind: u8, bits: u64) -> fmt::Result {
    match kind {
        KIND_U64 => write!(w, "{bits}"),
        KIND_I64 => write!(w, "{}", bits as i64),
        KIND_F64 => write!(w, "{}", f64::from_bits(bits)),
        _ => w.write_str(if bits != 0 { "true" } else { "false" }),
    }
}

/// A string of at most [`MAX_LABEL_VALUE_BYTES`] on the stack, cut at a character boundary.
struct StackStr {
    buf: [u8; MAX_LABEL_VALUE_BYTES],
    len: usize,
}

impl StackStr {
    fn new() -> StackStr {
        StackStr {
            buf: [0; MAX_LABEL_VALUE_BYTES],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // SAFETY: only whole `&str`s or prefixes cut at char boundaries are copied in.
        unsafe { std::str::from_utf8_unchecked(&self.buf[..self.len]) }
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_LABEL_VALUE_BYTES - self.len;
        let v = labels::truncate(s, room);
        self.buf[self.len..self.len + v.len()].copy_from_slice(v.as_bytes());
        self.len += v.len();
        if v.len() < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// How much of a formatted value that will be cut is formatted again to be redacted whole.
const MAX_REDACTED_BYTES: usize = 16 * 1024;

/// Appends to a string up to `limit` bytes, cutting at a character boundary.
struct Capped<'a> {
    out: &'a mut String,
    limit: usize,
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.out.len());
        self.out.push_str(labels::truncate(s, room));
        if s.len() > room {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Appends to a buffer up to `limit`, cutting at a character boundary.
struct Bounded<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
    cut: bool,
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.extend_from_slice(s.as_bytes());
            return Ok(());
        }
        self.buf
            .extend_from_slice(labels::truncate(s, room).as_bytes());
        self.cut = true;
        Err(fmt::Error)
    }
}

impl Visit for Recorder<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.keep {
            if self.is_special(field.index()) {
                self.special_value(field, value);
            }
        } else if !self.try_put_fast(field, KIND_STR, value.as_bytes()) {
            self.put_str(field, value);
        } else if self.is_special(field.index()) {
            self.special_value(field, value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_raw(field, KIND_U64, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_raw(field, KIND_I64, value as u64);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_raw(field, KIND_F64, value.to_bits());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_raw(field, KIND_BOOL, value as u64);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_fmt(field, format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_fmt(field, format_args!("{value:?}"));
    }
}

/// Reads a buffer back: one entry per field (the last recorded value wins), each redacted with
/// the rules of `/debug/process` (`security::redact::redact_env`: by field name, then by
/// value) and then by the host's extra rule, if any; cut values end in `…`.
pub(crate) fn decode(buf: &[u8], names: &FieldSet, redact: Option<RedactFn>) -> Fields {
    let mut out: Vec<(u8, &'static str, String)> = Vec::new();
    let mut i = 0;
    while i + HEADER <= buf.len() {
        let (idx, kind) = (buf[i], buf[i + 1]);
        let hdr = u16::from_le_bytes([buf[i + 2], buf[i + 3]]);
        let len = (hdr & !TRUNCATED) as usize;
        let end = (i + HEADER + len).min(buf.len());
        let payload = &buf[i + HEADER..end];
        i = end;
        let raw = if kind == KIND_STR {
            String::from_utf8_lossy(payload).into_owned()
        } else {
            let mut b = [0u8; 8];
            b[..payload.len().min(8)].copy_from_slice(&payload[..payload.len().min(8)]);
            let mut s = String::new();
            let _ = write_raw(&mut s, kind, u64::from_le_bytes(b));
            s
        };
        let Some(field) = names.iter().nth(idx as usize) else {
            continue;
        };
        let mut value = redact_env(field.name(), &raw);
        if let Some(extra) = redact {
            value = extra(field.name(), &value);
        }
        if hdr & TRUNCATED != 0 {
            value.push('…');
        }
        match out.iter_mut().find(|(k, _, _)| *k == idx) {
            Some(e) => e.2 = value,
            None => out.push((idx, field.name(), value)),
        }
    }
    Fields(out.into_iter().map(|(_, k, v)| (k, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::{copy_short, decode, Recorder, Special, MAX_VALUE_BYTES};
    use tracing::callsite::{Callsite, Identifier};
    use tracing::field::{FieldSet, Visit};
    use tracing::metadata::Kind;
    use tracing::subscriber::Interest;
    use tracing::{Level, Metadata};

    struct Site;
    impl Callsite for Site {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &META
        }
    }
    static SITE: Site = Site;
    static META: Metadata<'static> = Metadata::new(
        "cut",
        "prodbg::test",
        Level::INFO,
        None,
        None,
        None,
        FieldSet::new(&["url", "message"], Identifier(&SITE)),
        Kind::EVENT,
    );

    struct Shown(String);
    impl std::fmt::Debug for Shown {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    /// A value longer than the cut is redacted whole first: a URL whose password runs past
    /// the cut would otherwise end before its `@` and show the password as a host.
    #[test]
    fn values_are_redacted_before_they_are_cut() {
        let password = "Hunter2-".repeat(40);
        let url = format!("postgres://app:{password}@db:5432/app");
        let text = format!("connecting to {url} failed, retrying {}", "x".repeat(300));
        assert!(url.find('@').unwrap() > MAX_VALUE_BYTES);
        let fields = META.fields();
        let mut buf = Vec::new();
        let mut rec = Recorder::new(&mut buf, 4096, true, Special::NONE);
        rec.record_str(&fields.field("url").unwrap(), &url);
        rec.record_debug(&fields.field("message").unwrap(), &Shown(text));
        assert_eq!(rec.truncated, 1, "the message is cut");
        let shown = decode(&buf, fields, None);
        assert_eq!(
            shown.get("url"),
            Some("postgres://app:[redacted]@db:5432/app")
        );
        let message = shown.get("message").unwrap();
        assert!(
            message.starts_with("connecting to postgres://app:[redacted]@db:5432/app failed")
                && message.ends_with('…'),
            "{message}"
        );
        assert!(!message.contains("Hunter2"), "{message}");
    }

    #[test]
    fn copy_short_copies_every_length_exactly() {
        let src: Vec<u8> = (1..=64).collect();
        for n in 0..=40 {
            let mut dst = [0u8; 48];
            // SAFETY: `src` has 64 bytes, `dst` 48, both at least `n`; distinct buffers.
            unsafe { copy_short(src.as_ptr(), dst.as_mut_ptr(), n) };
            assert_eq!(&dst[..n], &src[..n], "n = {n}");
            assert!(
                dst[n..].iter().all(|&b| b == 0),
                "n = {n}: wrote past the end"
            );
        }
    }
}
