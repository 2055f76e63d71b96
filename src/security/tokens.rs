//! Tokens and scopes.
//!
//! A token has a name (what the audit log records), one scope, and a secret. Only the
//! SHA-256 digest of the secret is kept in memory, and a presented secret is compared against
//! every token's digest in constant time. HTTP Basic credentials (user = token name, password =
//! secret) are checked the same way, with the name compared in constant time too.
//!
//! Scopes are ordered, `read` < `profile` < `admin`: a token holding `admin` may call every
//! endpoint, `profile` may call `profile` and `read` endpoints. A token holds one scope.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::Error;

/// Shortest secret accepted, in bytes. Shorter secrets are guessable; longer ones must also
/// carry 128 bits by [`strength::estimated_bits`].
pub(crate) const MIN_SECRET_LEN: usize = 16;
/// Most tokens one server holds (each is compared on every request; the lockout remembers
/// which ones each address used, as a 64-bit set).
pub(crate) const MAX_TOKENS: usize = 64;
/// Longest secret accepted, in bytes.
pub(crate) const MAX_SECRET_LEN: usize = 512;
/// Longest token name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// What a token may do. Scopes are ordered: a higher scope includes the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read stats, metrics and reports (`/debug/memory`, `/metrics`, `/debug/pools`, …).
    Read,
    /// Take profiles and stack dumps, which cost the host CPU while they run.
    Profile,
    /// Change the process at run time (heap sampling, log level).
    Admin,
}

impl Scope {
    /// All scopes, lowest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Profile, Scope::Admin];

    /// The scope's name as written in configuration (`read`, `profile`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Profile => "profile",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "profile" => Ok(Scope::Profile),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, profile or admin"
            )),
        }
    }
}

/// A named credential. Holds the digest of its secret, never the secret.
#[derive(Clone)]
pub(crate) struct Token {
    name: String,
    scope: Scope,
    digest: [u8; 32],
    /// SHA-256 of the name: Basic auth compares names as fixed-size digests, in constant time.
    name_digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Makes a token. The name must be 1–64 characters of `[A-Za-z0-9_.-]`; the secret
    /// 16–512 bytes without whitespace or commas, carrying at least 128 bits by
    /// [`strength::estimated_bits`] with 8 distinct characters. Errors never contain the secret.
    pub(crate) fn new(name: &str, scope: Scope, secret: &str) -> Result<Token, Error> {
        validate_name(name)?;
        validate_secret(name, secret)?;
        Ok(Token {
            name: name.to_string(),
            scope,
            digest: digest(secret.as_bytes()),
            name_digest: digest(name.as_bytes()),
        })
    }

    /// The token a verified TLS client certificate named `name` stands for. Its digest is
    /// random and it is in no [`TokenSet`]: no secret ever matches it.
    #[cfg(feature = "tls")]
    pub(crate) fn for_certificate(name: &str, scope: Scope) -> Result<Token, Error> {
        validate_name(name)?;
        let mut digest = [0u8; 32];
        getrandom::fill(&mut digest)
            .map_err(|e| Error::Start(format!("no randomness for a certificate token: {e}")))?;
        Ok(Token {
            name: name.to_string(),
            scope,
            digest,
            name_digest: self::digest(name.as_bytes()),
        })
    }

    /// The token's name, as recorded in the audit log.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The scope the token holds.
    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether the token may call an endpoint that needs `needed`.
    pub(crate) fn allows(&self, needed: Scope) -> bool {
        self.scope >= needed
    }
}

/// Parses one `name:scope:secret` entry (the secret may itself contain `:`).
///
/// `index` (0-based) is used in error messages, which name the entry but never echo the secret.
pub(crate) fn parse_token_entry(entry: &str, index: usize) -> Result<Token, Error> {
    let entry = entry.trim();
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(scopes), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Config(format!(
            "token entry #{} is malformed: expected name:scope:secret",
            index + 1
        )));
    };
    // The scope text is not quoted back: in an entry that lacks its scope, it is part of the
    // secret.
    let scope = scopes.trim().parse::<Scope>().map_err(|_| {
            Error::Config(format!(
                "token entry #{} ({}): unknown scope; expected one of read, profile or admin (ordered: each includes the ones before it) as in name:scope:secret",
                index + 1,
                if validate_name(name).is_ok() { format!("{name:?}") } else { "name not shown".into() }
            ))
        })?;
    Token::new(name, scope, secret).map_err(|e| {
        // Keep one "invalid prodbg configuration: " prefix, not one per level.
        let why = match e {
            Error::Config(why) => why,
            other => other.to_string(),
        };
        Error::Config(format!("token entry #{}: {why}", index + 1))
    })
}

/// Parses a comma-separated list of `name:scope:secret` entries (the `PRODBG_TOKENS`
/// format). Empty entries are ignored; duplicate names are an error.
pub(crate) fn parse_tokens(list: &str) -> Result<Vec<Token>, Error> {
    let mut tokens: Vec<Token> = Vec::new();
    for (i, entry) in list.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let token = parse_token_entry(entry, i)?;
        if tokens.iter().any(|t| t.name == token.name) {
            return Err(Error::Config(format!(
                "token entry #{}: duplicate token name {:?}",
                i + 1,
                token.name
            )));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Generates a random 32-byte secret, hex-encoded (64 characters).
pub fn generate_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Config(format!("cannot read random bytes: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Every token's bit for [`TokenSet::verify_among`].
pub(crate) const ANY: u64 = u64::MAX;

/// The configured tokens, checked in constant time.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSet {
    tokens: Vec<Token>,
}

impl TokenSet {
    /// Wraps a list of tokens; two tokens with the same secret are refused (the audit log
    /// could not tell who called), naming both tokens but never the secret.
    pub(crate) fn new(tokens: Vec<Token>) -> Result<TokenSet, Error> {
        if tokens.len() > MAX_TOKENS {
            return Err(Error::Config(format!(
                "{} tokens are configured; at most {MAX_TOKENS} are accepted",
                tokens.len()
            )));
        }
        for (i, a) in tokens.iter().enumerate() {
            if let Some(b) = tokens[i + 1..].iter().find(|b| b.digest == a.digest) {
                return Err(Error::Config(format!(
                    "tokens {:?} and {:?} have the same secret: give each token its own",
                    a.name, b.name
                )));
            }
        }
        Ok(TokenSet { tokens })
    }

    /// Whether no token is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret is `presented`, if any.
    ///
    /// Every token's digest is compared, whatever matches, so the time taken does not tell
    /// which token (or how much of one) matched.
    #[cfg(test)]
    pub(crate) fn verify(&self, presented: &[u8]) -> Option<&Token> {
        self.verify_among(presented, ANY).map(|(t, _)| t)
    }

    /// [`verify`](Self::verify) against only the tokens whose position is set in `allowed`
    /// (bit `i`: the `i`-th token; [`ANY`]: all). Every token's digest is compared whatever
    /// `allowed` holds; returns the token and its position.
    pub(crate) fn verify_among(&self, presented: &[u8], allowed: u64) -> Option<(&Token, usize)> {
        let d = digest(presented);
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            let permitted = Choice::from(((allowed >> i) & 1) as u8);
            if bool::from(t.digest.ct_eq(&d) & permitted) {
                found = Some((t, i));
            }
        }
        found
    }

    /// The token named `user` whose secret is `password` (HTTP Basic auth), if any.
    ///
    /// The secret is checked by [`verify`](Self::verify); then the name is compared, as a
    /// digest and in constant time, with the matching token's name — or with a digest no name
    /// has when no secret matched — so a wrong name and a wrong secret take the same path and
    /// give the same answer.
    #[cfg(test)]
    pub(crate) fn verify_basic(&self, user: &[u8], password: &[u8]) -> Option<&Token> {
        self.verify_basic_among(user, password, ANY).map(|(t, _)| t)
    }

    /// [`verify_basic`](Self::verify_basic) against only the tokens set in `allowed` (see
    /// [`verify_among`](Self::verify_among)).
    pub(crate) fn verify_basic_among(
        &self,
        user: &[u8],
        password: &[u8],
        allowed: u64,
    ) -> Option<(&Token, usize)> {
        const NO_NAME: [u8; 32] = [0; 32];
        let found = self.verify_among(password, allowed);
        let expected = found.map_or(&NO_NAME, |(t, _)| &t.name_digest);
        let name_ok = digest(user).ct_eq(expected);
        found.filter(|_| bool::from(name_ok))
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "token name {:?} is invalid: use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . -",
            name.chars().take(MAX_NAME_LEN).collect::<String>()
        )))
    }
}

fn validate_secret(name: &str, secret: &str) -> Result<(), Error> {
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
        return Err(Error::Config(format!(
            "token {name:?}: the secret must be {MIN_SECRET_LEN}-{MAX_SECRET_LEN} bytes long (got {})",
            secret.len()
        )));
    }
    if secret
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b',' || b.is_ascii_control())
    {
        return Err(Error::Config(format!(
            "token {name:?}: the secret must not contain whitespace, commas or control characters"
        )));
    }
    if let Some(why) = strength::weakness(secret) {
        return Err(Error::Config(format!(
            "token {name:?}: the secret is too easy to guess: {why}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod props;
pub(crate) mod strength;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-0123456789";

    #[test]
    fn parses_entries_with_scopes_and_colons_in_secret() {
        let tokens = parse_tokens(
            "ops:admin:abc:def:0123456789abcdef, graf:profile:0123456789abcdefghijklmnop",
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].name(), "ops");
        assert_eq!(tokens[0].scope(), Scope::Admin);
        assert_eq!(tokens[1].scope(), Scope::Profile);
        let set = TokenSet::new(tokens).unwrap();
        assert_eq!(
            set.verify(b"abc:def:0123456789abcdef").unwrap().name(),
            "ops"
        );
        assert!(set.verify(b"abc").is_none());
    }

    #[test]
    fn basic_credentials_need_the_name_and_the_secret_of_one_token() {
        let other = "other-secret-0123456789abcdef";
        let set = TokenSet::new(vec![
            Token::new("ops", Scope::Admin, SECRET).unwrap(),
            Token::new("viewer", Scope::Read, other).unwrap(),
        ])
        .unwrap();
        assert_eq!(
            set.verify_basic(b"ops", SECRET.as_bytes()).unwrap().name(),
            "ops"
        );
        assert_eq!(
            set.verify_basic(b"viewer", other.as_bytes())
                .unwrap()
                .scope(),
            Scope::Read
        );
        // Another token's name with this secret, a wrong name, a wrong secret, empty parts.
        for (user, password) in [
            (&b"viewer"[..], SECRET.as_bytes()),
            (b"ops", other.as_bytes()),
            (b"Ops", SECRET.as_bytes()),
            (b"ops ", SECRET.as_bytes()),
            (b"", SECRET.as_bytes()),
            (b"ops", b"s3cr3t-value-012345678"),
            (b"ops", b""),
            (b"", b""),
        ] {
            assert!(set.verify_basic(user, password).is_none(), "{user:?}");
        }
    }

    #[test]
    fn scopes_are_ordered() {
        let t = Token::new("p", Scope::Profile, SECRET).unwrap();
        assert!(t.allows(Scope::Read));
        assert!(t.allows(Scope::Profile));
        assert!(!t.allows(Scope::Admin));
    }

    #[test]
    fn malformed_entries_name_the_entry_and_never_echo_the_secret() {
        let cases = [
            format!("ops:{SECRET}"),
            format!("ops:root:{SECRET}"),
            "ops:read:short".to_string(),
            format!("bad name:read:{SECRET}"),
            format!("ok:read:{SECRET},ok:admin:{SECRET}x"),
        ];
        for case in cases {
            let err = parse_tokens(&case).unwrap_err().to_string();
            assert!(!err.contains(SECRET), "{err}");
            assert!(err.contains("token"), "{err}");
        }
        let err = parse_tokens(&format!("a:read:{SECRET},b:wrong:{SECRET}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("#2") && err.contains("unknown scope"), "{err}");
        // A forgotten scope: the secret's first part is not quoted back as a scope.
        let err = parse_tokens("ops:abcdefghij:klmnopqrstuvwxyz0123")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("abcdefghij") && err.contains("unknown scope"),
            "{err}"
        );
    }

    #[test]
    fn two_tokens_with_one_secret_are_refused() {
        let a = Token::new("a", Scope::Read, SECRET).unwrap();
        let b = Token::new("b", Scope::Admin, SECRET).unwrap();
        let err = TokenSet::new(vec![a, b]).unwrap_err().to_string();
        assert!(
            err.contains("same secret") && !err.contains(SECRET),
            "{err}"
        );
        let err = parse_tokens(&format!("a:read+profile:{SECRET}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scope"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_digest() {
        let t = Token::new("ops", Scope::Admin, SECRET).unwrap();
        let dbg = format!("{t:?}");
        assert!(dbg.contains("ops") && !dbg.contains("digest"));
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        Token::new("gen", Scope::Admin, &a).unwrap();
    }
}
