//! Query-string parsing with bounds: unknown keys, repeated keys and out-of-range values are
//! 400s whose message says what is allowed.

use std::ops::RangeInclusive;
use std::time::Duration;

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

    /// A duration written as a whole number of seconds, minutes or hours (`90s`, `5m`, `1h`)
    /// within `range`, or `default` when absent. `beyond` names what the upper bound is (e.g.
    /// "the timeline's retention") in the message of a value past it.
    pub(crate) fn duration_in(
        &self,
        key: &str,
        range: RangeInclusive<Duration>,
        default: Duration,
        beyond: &str,
    ) -> Result<Duration, ApiError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let (min, max) = (short(*range.start()), short(*range.end()));
        let value = parse_duration(raw.trim()).ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "{key}={:?} is not allowed: {key} must be like 90s, 5m or 1h, at most {max}",
                clip(raw)
            ))
        })?;
        if value > *range.end() {
            Err(ApiError::bad_parameter(format!(
                "{key}={:?} is beyond {beyond}: give at most {max} (like 90s, 5m or 1h)",
                clip(raw)
            )))
        } else if value < *range.start() {
            Err(ApiError::bad_parameter(format!(
                "{key}={:?} is too short: give at least {min}, at most {max}",
                clip(raw)
            )))
        } else {
            Ok(value)
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

/// `90s`, `5m`, `1h`: at most [`MAX_DURATION_DIGITS`] digits and one unit; `None` otherwise.
fn parse_duration(raw: &str) -> Option<Duration> {
    let (digits, seconds_each) = [('s', 1), ('m', 60), ('h', 3600)]
        .into_iter()
        .find_map(|(unit, each)| raw.strip_suffix(unit).map(|d| (d, each)))?;
    if digits.is_empty()
        || digits.len() > MAX_DURATION_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(n * seconds_each))
}

/// Most digits of a duration's number (so the seconds always fit).
const MAX_DURATION_DIGITS: usize = 9;

/// `d` the way a duration parameter is written: `1h`, `10m`, `90s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
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
    fn durations_in_seconds_minutes_or_hours() {
        let p = Params::parse(Some("a=90s&b=5m&c=1h&d=0s"), &["a", "b", "c", "d"]).unwrap();
        let any = Duration::ZERO..=Duration::from_secs(3600);
        let get = |k| p.duration_in(k, any.clone(), Duration::ZERO, "the retention");
        assert_eq!(get("a").unwrap(), Duration::from_secs(90));
        assert_eq!(get("b").unwrap(), Duration::from_secs(300));
        assert_eq!(get("c").unwrap(), Duration::from_secs(3600));
        assert_eq!(get("d").unwrap(), Duration::ZERO);
        assert_eq!(get("absent").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations_saying_what_is_allowed() {
        let range = Duration::from_secs(1)..=Duration::from_secs(3600);
        for q in [
            "abc",
            "5",
            "m",
            "5d",
            "-5m",
            "1.5h",
            "99999999999h",
            "5 m",
            "",
            "5é",
        ] {
            let p = Params::parse(Some(&format!("since={q}")), &["since"]).unwrap();
            let e = p
                .duration_in("since", range.clone(), Duration::ZERO, "the retention")
                .unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(
                e.message
                    .contains("since must be like 90s, 5m or 1h, at most 1h"),
                "{q}: {}",
                e.message
            );
        }
        let p = Params::parse(Some("since=2h&s=0s"), &["since", "s"]).unwrap();
        let e = p
            .duration_in("since", range.clone(), Duration::ZERO, "the retention")
            .unwrap_err();
        assert!(
            e.message.contains("beyond the retention: give at most 1h"),
            "{}",
            e.message
        );
        let e = p
            .duration_in("s", range, Duration::ZERO, "the retention")
            .unwrap_err();
        assert!(e.message.contains("at least 1s"), "{}", e.message);
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
