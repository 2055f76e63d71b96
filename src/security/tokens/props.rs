//! Property tests for a parser that sees operator-typed input: the token list
//! (`parse_tokens`). The query string's are in `seam/params/props.rs`.

use proptest::prelude::*;

use super::{parse_tokens, TokenSet};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

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
            Just("read+profile".to_string()),
            Just("profile+admin".to_string()),
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
    scope: String,
    /// The secret as generated: 16+ bytes, may contain `:`.
    secret: String,
    corruption: Corruption,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        "[A-Za-z0-9_.-]{1,16}",
        // One scope per token: `read+profile` is a corruption now (see `Corruption::Scope`).
        prop::sample::select(vec!["read", "profile", "admin"]).prop_map(str::to_string),
        prop_oneof![
            4 => "[A-Za-z0-9_.~!@#$%^&*()=-]{16,64}",
            2 => "[A-Za-z0-9]{4,12}:[A-Za-z0-9:]{12,40}",
            1 => "[a-zé€😀0-9]{16,24}",
            1 => "[a-f0-9]{64}",
        ],
        corruption(),
    )
        .prop_map(|(name, scope, secret, corruption)| Entry {
            name,
            scope,
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
    let (name, scope, secret) = (e.name.as_str(), e.scope.as_str(), e.secret.clone());
    match &e.corruption {
        Corruption::None => (format!("{name}:{scope}:{secret}"), secret),
        Corruption::DropScope => (format!("{name}:{secret}"), secret),
        Corruption::DropSecret => (format!("{name}:{scope}"), String::new()),
        Corruption::OnlySecret => (secret.clone(), secret),
        Corruption::Scope(s) => (format!("{name}:{s}:{secret}"), secret),
        Corruption::Name(n) => (format!("{n}:{scope}:{secret}"), secret),
        Corruption::Insert(c, at) => {
            let s = insert_at(&secret, *c, *at);
            (format!("{name}:{scope}:{s}"), s)
        }
        Corruption::Truncate(len) => {
            let s = truncate(&secret, *len);
            (format!("{name}:{scope}:{s}"), s)
        }
        Corruption::Extend => {
            let s = secret.repeat(513 / secret.len() + 1);
            (format!("{name}:{scope}:{s}"), s)
        }
        Corruption::DuplicateName => {
            let n = previous_name.unwrap_or(name);
            (format!("{n}:{scope}:{secret}"), secret)
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
                let set = match TokenSet::new(tokens.clone()) {
                    Ok(set) => set,
                    Err(e) => {
                        // Only two entries with one secret are refused, naming the tokens but
                        // never the secret.
                        let msg = e.to_string();
                        let mut sorted = parser_secrets.clone();
                        sorted.sort();
                        prop_assert!(sorted.windows(2).any(|w| w[0] == w[1]), "refused: {}", msg);
                        prop_assert!(msg.contains("same secret"), "{}", msg);
                        for s in &parser_secrets {
                            prop_assert!(!msg.contains(s.as_str()), "message {:?} holds secret {:?}", msg, s);
                            let head = truncate(s, 16);
                            prop_assert!(!msg.contains(&head), "message {:?} holds the start of {:?}", msg, s);
                        }
                        return Ok(());
                    }
                };
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
