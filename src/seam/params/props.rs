//! Property tests for a parser that sees untrusted input: the query string (`Params::parse`,
//! `Params::u64_in`). The token list's are in `security/tokens/props.rs`.

use proptest::prelude::*;

use super::{Params, MAX_QUERY_LEN};

const KEYS: [&str; 4] = ["seconds", "frequency", "format", "ttl"];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Keys: the real ones, near misses, empty, percent-encoded garbage, anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        prop::sample::select(vec![
            "",
            "nope",
            "Seconds",
            "seconds%00",
            "%ff%fe",
            "%zz",
            "%",
            "%2",
            "+",
            "seconds+",
            "%73econds",
            "form%61t",
        ])
        .prop_map(str::to_string),
        "[a-z%&=+]{0,8}",
        any::<String>(),
    ]
}

/// Values: numbers of every sign and size, words, percent-encoded garbage, anything.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "",
            "0",
            "-0",
            "99999999999999999999999",
            "1.5",
            "1e3",
            "0x10",
            "pprof",
            "svg",
            "%ff%fe",
            "%00",
            "%20",
            "+5",
            "15m",
            "abc",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

/// Whole query strings: structured `k=v&…` (to reach the accepting paths), long ones, and
/// arbitrary text.
fn query() -> impl Strategy<Value = String> {
    fn pair() -> impl Strategy<Value = String> {
        (key(), prop::option::of(value())).prop_map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
    }
    prop_oneof![
        3 => prop::collection::vec(pair(), 0..6).prop_map(|v| v.join("&")),
        1 => (pair(), 100usize..400).prop_map(|(p, n)| vec![p; n].join("&")),
        2 => any::<String>(),
    ]
}

fn allowed() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(KEYS.to_vec(), 0..=KEYS.len())
}

proptest! {
    #![proptest_config(config())]

    /// `parse` never panics; it either refuses with a 400 and a bounded message, or accepts only
    /// allowed keys, each once, with exactly the values the query holds.
    #[test]
    fn params_parse_errors_or_yields_only_allowed_keys(q in query(), allowed in allowed()) {
        match Params::parse(Some(&q), &allowed) {
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert_eq!(e.code, "bad_parameter");
                prop_assert!(!e.message.trim().is_empty());
                // User input is clipped when quoted back.
                prop_assert!(e.message.len() <= 1024, "{} bytes: {}", e.message.len(), e.message);
            }
            Ok(p) => {
                prop_assert!(q.len() <= MAX_QUERY_LEN);
                let mut seen: Vec<String> = Vec::new();
                for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                    prop_assert!(allowed.contains(&k.as_ref()), "accepted key {:?}", k);
                    prop_assert!(!seen.contains(&k.to_string()), "accepted {:?} twice", k);
                    prop_assert_eq!(p.get(&k), Some(v.as_ref()));
                    seen.push(k.into_owned());
                }
                for k in &allowed {
                    if !seen.iter().any(|s| s == k) {
                        prop_assert_eq!(p.get(k), None);
                    }
                }
                prop_assert_eq!(p.get("nope"), None);
            }
        }
        // No query at all is always fine.
        prop_assert!(Params::parse(None, &allowed).is_ok());
    }
}

/// How to make the value given for `u64_in`.
#[derive(Debug, Clone)]
enum Num {
    /// Any u64.
    Any(u64),
    /// A bound of the range plus a small offset (either side of it).
    NearLow(i8),
    NearHigh(i8),
    /// Arbitrary text.
    Text(String),
    /// A number with whitespace or a sign around it.
    Padded(u64, &'static str, &'static str),
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        any::<u64>().prop_map(Num::Any),
        any::<i8>().prop_map(Num::NearLow),
        any::<i8>().prop_map(Num::NearHigh),
        value().prop_map(Num::Text),
        (
            0u64..200,
            prop::sample::select(vec!["", " ", "+", "-", "\t", "0"]),
            prop::sample::select(vec!["", " ", ".0", "s", "\n"]),
        )
            .prop_map(|(n, a, b)| Num::Padded(n, a, b)),
    ]
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (0u64..100, 0u64..100),
        (any::<u64>(), any::<u64>()),
        Just((1, 60)),
        Just((1, 1000)),
        Just((0, u64::MAX)),
    ]
    .prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn offset(base: u64, d: i8) -> String {
    (i128::from(base) + i128::from(d)).to_string()
}

proptest! {
    #![proptest_config(config())]

    /// `u64_in` never returns a value outside its range, accepts exactly the in-range integers,
    /// and its refusals give the range.
    #[test]
    fn u64_in_stays_in_range((lo, hi) in range(), n in num(), default_pick in any::<u64>()) {
        let raw = match &n {
            Num::Any(v) => v.to_string(),
            Num::NearLow(d) => offset(lo, *d),
            Num::NearHigh(d) => offset(hi, *d),
            Num::Text(s) => s.clone(),
            Num::Padded(v, a, b) => format!("{a}{v}{b}"),
        };
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &raw)
            .finish();
        let default = lo + default_pick % (hi - lo).saturating_add(1).max(1);
        let Ok(p) = Params::parse(Some(&q), &["n"]) else {
            // Only a query over the length limit is refused here.
            prop_assert!(q.len() > MAX_QUERY_LEN);
            return Ok(());
        };
        let expected = raw.trim().parse::<u64>().ok().filter(|v| (lo..=hi).contains(v));
        match p.u64_in("n", lo..=hi, default) {
            Ok(v) => {
                prop_assert!((lo..=hi).contains(&v), "{} outside {}..={}", v, lo, hi);
                prop_assert_eq!(Some(v), expected, "accepted {:?}", raw);
            }
            Err(e) => {
                prop_assert_eq!(expected, None, "refused {:?}: {}", raw, e.message);
                prop_assert_eq!(e.status.as_u16(), 400);
                let range_text = format!("from {lo} to {hi}");
                prop_assert!(e.message.contains(&range_text), "{}", e.message);
                prop_assert!(e.message.len() <= 1024, "{}", e.message);
            }
        }
        // Absent: the default, which the caller keeps in range.
        let empty = Params::parse(None, &["n"]).unwrap();
        prop_assert_eq!(empty.u64_in("n", lo..=hi, default).unwrap(), default);
    }
}
