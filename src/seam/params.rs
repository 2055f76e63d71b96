//! Query-string parsing with bounds: unknown keys, repeated keys and out-of-range values are
//! 400s whose message says what is allowed.

use std::ops::RangeInclusive;

use super::ApiError;

/// Longest query string accepted, in bytes.
pub(crate) const MAX_QUERY_LEN: usize = 2048;

/// A parsed query string, checked against the keys an endpoint accepts.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query`; every key must be in `allowed` and appear at most once.
    pub(crate) fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad_parameter(format!(
                "the query string is {} bytes long; at most {MAX_QUERY_LEN} are accepted",
                query.len()
            )));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::bad_parameter(if allowed.is_empty() {
                    format!(
                        "unknown parameter {:?}: this endpoint takes no parameters",
                        clip(&k)
                    )
                } else {
                    format!(
                        "unknown parameter {:?}; allowed: {}",
                        clip(&k),
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(ApiError::bad_parameter(format!(
                    "parameter {k:?} is given more than once; give it once"
                )));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// The raw value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An integer in `range`, or `default` when absent.
    pub(crate) fn u64_in(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let out_of_range = || {
            ApiError::bad_parameter(format!(
                "{key}={:?} is not allowed: give an integer from {} to {}",
                clip(raw),
                range.start(),
                range.end()
            ))
        };
        let value: u64 = raw.trim().parse().map_err(|_| out_of_range())?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(out_of_range())
        }
    }

    /// A non-empty text of at most `max_bytes` bytes, or `None` when absent.
    pub(crate) fn text(&self, key: &str, max_bytes: usize) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some("") => Err(ApiError::bad_parameter(format!(
                "{key}= is empty: give a value of 1 to {max_bytes} bytes"
            ))),
            Some(v) if v.len() > max_bytes => Err(ApiError::bad_parameter(format!(
                "{key}={:?} is {} bytes long; at most {max_bytes}",
                clip(v),
                v.len()
            ))),
            Some(v) => Ok(Some(v)),
        }
    }

    /// One of `choices`, or `default` when absent.
    pub(crate) fn choice<'a>(
        &self,
        key: &str,
        choices: &[&'a str],
        default: &'a str,
    ) -> Result<&'a str, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        choices.iter().find(|c| **c == raw).copied().ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "{key}={:?} is not allowed; choose one of: {}",
                clip(raw),
                choices.join(", ")
            ))
        })
    }
}

/// Shortens user input quoted back in messages.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        s.chars().take(MAX).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_defaults() {
        let p = Params::parse(Some("seconds=5&format=svg"), &["seconds", "format"]).unwrap();
        assert_eq!(p.u64_in("seconds", 1..=60, 30).unwrap(), 5);
        assert_eq!(
            p.choice("format", &["pprof", "svg"], "pprof").unwrap(),
            "svg"
        );
        let p = Params::parse(None, &["seconds"]).unwrap();
        assert_eq!(p.u64_in("seconds", 1..=60, 30).unwrap(), 30);
    }

    #[test]
    fn rejects_bad_values_with_allowed_range() {
        for q in [
            "seconds=0",
            "seconds=61",
            "seconds=-1",
            "seconds=abc",
            "seconds=99999999999999999999999",
        ] {
            let p = Params::parse(Some(q), &["seconds"]).unwrap();
            let e = p.u64_in("seconds", 1..=60, 30).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains("from 1 to 60"), "{}", e.message);
        }
    }

    #[test]
    fn rejects_unknown_and_repeated_keys() {
        let e = Params::parse(Some("sconds=1"), &["seconds"]).unwrap_err();
        assert!(e.message.contains("allowed: seconds"), "{}", e.message);
        let e = Params::parse(Some("seconds=1&seconds=2"), &["seconds"]).unwrap_err();
        assert!(e.message.contains("more than once"), "{}", e.message);
        let e = Params::parse(Some("x=1"), &[]).unwrap_err();
        assert!(e.message.contains("takes no parameters"), "{}", e.message);
    }

    #[test]
    fn rejects_unknown_choice() {
        let p = Params::parse(Some("format=png"), &["format"]).unwrap();
        let e = p
            .choice("format", &["pprof", "svg", "folded"], "pprof")
            .unwrap_err();
        assert!(e.message.contains("pprof, svg, folded"), "{}", e.message);
    }
}
