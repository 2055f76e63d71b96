//! Redaction of secrets from what prodbg shows: command-line arguments, environment variables,
//! and any value that looks like a credential.

/// What replaces a redacted value.
pub(crate) const REDACTED: &str = "[redacted]";

const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "key",
    "credential",
    "auth",
    "private",
    "cookie",
    "session",
    "signature",
    "dsn",
];

/// Whether a variable or option name suggests it holds a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Whether a value looks like a credential: a URL with a password, or a long unbroken
/// token-like string (32+ characters of base64/hex/JWT alphabet with letters and digits).
pub(crate) fn looks_like_credential(value: &str) -> bool {
    if let Some((_, rest)) = value.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            return userinfo.contains(':');
        }
    }
    value.len() >= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-.".contains(&b))
        && value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().any(|b| b.is_ascii_alphabetic())
        && !value.contains('/')
}

/// `value`, or [`REDACTED`] when the name or the value looks secret.
pub(crate) fn redact_value(name: &str, value: &str) -> String {
    if is_secret_name(name) || looks_like_credential(value) {
        REDACTED.to_string()
    } else {
        value.to_string()
    }
}

pub(crate) fn redact_arg(arg: &str) -> String {
    match arg.split_once('=') {
        Some((k, v)) if is_secret_name(k) || looks_like_credential(v) => format!("{k}={REDACTED}"),
        _ if looks_like_credential(arg) => REDACTED.to_string(),
        _ => arg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_names_and_credential_values() {
        assert_eq!(redact_value("DATABASE_PASSWORD", "hunter2"), REDACTED);
        assert_eq!(redact_value("PRODBG_TOKENS", "ops:admin:x"), REDACTED);
        assert_eq!(
            redact_value("DATABASE_URL", "postgres://app:hunter2@db/app"),
            REDACTED
        );
        assert_eq!(
            redact_value("WEIRD", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"),
            REDACTED
        );
        assert_eq!(redact_value("HOME", "/root"), "/root");
        assert_eq!(
            redact_value("RUST_LOG", "info,my_app=debug"),
            "info,my_app=debug"
        );
        assert_eq!(
            redact_value("PATH", "/usr/local/bin:/usr/bin"),
            "/usr/local/bin:/usr/bin"
        );
        assert_eq!(
            redact_arg("--db-password=hunter2"),
            format!("--db-password={REDACTED}")
        );
        assert_eq!(redact_arg("--port=8080"), "--port=8080");
    }
}
