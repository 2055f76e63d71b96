//! Property tests for the parsers that see untrusted or operator-typed input: the query string
//! (`Params::parse`, `Params::u64_in`) and the token list (`auth::parse_tokens`).

use prodbg::auth::{parse_tokens, TokenSet};
use prodbg::http::params::{Params, MAX_QUERY_LEN};
use proptest::prelude::*;

const KEYS: [&str; 4] = ["seconds", "frequency", "format", "ttl"];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings.

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

// ---------------------------------------------------------------------------------------------
// Token lists.

/// What goes wrong with one `name:scope:secret` entry.
#[derive(Debug, Clone)]
enum Corruption {
    None,
    /// `name:secret` (the scope forgotten).
    DropScope,
    /// `name:scope` (the secret forgotten).
    DropSecret,
    /// Just the secret.
    OnlySecret,
    /// The scope replaced by another word.
    Scope(String),
    /// The name replaced by an invalid one.
    Name(String),
    /// A character inserted into the secret at a position.
    Insert(char, usize),
    /// The secret cut to fewer than 16 bytes.
    Truncate(usize),
    /// The secret made longer than 512 bytes.
    Extend,
    /// The name of the previous entry reused.
    DuplicateName,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        4 => Just(Corruption::None),
        1 => Just(Corruption::DropScope),
        1 => Just(Corruption::DropSecret),
        1 => Just(Corruption::OnlySecret),
        1 => prop_oneof![
            "[a-z]{0,10}",
            Just("read+".to_string()),
            Just("ADMIN".to_string()),
            Just("read+root".to_string()),
            Just(" read ".to_string()),
        ]
        .prop_map(Corruption::Scope),
        1 => prop_oneof![
            Just(String::new()),
            Just("bad name".to_string()),
            Just("naïve".to_string()),
            Just("x".repeat(65)),
            "[a-z]{1,5}[/ :@][a-z]{1,5}",
        ]
        .prop_map(Corruption::Name),
        2 => (
            prop::sample::select(vec![' ', '\t', ',', '\n', '\u{0}', '\u{7f}', ':', 'é', '\u{85}']),
            any::<usize>(),
        )
            .prop_map(|(c, at)| Corruption::Insert(c, at)),
        1 => (0usize..16).prop_map(Corruption::Truncate),
        1 => Just(Corruption::Extend),
        1 => Just(Corruption::DuplicateName),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    scopes: String,
    /// The secret as generated: 16+ bytes, may contain `:`.
    secret: String,
    corruption: Corruption,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        "[A-Za-z0-9_.-]{1,16}",
        prop::sample::subsequence(vec!["read", "profile", "admin"], 1..=3)
            .prop_map(|s| s.join("+")),
        prop_oneof![
            4 => "[A-Za-z0-9_.~!@#$%^&*()=-]{16,64}",
            2 => "[A-Za-z0-9]{4,12}:[A-Za-z0-9:]{12,40}",
            1 => "[a-zé€😀0-9]{16,24}",
            1 => "[a-f0-9]{64}",
        ],
        corruption(),
    )
        .prop_map(|(name, scopes, secret, corruption)| Entry {
            name,
            scopes,
            secret,
            corruption,
        })
}

/// Inserts `c` at the char boundary nearest `at`.
fn insert_at(s: &str, c: char, at: usize) -> String {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{c}{}", &s[..at], &s[at..])
}

fn truncate(s: &str, len: usize) -> String {
    s.chars().take(len).collect()
}

/// The entry as written in the list, and the secret as it ends up in it.
fn render(e: &Entry, previous_name: Option<&str>) -> (String, String) {
    let (name, scopes, secret) = (e.name.as_str(), e.scopes.as_str(), e.secret.clone());
    match &e.corruption {
        Corruption::None => (format!("{name}:{scopes}:{secret}"), secret),
        Corruption::DropScope => (format!("{name}:{secret}"), secret),
        Corruption::DropSecret => (format!("{name}:{scopes}"), String::new()),
        Corruption::OnlySecret => (secret.clone(), secret),
        Corruption::Scope(s) => (format!("{name}:{s}:{secret}"), secret),
        Corruption::Name(n) => (format!("{n}:{scopes}:{secret}"), secret),
        Corruption::Insert(c, at) => {
            let s = insert_at(&secret, *c, *at);
            (format!("{name}:{scopes}:{s}"), s)
        }
        Corruption::Truncate(len) => {
            let s = truncate(&secret, *len);
            (format!("{name}:{scopes}:{s}"), s)
        }
        Corruption::Extend => {
            let s = secret.repeat(513 / secret.len() + 1);
            (format!("{name}:{scopes}:{s}"), s)
        }
        Corruption::DuplicateName => {
            let n = previous_name.unwrap_or(name);
            (format!("{n}:{scopes}:{secret}"), secret)
        }
    }
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![",", ", ", " ,", ",,", ",\n", " , , "])
}

proptest! {
    #![proptest_config(config())]

    /// `parse_tokens` never panics, and no error message ever holds a secret: neither one as
    /// generated nor the secret part of any entry as the parser splits the list. A list it
    /// accepts verifies each of its secrets to the right token.
    #[test]
    fn parse_tokens_never_echoes_a_secret(
        entries in prop::collection::vec(entry(), 1..5),
        seps in prop::collection::vec(separator(), 5),
    ) {
        let mut list = String::new();
        let mut secrets: Vec<String> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let previous = i.checked_sub(1).map(|j| entries[j].name.as_str());
            let (text, secret) = render(e, previous);
            if i > 0 {
                list.push_str(seps[i]);
            }
            list.push_str(&text);
            secrets.push(e.secret.clone());
            secrets.push(secret);
        }
        // The secret part of every entry as the parser sees it: after the second `:`.
        let parser_secrets: Vec<String> = list
            .split(',')
            .filter_map(|entry| entry.trim().splitn(3, ':').nth(2).map(str::to_string))
            .collect();
        match parse_tokens(&list) {
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("token"), "{}", msg);
                prop_assert_eq!(msg.matches("invalid prodbg configuration").count(), 1, "{}", msg);
                for s in secrets.iter().chain(&parser_secrets) {
                    if s.len() >= 16 {
                        prop_assert!(!msg.contains(s.as_str()), "message {:?} holds secret {:?}", msg, s);
                        // Nor its first or last 16 bytes.
                        let head = truncate(s, 16);
                        prop_assert!(!msg.contains(&head), "message {:?} holds the start of {:?}", msg, s);
                    }
                }
            }
            Ok(tokens) => {
                let expected = list.split(',').filter(|e| !e.trim().is_empty()).count();
                prop_assert_eq!(tokens.len(), expected);
                for t in &tokens {
                    let dbg = format!("{t:?}");
                    for s in &parser_secrets {
                        prop_assert!(!dbg.contains(s.as_str()), "{}", dbg);
                    }
                }
                let set = TokenSet::new(tokens.clone());
                for entry in list.split(',').filter(|e| !e.trim().is_empty()) {
                    let mut parts = entry.trim().splitn(3, ':');
                    let (name, _, secret) =
                        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
                    let found = set.verify(secret.as_bytes()).map(|t| t.name().to_string());
                    prop_assert_eq!(found.as_deref(), Some(name));
                }
            }
        }
    }
}
