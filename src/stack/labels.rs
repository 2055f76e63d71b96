//! Span labels for the profilers: per thread, the innermost entered span's name and up to two
//! chosen field values ([`Options::label_fields`](crate::layer::Options::label_fields), default
//! `route` and `http.route`; a span without one inherits the enclosing entered span's value),
//! readable from a signal handler.
//!
//! The layer writes one packed `u64` per thread on every span enter and exit (one relaxed
//! atomic store; nothing else happens when no profile runs). The CPU and wall-clock profilers
//! read it —
//!
//! * in the `SIGPROF` handler (or a wall-clock sampler, for each thread it samples):
//!   `let word = labels::current_labels_for(tid).to_bits();` and store the `u64` with the
//!   sample ([`current_labels_for`] is async-signal-safe: atomics from a static table only);
//! * after the profile, outside the handler: `Labels::from_bits(word).resolve().pairs()`
//!   gives the pprof labels, e.g. `[("span", "request"), ("route", "/users/:id")]`.
//!
//! `Labels::NONE` / [`Labels::is_empty`]: the thread was in no tracked span (or the layer is
//! not installed). Strings live in bounded process-wide tables that are never freed
//! ([`MAX_LABEL_NAMES`] names, [`MAX_LABEL_VALUES`] values of at most
//! [`MAX_LABEL_VALUE_BYTES`] bytes; past them, [`OTHER`]), so a word stored at any time can be
//! resolved later. At most [`MAX_LABELLED_THREADS`] threads carry labels at once.

mod intern;
mod slots;

use serde::Serialize;

pub(crate) use intern::MAX_LABEL_VALUE_BYTES;
pub(crate) use intern::{hash_bytes, name_id, truncate, value_id, ID_NONE, ID_OTHER};
pub(crate) use slots::current_labels_for;
pub(crate) use slots::{claim, release, write};

/// The labels a thread carried at one instant: ids into the process-wide label tables.
///
/// Word layout: bits 0–15 span name id, 16–31 and 32–47 the ids of the first and second chosen
/// field values (0 = absent, 1 = [`OTHER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Labels(u64);

impl Labels {
    /// No span entered.
    pub(crate) const NONE: Labels = Labels(0);

    pub(crate) const fn from_word(w: u64) -> Labels {
        Labels(w)
    }

    pub(crate) fn pack(name: u16, values: [u16; 2]) -> u64 {
        name as u64 | (values[0] as u64) << 16 | (values[1] as u64) << 32
    }

    /// The packed word, e.g. to store in a sample table (async-signal-safe).
    pub(crate) const fn to_bits(self) -> u64 {
        self.0
    }

    /// Labels from a word [`to_bits`](Self::to_bits) returned.
    pub(crate) const fn from_bits(bits: u64) -> Labels {
        Labels(bits)
    }

    /// Whether the thread was in no span.
    pub(crate) const fn is_empty(self) -> bool {
        self.0 & 0xFFFF == 0
    }

    /// The strings behind the ids. Not for a signal handler: it may read the tables' bookkeeping,
    /// though it neither locks nor allocates beyond the returned `Vec`.
    pub(crate) fn resolve(self) -> ResolvedLabels {
        let span = intern::name(self.0 as u16);
        let mut fields = Vec::new();
        for (k, shift) in [16, 32].into_iter().enumerate() {
            if let Some((field, value)) = intern::value((self.0 >> shift) as u16) {
                fields.push(LabelField {
                    slot: k as u8,
                    field,
                    value,
                });
            }
        }
        ResolvedLabels { span, fields }
    }
}

/// A [`Labels`] word turned into strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ResolvedLabels {
    /// The innermost entered span's name (the pprof `span` label); `None` outside any span.
    pub(crate) span: Option<&'static str>,
    /// The chosen field values that span (or, when it lacks them, nothing) recorded.
    pub(crate) fields: Vec<LabelField>,
}

/// One chosen field's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LabelField {
    /// Which of [`Options::label_fields`](crate::layer::Options::label_fields) it is (0 or 1).
    pub(crate) slot: u8,
    /// The field name (the pprof label key); `None` when the value is [`OTHER`].
    pub(crate) field: Option<&'static str>,
    /// The value, at most [`MAX_LABEL_VALUE_BYTES`] bytes, or [`OTHER`] past the table's bound.
    pub(crate) value: &'static str,
}

impl ResolvedLabels {
    /// The labels as pprof `(key, value)` string pairs: `("span", name)` first, then one pair
    /// per chosen field (key `"label"` for a value past the table's bound).
    pub(crate) fn pairs(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::with_capacity(1 + self.fields.len());
        if let Some(span) = self.span {
            out.push(("span", span));
        }
        for f in &self.fields {
            out.push((f.field.unwrap_or("label"), f.value));
        }
        out
    }
}
