//! Redaction of secrets from command lines, environment variables and free-form values
//! (`/debug/process`, the bundle's copy, span fields, audit paths and queries, the copy of a
//! host endpoint's request body in its audit record).
//!
//! Two signals, either enough: a **name** that suggests a secret (`DB_PASS`, `--db-password`,
//! `SMTP_PASS`, `*_CREDS`, `*_PRIVATE_KEY`, `OTEL_EXPORTER_OTLP_HEADERS`, `sig=` …) redacts
//! the whole value; a **value** that looks like one is redacted wherever it appears: the
//! password of a URL's userinfo, secret query parameters, webhook URLs (Slack, Discord,
//! Office 365), JWTs, PEM private keys, well-known token prefixes (`ghp_`, `xoxb-`, `AKIA`,
//! …), and long random strings (base64 with `+`/`/`, hex ≥ 32). URLs keep their shape
//! (`postgres://app:[redacted]@db/app`, also when the password holds `/`, `#` or `@`) so an
//! operator still sees where things point. A JSON value (`SPRING_APPLICATION_JSON`,
//! `VCAP_SERVICES`) is judged member by member, and a quoted value after a secret name
//! (`"password": "two words"`, `password="x y"`) goes whole, JSON cut short included.
//! Ordinary values — `PATH`, `RUST_LOG`, `HOME`, numbers, short words, file paths — stay
//! readable. It is a heuristic: it errs on the side of redacting, and a secret with an
//! innocent name and an innocent-looking value (a short word) is not caught.

use std::borrow::Cow;

/// What replaces a redacted value.
pub(crate) const REDACTED: &str = "[redacted]";

/// Matched anywhere in a name (letters and digits only, lowercased).
const STRONG: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "apikey",
    "privatekey",
    "authorization",
    "bearer",
    "cookie",
    "webhook",
    "signature",
    // Redis (`--requirepass`, `--masterauth`), Java keytool (`-storepass`, `-keypass`).
    "requirepass",
    "masterauth",
    "storepass",
    "keypass",
];

/// Matched as whole words of a name (split at `_`, `-`, `.`, camelCase).
const WEAK: &[&str] = &[
    "pass", "pwd", "pw", "key", "keys", "auth", "creds", "cred", "sig", "dsn", "session",
    "headers", "header", "salt", "otp", "jwt", "sas", "hmac", "private",
];

/// A name whose last word is one of these names a location or a setting, not a secret: it is
/// judged by its value (`DB_PASSWORD_FILE=/run/secrets/db`, `SSH_AUTH_SOCK`, `TOKEN_TTL`).
const NOT_A_HOLDER: &[&str] = &[
    "file",
    "files",
    "path",
    "dir",
    "filename",
    "sock",
    "socket",
    "stdin",
    "fd",
    "length",
    "len",
    "ttl",
    "timeout",
    "expiry",
    "algorithm",
    "algo",
    "type",
];

/// Well-known token prefixes (GitHub, GitLab, Slack, Stripe, OpenAI, AWS, Google, npm, PyPI,
/// SendGrid, Shopify, DigitalOcean).
const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "xapp-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "sk-",
    "AKIA",
    "ASIA",
    "AIza",
    "npm_",
    "pypi-",
    "SG.",
    "shpat_",
    "dop_v1_",
];

fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a variable, option, header or query-parameter name suggests it holds a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower == "pwd" || lower == "oldpwd" {
        return false; // the shell's working directories
    }
    let words = words(name);
    if words
        .last()
        .is_some_and(|w| NOT_A_HOLDER.contains(&w.as_str()))
    {
        return false;
    }
    let compact: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .replace("tokeniz", ""); // TOKENIZERS_PARALLELISM
    STRONG.iter().any(|s| compact.contains(s)) || words.iter().any(|w| WEAK.contains(&w.as_str()))
}

fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'_' || b == b'-'
}

fn is_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    s.len() >= 20
        && s.starts_with("eyJ")
        && parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Whether a single word (no whitespace) looks like a credential: a JWT, a well-known token
/// prefix, 32+ hex digits, or a long random-looking base64/base64url string (24+ characters
/// with upper, lower and digits, or 32+ with letters and digits, whose letters and digits
/// change class often — which file paths and words do not).
pub(crate) fn looks_like_secret(word: &str) -> bool {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return false; // numbers stay readable
    }
    if ["/", "./", "~/"].iter().any(|p| word.starts_with(p)) && word.matches('/').count() >= 2 {
        // A path: judged segment by segment, so `/Users/JohnSmith/Library` stays readable.
        return word.split('/').any(looks_like_secret);
    }
    if is_jwt(word) {
        return true;
    }
    if word.len() >= 16
        && TOKEN_PREFIXES.iter().any(|p| word.starts_with(p))
        && word.bytes().all(|b| is_b64_char(b) || b == b'.')
    {
        return true;
    }
    let core = word.trim_end_matches('=');
    if core.len() >= 32 && core.bytes().all(|b| b.is_ascii_hexdigit()) {
        return core.bytes().any(|b| b.is_ascii_alphabetic()) || core.len() >= 40;
    }
    if core.len() < 24 || !core.bytes().all(is_b64_char) {
        return false;
    }
    let (mut upper, mut lower, mut digit) = (false, false, false);
    let mut classes = Vec::with_capacity(core.len());
    for b in core.bytes() {
        let c = if b.is_ascii_uppercase() {
            upper = true;
            0
        } else if b.is_ascii_lowercase() {
            lower = true;
            1
        } else if b.is_ascii_digit() {
            digit = true;
            2
        } else {
            continue; // symbols: paths have many, so they do not count
        };
        classes.push(c);
    }
    if !digit || !(upper || lower) || (!(upper && lower) && core.len() < 32) {
        return false;
    }
    let changes = classes.windows(2).filter(|w| w[0] != w[1]).count();
    changes * 10 >= classes.len().saturating_sub(1) * 3
}

/// Redacts a free-form value: a span field, an environment value with an innocent name, an
/// argument. Whitespace-separated words are judged one by one (`Bearer <x>` and
/// `Authorization: <x>` redact the word after), `k=v` lists by key and value, URLs keep their
/// shape. Unchanged values are returned borrowed.
pub(crate) fn redact_value(value: &str) -> Cow<'_, str> {
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Cow::Owned(REDACTED.to_string());
    }
    if let Some(json) = redact_json_text(value) {
        return json;
    }
    match redact_keyed(value) {
        Cow::Borrowed(_) => redact_words(value),
        Cow::Owned(keyed) => Cow::Owned(redact_words(&keyed).into_owned()),
    }
}

/// Longest text parsed as a JSON document by [`redact_value`]; a longer one is judged by
/// [`redact_keyed`] and word by word.
const MAX_JSON_BYTES: usize = 256 * 1024;

/// A whole JSON object or array, judged by [`redact_json`]; `None` when `value` is not one.
/// The document is written back compact (members sorted by name) only when something changed.
fn redact_json_text(value: &str) -> Option<Cow<'_, str>> {
    let t = value.trim();
    if !(t.starts_with('{') || t.starts_with('[')) || value.len() > MAX_JSON_BYTES {
        return None;
    }
    let mut doc: serde_json::Value = serde_json::from_str(t).ok()?;
    if !doc.is_object() && !doc.is_array() {
        return None;
    }
    Some(if redact_json(&mut doc) {
        Cow::Owned(doc.to_string())
    } else {
        Cow::Borrowed(value)
    })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// The end (exclusive) of the quoted text that starts after the quote at `open`: the next
/// unescaped `quote`, or the end of the text when it was cut.
fn closing_quote(b: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == quote => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// The end (exclusive) of the bracketed value starting at `open` (`{…}` or `[…]`, strings
/// inside skipped), or the end of the text when it was cut.
fn closing_bracket(b: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b'"' => i = closing_quote(b, i, b'"'),
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Redacts what follows a secret name and `:` or `=` when word-by-word judgement could not
/// hold all of it: a quoted value (`"password": "two words"`, `password='x y'`, a Rust
/// `Debug` struct's `password: "…"`), and after a quoted name (JSON) any value, objects and
/// arrays included (`"credentials": {…}`). Text cut short (a span field, invalid JSON) is
/// redacted up to its end. Bare values after bare names are left to [`redact_words`].
fn redact_keyed(value: &str) -> Cow<'_, str> {
    let b = value.as_bytes();
    let mut out = String::new();
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b':' && b[i] != b'=' {
            i += 1;
            continue;
        }
        let mut k_end = i;
        while k_end > last && b[k_end - 1] == b' ' {
            k_end -= 1;
        }
        let quoted_key = k_end > last && matches!(b[k_end - 1], b'"' | b'\'');
        let key = if quoted_key {
            let q = b[k_end - 1] as char;
            value[last..k_end - 1]
                .rfind(q)
                .map(|s| &value[last + s + 1..k_end - 1])
        } else {
            let mut s = k_end;
            while s > last && is_name_byte(b[s - 1]) {
                s -= 1;
            }
            (s < k_end).then(|| &value[s..k_end])
        };
        let mut v = i + 1;
        while v < b.len() && b[v] == b' ' {
            v += 1;
        }
        if v >= b.len() || !key.is_some_and(is_secret_name) {
            i += 1;
            continue;
        }
        let (start, end) = match b[v] {
            q @ (b'"' | b'\'') => (v + 1, closing_quote(b, v, q)),
            b'{' | b'[' if quoted_key => (v, closing_bracket(b, v)),
            b'n' if quoted_key && value[v..].starts_with("null") => (v, v),
            _ if quoted_key => {
                let end = value[v..]
                    .find([',', '}', ']', ' ', '\n'])
                    .map_or(b.len(), |e| v + e);
                (v, end)
            }
            _ => (v, v),
        };
        if end > start {
            out.push_str(&value[last..start]);
            out.push_str(REDACTED);
            last = end;
        }
        i = end.max(i + 1);
    }
    if last == 0 {
        return Cow::Borrowed(value);
    }
    out.push_str(&value[last..]);
    Cow::Owned(out)
}

/// [`redact_value`]'s word-by-word pass.
fn redact_words(value: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut changed = false;
    let mut last = 0;
    let mut prev_word: Option<&str> = None;
    for (start, word) in split_words(value) {
        out.push_str(&value[last..start]);
        last = start + word.len();
        let after_keyword = prev_word.is_some_and(|p| {
            let p = p.to_ascii_lowercase();
            matches!(p.as_str(), "bearer" | "basic" | "token")
                || p.strip_suffix(':').is_some_and(is_secret_name)
        });
        let red = if word.contains(REDACTED) {
            None // already done by `redact_keyed`
        } else if after_keyword {
            let kept = &word[word.trim_end_matches([',', ';']).len()..];
            Some(format!("{REDACTED}{kept}"))
        } else {
            redact_word(word)
        };
        match red {
            Some(r) => {
                changed = true;
                out.push_str(&r);
            }
            None => out.push_str(word),
        }
        prev_word = Some(word);
    }
    if !changed {
        return Cow::Borrowed(value);
    }
    out.push_str(&value[last..]);
    Cow::Owned(out)
}

fn split_words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let rest = &s[i..];
        let skip = rest.len() - rest.trim_start().len();
        let start = i + skip;
        if start >= s.len() {
            return None;
        }
        let len = s[start..]
            .find(char::is_whitespace)
            .unwrap_or(s.len() - start);
        i = start + len;
        Some((start, &s[start..start + len]))
    })
}

fn is_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// One word; `Some` when something in it was redacted.
fn redact_word(word: &str) -> Option<String> {
    // Keep wrapping quotes and trailing punctuation out of the judgement.
    let core_start = word.len() - word.trim_start_matches(['"', '\'', '(', '<', '[']).len();
    let mut trimmed = word.trim_end_matches(['"', '\'', ')', '>', ']', ',', ';']);
    if core_start >= trimmed.len() {
        return None;
    }
    // A closer the core opened belongs to the value (`password=[x]`, `key="x"`): keep it in.
    while let Some(c) = word[trimmed.len()..].chars().next() {
        let core = &trimmed[core_start..];
        let open = match c {
            ')' => core.matches('(').count() > core.matches(')').count(),
            ']' => core.matches('[').count() > core.matches(']').count(),
            '>' => core.matches('<').count() > core.matches('>').count(),
            '"' | '\'' => core.matches(c).count() % 2 == 1,
            _ => false,
        };
        if !open {
            break;
        }
        trimmed = &word[..trimmed.len() + 1];
    }
    let core = &trimmed[core_start..];
    let (pre, post) = (&word[..core_start], &word[trimmed.len()..]);
    let wrap = |r: String| Some(format!("{pre}{r}{post}"));
    if looks_like_secret(core) {
        return wrap(REDACTED.to_string());
    }
    let eq = core.find('=');
    if let Some(i) = core.find("://") {
        if eq.is_none_or(|e| e > i) {
            return redact_url(core).and_then(wrap);
        }
    }
    if eq.is_some() && core.contains([',', ';', '&']) {
        let mut out = String::new();
        let mut changed = false;
        for part in core.split_inclusive([',', ';', '&']) {
            let (p, sep) = match part.char_indices().last() {
                Some((i, c)) if [',', ';', '&'].contains(&c) => (&part[..i], &part[i..]),
                _ => (part, ""),
            };
            match redact_word(p) {
                Some(r) => {
                    changed = true;
                    out.push_str(&r);
                }
                None => out.push_str(p),
            }
            out.push_str(sep);
        }
        return if changed { wrap(out) } else { None };
    }
    if let Some((k, v)) = core.split_once('=') {
        if is_name(k) {
            if is_secret_name(k) && !v.is_empty() {
                return wrap(format!("{k}={REDACTED}"));
            }
            return redact_word(v).and_then(|r| wrap(format!("{k}={r}")));
        }
    }
    None
}

/// Redacts a URL's secrets, keeping its shape: userinfo password (or a token as user name),
/// webhook paths, secret-looking path segments, and secret query/fragment parameters.
fn redact_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = rest.split_at(authority_end(rest));
    let mut out = format!("{scheme}://");
    let mut changed = false;
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, pass)) if !pass.is_empty() => {
                    changed = true;
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None if looks_like_secret(userinfo) => {
                    changed = true;
                    out.push_str(REDACTED);
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
            host
        }
        None => authority,
    };
    out.push_str(host);
    let host_l = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .to_ascii_lowercase();
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, mut rest) = tail.split_at(path_end);
    let webhook_prefix = if host_l == "hooks.slack.com" {
        // `/services/T…/B…/secret`, `/workflows/…`, `/triggers/…`: all after the first segment.
        path.get(1..)
            .and_then(|p| p.find('/'))
            .map(|i| i + 2)
            .filter(|i| *i < path.len())
    } else if (host_l.ends_with("discord.com") || host_l.ends_with("discordapp.com"))
        && path.starts_with("/api/webhooks/")
    {
        Some("/api/webhooks/".len())
    } else if host_l.ends_with(".webhook.office.com") && path.len() > 1 {
        Some(1)
    } else {
        None
    };
    match webhook_prefix {
        Some(i) => {
            changed = true;
            out.push_str(&path[..i]);
            out.push_str(REDACTED);
        }
        None => {
            for (i, seg) in path.split('/').enumerate() {
                if i > 0 {
                    out.push('/');
                }
                if looks_like_secret(seg) {
                    changed = true;
                    out.push_str(REDACTED);
                } else {
                    out.push_str(seg);
                }
            }
        }
    }
    while let Some(sep) = rest.chars().next() {
        let body_end = rest[1..].find(['?', '#']).map_or(rest.len(), |i| i + 1);
        let body = &rest[1..body_end];
        out.push(sep);
        match redact_query(body) {
            Cow::Owned(r) => {
                changed = true;
                out.push_str(&r);
            }
            Cow::Borrowed(b) => out.push_str(b),
        }
        rest = &rest[body_end..];
    }
    changed.then_some(out)
}

/// Where a URL's authority (`user:password@host:port`) ends in `rest`, the text after `://`.
///
/// Normally at the first `/`, `?` or `#`; but a password typed unencoded may hold those and
/// `@` (`app:p/ss#w@rd@db/app`), so when a `user:` comes first and a later `@` follows, the
/// authority runs to the last `@` and the host after it. A `host:port/…` (digits, then `/`) is
/// read the normal way. It errs on the side of redacting: an `@` in the path or query of a
/// URL with a userinfo password hides the host as well.
fn authority_end(rest: &str) -> usize {
    let first = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(colon) = rest[..first].find(':') else {
        return first;
    };
    let Some(at) = rest.rfind('@') else {
        return first;
    };
    let after_colon = &rest[colon + 1..first];
    let port = !after_colon.is_empty()
        && after_colon.bytes().all(|b| b.is_ascii_digit())
        && rest[first..].starts_with('/');
    if at < first || port || rest.starts_with('[') || rest[..colon].contains('@') {
        return first;
    }
    rest[at..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| at + i)
}

/// Redacts a query string (`a=1&token=x` → `a=1&token=[redacted]`): values of secret-named
/// parameters (`password`, `token`, `sig`, `X-Amz-Signature`, `key`, …) and secret-looking
/// values.
pub(crate) fn redact_query(query: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(query.len());
    let mut changed = false;
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() && (is_secret_name(k) || looks_like_secret(v)) => {
                changed = true;
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            Some((k, v)) if v.contains("://") => match redact_url(v) {
                Some(r) => {
                    changed = true;
                    out.push_str(k);
                    out.push('=');
                    out.push_str(&r);
                }
                None => out.push_str(pair),
            },
            None if looks_like_secret(pair) => {
                changed = true;
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(query)
    }
}

/// Redacts a URL path as an audit record keeps it: a segment that looks like a secret (a JWT,
/// a token prefix, 32+ hex digits, a long random string — judged percent-decoded), a
/// `name=value` segment or `;name=value` parameter with a secret name (`/reset/token=…`,
/// `;jsessionid=…`), and the segment after a secret-named one (`/token/abc123`,
/// `/api-keys/AbC…`) unless that one is a plain lowercase word. Unchanged paths are returned
/// borrowed.
pub(crate) fn redact_path(path: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(path.len());
    let mut changed = false;
    let mut after_secret_name = false;
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let (red, secret_name) = redact_segment(seg, after_secret_name);
        after_secret_name = secret_name;
        match red {
            Some(r) => {
                changed = true;
                out.push_str(&r);
            }
            None => out.push_str(seg),
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(path)
    }
}

/// One path segment: `Some` when redacted; and whether it names a secret (so the next one may
/// hold it).
fn redact_segment(seg: &str, after_secret_name: bool) -> (Option<String>, bool) {
    if seg.is_empty() {
        return (None, false);
    }
    let decoded = percent_decode(seg);
    let mut params = decoded.split(';');
    let head = params.next().unwrap_or("");
    let plain_word = head
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_' || b == b'.');
    if looks_like_secret(head)
        || (after_secret_name && !plain_word)
        || head
            .split_once('=')
            .is_some_and(|(k, v)| !v.is_empty() && (is_secret_name(k) || looks_like_secret(v)))
    {
        return (Some(REDACTED.to_string()), false);
    }
    let secret_name = head.len() <= 64 && is_secret_name(head);
    let mut out = head.to_string();
    let mut changed = false;
    for p in params {
        out.push(';');
        match p.split_once('=') {
            Some((k, v))
                if !v.is_empty()
                    && (is_secret_name(k)
                        || looks_like_secret(v)
                        || k.eq_ignore_ascii_case("jsessionid")) =>
            {
                changed = true;
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(p),
        }
    }
    // Keep the segment as sent (percent-encoded) unless a parameter was redacted.
    (changed.then_some(out), secret_name)
}

/// `%XX` decoded (invalid escapes and non-UTF-8 results kept as they are).
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(s), Cow::Owned)
}

/// Redacts an environment variable's value: all of it when the name suggests a secret (an
/// empty value stays empty, to show it is unset), else what [`redact_value`] finds.
pub(crate) fn redact_env(name: &str, value: &str) -> String {
    if is_secret_name(name) && !value.is_empty() {
        REDACTED.to_string()
    } else {
        redact_value(value).into_owned()
    }
}

/// Redacts a JSON document in place with the rules of [`redact_env`]: the value of a member
/// whose name suggests a secret (`password`, `apiKey`, `db_token`, …) becomes `"[redacted]"`
/// whatever its type (an empty string or `null` stays, to show it is unset); every other string
/// is judged by [`redact_value`]. Numbers, booleans and names stay readable.
/// Returns whether anything was redacted.
pub(crate) fn redact_json(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Object(members) => {
            let mut changed = false;
            for (name, v) in members.iter_mut() {
                let unset = v.is_null() || v.as_str().is_some_and(str::is_empty);
                if is_secret_name(name) && !unset {
                    *v = Value::String(REDACTED.to_string());
                    changed = true;
                } else {
                    changed |= redact_json(v);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| redact_json(v) | changed),
        Value::String(s) => match redact_value(s) {
            Cow::Owned(r) => {
                *s = r;
                true
            }
            Cow::Borrowed(_) => false,
        },
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Next {
    Plain,
    /// After a secret-named flag without `=`: the next argument is its value.
    Secret,
    /// After `-p`: a password (mysql) unless it looks like a port or port mapping.
    PortOrSecret,
    /// After `-u`/`--user`: `user:password` (curl).
    UserPass,
}

/// Redacts a command line: `--db-password hunter2` and `-p hunter2` (value in the next
/// argument; `-p 8080` and `-p 8080:80` are taken for ports), `--password=x`, `-u user:pass`,
/// `NAME=value` arguments, `Authorization: Bearer …` headers, and secret-looking values
/// anywhere.
pub(crate) fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut next = Next::Plain;
    for arg in args {
        let is_flag = arg.len() > 1 && arg.starts_with('-');
        let expected = std::mem::replace(&mut next, Next::Plain);
        match expected {
            Next::Secret if !is_flag => {
                out.push(redact_secret(arg));
                continue;
            }
            Next::PortOrSecret if !is_flag => {
                // `-p 8080`, `-p 127.0.0.1:8080:80` (docker): ports, not passwords.
                let port = arg.bytes().any(|b| b.is_ascii_digit())
                    && arg
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b':' || b == b'.');
                out.push(if port {
                    arg.clone()
                } else {
                    redact_secret(arg)
                });
                continue;
            }
            Next::UserPass if !is_flag => {
                out.push(match arg.split_once(':') {
                    Some((user, pass)) if !pass.is_empty() => format!("{user}:{REDACTED}"),
                    _ => arg.clone(),
                });
                continue;
            }
            _ => {}
        }
        if is_flag {
            let name = arg.trim_start_matches('-');
            let dashes = &arg[..arg.len() - name.len()];
            if let Some((k, v)) = name.split_once('=') {
                out.push(if is_secret_name(k) && !v.is_empty() {
                    format!("{dashes}{k}={REDACTED}")
                } else {
                    format!("{dashes}{k}={}", redact_value(v))
                });
                continue;
            }
            if dashes == "-" && is_attached_password(name) {
                out.push(format!("-p{REDACTED}"));
                continue;
            }
            next = if dashes == "-" && name == "p" {
                Next::PortOrSecret
            } else if dashes == "-" && name == "a" {
                Next::Secret // redis-cli -a <password>
            } else if name == "u" || name == "user" {
                Next::UserPass
            } else if is_secret_name(name) {
                Next::Secret
            } else {
                Next::Plain
            };
            out.push(arg.clone());
            continue;
        }
        if let Some((k, v)) = arg.split_once('=') {
            if is_name(k) && k.bytes().any(|b| b.is_ascii_alphabetic()) {
                out.push(format!("{k}={}", redact_env(k, v)));
                continue;
            }
        }
        if let Some((k, _)) = arg.split_once(':') {
            if is_name(k.trim()) && is_secret_name(k.trim()) {
                out.push(format!("{k}: {REDACTED}"));
                continue;
            }
        }
        out.push(redact_value(arg).into_owned());
    }
    out
}

/// Single-dash options that start with `p` and are not mysql's `-p<password>`.
const P_WORDS: &[&str] = &[
    "pthread",
    "pedantic",
    "pedantic-errors",
    "pipe",
    "pg",
    "pie",
    "print",
    "print0",
    "printf",
    "prune",
    "perm",
    "path",
    "profile",
    "parallel",
    "pid",
    "port",
    "ports",
];

/// mysql's `-pPASSWORD` (no space): `-p` with more attached, unless it is a port (`-p2222`,
/// `-p8080:80`) or a known option word (`-pthread`, `-pedantic`, `-print`, …). The option
/// names that are secret names (`-password`) are handled before.
fn is_attached_password(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('p') else {
        return false;
    };
    if rest.is_empty() || is_secret_name(name) || P_WORDS.contains(&name) {
        return false;
    }
    let port = rest.bytes().any(|b| b.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.');
    !port
}

fn redact_secret(v: &str) -> String {
    if v.is_empty() {
        String::new()
    } else {
        REDACTED.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Case {
        Args(&'static [&'static str], &'static [&'static str]),
        Env(&'static str, &'static str, &'static str),
        Value(&'static str, &'static str),
        Path(&'static str, &'static str),
    }
    use Case::{Args, Env, Path, Value};

    const R: &str = REDACTED;

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        vec![
            // Command lines: value in the next argument, after `=`, and look-alikes.
            Args(&["--db-password", "hunter2"], &["--db-password", R]),
            Args(&["-p", "hunter2"], &["-p", R]),
            Args(&["-p", "8080"], &["-p", "8080"]),
            Args(&["run", "-p", "127.0.0.1:8080:80", "img"], &["run", "-p", "127.0.0.1:8080:80", "img"]),
            Args(&["--password=x"], &["--password=[redacted]"]),
            Args(&["--token", "--verbose"], &["--token", "--verbose"]),
            Args(&["--password-file", "/run/secrets/db"], &["--password-file", "/run/secrets/db"]),
            Args(&["--password-stdin", "registry.example.com"], &["--password-stdin", "registry.example.com"]),
            Args(&["--port", "8080", "--threads=4", "serve"], &["--port", "8080", "--threads=4", "serve"]),
            Args(&["-u", "admin:hunter2"], &["-u", "admin:[redacted]"]),
            Args(&["-H", "Authorization: Bearer abc.def"], &["-H", "Authorization: [redacted]"]),
            Args(&["DB_PASSWORD=x", "./app"], &["DB_PASSWORD=[redacted]", "./app"]),
            Args(&["--apiKey", "abc123"], &["--apiKey", R]),
            Args(&["--database-url", "postgres://app:hunter2@db:5432/app"], &["--database-url", "postgres://app:[redacted]@db:5432/app"]),
            Args(&["--webhook-url=https://hooks.slack.com/services/T0/B0/XXXX"], &["--webhook-url=[redacted]"]),
            Args(&["--notify=https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"], &["--notify=https://hooks.slack.com/services/[redacted]"]),
            Args(&["--config", "/etc/app/config.toml"], &["--config", "/etc/app/config.toml"]),
            // Environment: secret names.
            Env("DB_PASS", "hunter2", R),
            Env("SMTP_PASS", "hunter2", R),
            Env("AWS_CREDS", "{\"a\":1}", R),
            Env("GCP_CREDS", "x", R),
            Env("GITHUB_APP_PRIVATE_KEY", "-----BEGIN", R),
            Env("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer abc,x-tenant=7", R),
            Env("PRODBG_TOKENS", "ops:admin:s3cr3t", R),
            Env("PRODBG_AUDIT_KEY", "00112233445566778899aabbccddeeff", R),
            Env("PGPASSWORD", "x", R),
            Env("MYSQL_PWD", "x", R),
            Env("SENTRY_DSN", "https://abc@o1.ingest.sentry.io/1", R),
            Env("SESSION_COOKIE", "x", R),
            Env("DB_PASSWORD", "", ""),
            // Environment: innocent names, secret values.
            Env("DATABASE_URL", "postgres://app:hunter2@db/app", "postgres://app:[redacted]@db/app"),
            Env("REDIS_URL", "redis://:hunter2@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
            Env("BACKUP_TARGET", "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=AbC%2Bdef", "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=[redacted]"),
            Env("CALLBACK", "https://api.example.com/cb?token=abc&page=2", "https://api.example.com/cb?token=[redacted]&page=2"),
            Env("LOGIN", "https://example.com/login?user=bob&password=hunter2", "https://example.com/login?user=bob&password=[redacted]"),
            Env("ALERTS", "https://discord.com/api/webhooks/123/abcDEF", "https://discord.com/api/webhooks/[redacted]"),
            Env("UPSTREAM", "https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r.git", "https://[redacted]@github.com/o/r.git"),
            Env("ID_TOKEN_X", "x", R),
            Env("WEIRD", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", R),
            Env("BLOB", "q8Xr/9mZ+Lk3pW0aVb7N2cYt4Hs6Ju1E/f5gR+w==", R),
            Env("OPAQUE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", R),
            Env("HEXY", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", R),
            // Ordinary values stay readable.
            Env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"),
            Env("RUST_LOG", "info,my_app=debug,tower_http=trace", "info,my_app=debug,tower_http=trace"),
            Env("HOME", "/root", "/root"),
            Env("PWD", "/srv/app", "/srv/app"),
            Env("SSH_AUTH_SOCK", "/tmp/ssh-XXXX/agent.123", "/tmp/ssh-XXXX/agent.123"),
            Env("DB_PASSWORD_FILE", "/run/secrets/db_password", "/run/secrets/db_password"),
            Env("LD_LIBRARY_PATH", "/usr/lib/x86_64-linux-gnu/libfoo/lib64/plugins", "/usr/lib/x86_64-linux-gnu/libfoo/lib64/plugins"),
            Env("APP_DIR", "/Users/JohnSmith/Library/ApplicationSupport2", "/Users/JohnSmith/Library/ApplicationSupport2"),
            Env("WORKERS", "16", "16"),
            Env("BUILD_NUMBER", "20260101120000", "20260101120000"),
            Env("TOKIO_WORKER_THREADS", "4", "4"),
            Env("LANG", "C.UTF-8", "C.UTF-8"),
            Env("KEYBOARD_LAYOUT", "us", "us"),
            Env("GIT_AUTHOR_NAME", "Ada Lovelace", "Ada Lovelace"),
            Env("TOKENIZERS_PARALLELISM", "false", "false"),
            Env("SERVICE_URL", "https://api.example.com/v1/users?page=2", "https://api.example.com/v1/users?page=2"),
            // Free-form values (span fields).
            Value("retrying with Bearer abc.def.ghi now", "retrying with Bearer [redacted] now"),
            Value("connect postgres://u:pw@h/db failed", "connect postgres://u:[redacted]@h/db failed"),
            Value("status=ok password=hunter2", "status=ok password=[redacted]"),
            Value("took 12 ms for 3 rows", "took 12 ms for 3 rows"),
            Value("https://s3.amazonaws.com/b/k?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=abc123", "https://s3.amazonaws.com/b/k?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]"),
            Value("https://app.example.com/cb#access_token=xyz&token_type=bearer", "https://app.example.com/cb#access_token=[redacted]&token_type=bearer"),
            // A closer the value opened goes with it; one that wraps the word stays.
            Value("password=[x]", "password=[redacted]"),
            Value("password=\"hunter2\", retrying", "password=\"[redacted]\", retrying"),
            Value("(password=hunter2)", "(password=[redacted])"),
            Value("[token=abc]", "[token=[redacted]]"),
            // JSON-valued variables: members judged by name, strings by value; cut JSON too.
            Env("SPRING_APPLICATION_JSON", r#"{"spring.datasource.url":"jdbc:postgresql://db/app","spring.datasource.password":"hunter two","server.port":8080}"#,
                r#"{"server.port":8080,"spring.datasource.password":"[redacted]","spring.datasource.url":"jdbc:postgresql://db/app"}"#),
            Env("VCAP_SERVICES", r#"{"p-mysql":[{"name":"db","credentials":{"password":"hunter2","uri":"mysql://u:hunter2@h/db"}}],"redis":[{"name":"cache","url":"redis://:s3cr3t@cache:6379"}]}"#,
                r#"{"p-mysql":[{"credentials":"[redacted]","name":"db"}],"redis":[{"name":"cache","url":"redis://:[redacted]@cache:6379"}]}"#),
            Env("APP_CONFIG", r#"[{"apiKey": 12345, "region": "eu"}]"#, r#"[{"apiKey":"[redacted]","region":"eu"}]"#),
            Env("PLAIN_JSON", r#"{"region":"eu","workers":4}"#, r#"{"region":"eu","workers":4}"#),
            Value(r#"{"user":"bob","password":"two words","nested":{"token":"abc"#, r#"{"user":"bob","password":"[redacted]","nested":{"token":"[redacted]"#),
            Value(r#"{"db": {"credentials": {"user": "u", "pass": "x y"}}, "n": 1"#, r#"{"db": {"credentials": [redacted]}, "n": 1"#),
            Value("Config { host: \"db\", password: \"two words\" }", "Config { host: \"db\", password: \"[redacted]\" }"),
            Value("password=\"hunter 2\" user=bob", "password=\"[redacted]\" user=bob"),
            // URL passwords holding `/`, `#`, `@`, `?`.
            Env("DATABASE_URL", "postgres://app:p/ss#w@rd@db:5432/app", "postgres://app:[redacted]@db:5432/app"),
            Env("DATABASE_URL", "postgres://app:p@ss@db/app", "postgres://app:[redacted]@db/app"),
            Env("CACHE_URL", "redis://:ab/cd?ef@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
            Env("AMQP_URL", "amqp://guest:a#b@rabbit/vhost", "amqp://guest:[redacted]@rabbit/vhost"),
            Env("SERVICE_URL", "https://api.example.com:8443/v1/users?mail=a@b.example", "https://api.example.com:8443/v1/users?mail=a@b.example"),
            Env("UPSTREAM", "http://[::1]:8080/x@y", "http://[::1]:8080/x@y"),
            // mysql `-pPASS`, redis `-a X` and `--requirepass X`, keytool `-storepass X`.
            Args(&["mysql", "-uroot", "-phunter2", "app"], &["mysql", "-uroot", "-p[redacted]", "app"]),
            Args(&["ssh", "-p2222", "host"], &["ssh", "-p2222", "host"]),
            Args(&["cc", "-pthread", "-pedantic", "-print"], &["cc", "-pthread", "-pedantic", "-print"]),
            Args(&["-password", "hunter2"], &["-password", R]),
            Args(&["redis-cli", "-a", "hunter2", "ping"], &["redis-cli", "-a", R, "ping"]),
            Args(&["redis-server", "--requirepass", "hunter2", "--port", "6379"], &["redis-server", "--requirepass", R, "--port", "6379"]),
            Args(&["redis-server", "--masterauth=hunter2"], &["redis-server", "--masterauth=[redacted]"]),
            Args(&["keytool", "-storepass", "changeit", "-keypass", "changeit"], &["keytool", "-storepass", R, "-keypass", R]),
            Args(&["app", "--config-json", r#"{"db":{"password":"x"}}"#], &["app", "--config-json", r#"{"db":{"password":"[redacted]"}}"#]),
            // Request paths (audit records).
            Path("/debug/pprof/profile", "/debug/pprof/profile"),
            Path("/debug/log-level", "/debug/log-level"),
            Path("/debug/tokio/tasks", "/debug/tokio/tasks"),
            Path("/debug/incidents/20261206T223000Z-cpu-1", "/debug/incidents/20261206T223000Z-cpu-1"),
            Path("/api/v1/users/12345/orders", "/api/v1/users/12345/orders"),
            Path("/reset/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "/reset/[redacted]"),
            Path("/hook/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U/x", "/hook/[redacted]/x"),
            Path("/dl/q8Xr9mZLk3pW0aVb7N2cYt4Hs6Ju1Ef5gRw", "/dl/[redacted]"),
            Path("/dl/q8Xr%2F9mZ%2BLk3pW0aVb7N2cYt4Hs6Ju1E", "/dl/[redacted]"),
            Path("/login/token=hunter2/next", "/login/[redacted]/next"),
            Path("/app;jsessionid=ABC123DEF456", "/app;jsessionid=[redacted]"),
            Path("/token/abc123", "/token/[redacted]"),
            Path("/token/refresh", "/token/refresh"),
            Path("/password-reset/Zx81Qa", "/password-reset/[redacted]"),
            Path("/gh/ghp_abcdefghijklmnopqrstuvwxyz0123456789", "/gh/[redacted]"),
        ]
    }

    #[test]
    fn redaction_table() {
        let mut failures = Vec::new();
        let cases = cases();
        assert!(cases.len() >= 30);
        for (i, case) in cases.iter().enumerate() {
            match case {
                Args(input, want) => {
                    let input: Vec<String> = input.iter().map(|s| s.to_string()).collect();
                    let got = redact_args(&input);
                    if got != *want {
                        failures.push(format!("#{i} args {input:?}: got {got:?}, want {want:?}"));
                    }
                }
                Env(name, value, want) => {
                    let got = redact_env(name, value);
                    if got != *want {
                        failures.push(format!(
                            "#{i} env {name}={value:?}: got {got:?}, want {want:?}"
                        ));
                    }
                }
                Value(value, want) => {
                    let got = redact_value(value);
                    if got != *want {
                        failures.push(format!("#{i} value {value:?}: got {got:?}, want {want:?}"));
                    }
                }
                Path(path, want) => {
                    let got = redact_path(path);
                    if got != *want {
                        failures.push(format!("#{i} path {path:?}: got {got:?}, want {want:?}"));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn unchanged_values_are_borrowed() {
        assert!(matches!(
            redact_value("info,my_app=debug"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            redact_query("seconds=30&format=pprof"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            redact_query("seconds=30&token=abc"),
            "seconds=30&token=[redacted]"
        );
    }

    #[test]
    fn json_members_are_judged_by_name_and_strings_by_value() {
        let mut doc = serde_json::json!({
            "user": "bob",
            "password": "hunter2",
            "apiKey": 12345,
            "credentials": {"id": "x", "nested": [1, 2]},
            "db_token": "",
            "session": null,
            "token_ttl": 900,
            "retries": 3,
            "enabled": true,
            "callback": "postgres://app:hunter2@db:5432/app",
            "list": [{"secret": "s3"}, "Bearer abc.def.ghi", "ghp_0123456789abcdefABCDEF0123"],
        });
        redact_json(&mut doc);
        assert_eq!(
            doc,
            serde_json::json!({
                "user": "bob",
                "password": R,
                "apiKey": R,
                "credentials": R,
                "db_token": "",
                "session": null,
                "token_ttl": 900,
                "retries": 3,
                "enabled": true,
                "callback": "postgres://app:[redacted]@db:5432/app",
                "list": [{"secret": R}, "Bearer [redacted]", R],
            })
        );
    }
}
