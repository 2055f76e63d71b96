//! How guessable a secret is: an estimate of its bits from its length and the character
//! classes it uses, so a short or low-variety secret is refused at start, not found by an
//! attacker.

/// Fewest estimated bits a secret (a token's, the audit key) must carry.
pub(crate) const MIN_BITS: f64 = 128.0;
/// Fewest distinct characters a secret must use (`aaaa…`, `abab…` carry almost nothing).
pub(crate) const MIN_DISTINCT: usize = 8;

/// Estimated bits of `secret`: its length in characters × log2 of the alphabet its character
/// classes span — 16 when it is all hex digits, 10 all decimal digits, else the sum of those
/// it uses of lowercase (26), uppercase (26), digits (10), ASCII symbols (33) and non-ASCII
/// (128). `openssl rand -hex 16` gives 128; 16 random printable characters about 105.
pub(crate) fn estimated_bits(secret: &str) -> f64 {
    let chars = secret.chars().count() as f64;
    let alphabet = if !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_digit()) {
        10
    } else if !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        16
    } else {
        let has = |f: fn(char) -> bool| secret.chars().any(f);
        [
            (has(|c| c.is_ascii_lowercase()), 26),
            (has(|c| c.is_ascii_uppercase()), 26),
            (has(|c| c.is_ascii_digit()), 10),
            (has(|c| c.is_ascii() && !c.is_ascii_alphanumeric()), 33),
            (has(|c| !c.is_ascii()), 128),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, n)| n)
        .sum()
    };
    if alphabet < 2 {
        return 0.0;
    }
    chars * f64::from(alphabet).log2()
}

/// Why `secret` is too weak, or `None`. The reason never holds the secret.
pub(crate) fn weakness(secret: &str) -> Option<String> {
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        return Some(format!(
            "it uses {} distinct characters; at least {MIN_DISTINCT} are needed",
            distinct.len()
        ));
    }
    let bits = estimated_bits(secret);
    if bits < MIN_BITS {
        return Some(format!(
            "it carries about {} bits; at least {MIN_BITS} bits are needed (32 hex digits, 22 base64 \
             characters or 20 mixed printable ones; `openssl rand -hex 32` or \
             prodbg::generate_secret() make one)",
            bits.floor()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_plain_secrets_are_weak_and_random_ones_pass() {
        for weak in [
            "0123456789abcdef0123456789abcde", // 31 hex digits: 124 bits
            "0123456789abcdefgh",              // 18 of [a-z0-9]: 93 bits
            "Kx8!mQ2#vL9@pR4$",                // 16 printable: 105 bits
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababababababababab",
            "12345678901234567890123456789012345678", // 38 digits: 126 bits
        ] {
            assert!(weakness(weak).is_some(), "{weak}");
            assert!(!weakness(weak).unwrap().contains(weak));
        }
        for strong in [
            "0123456789abcdef0123456789abcdef", // 32 hex digits: 128 bits
            "admin-secret-0123456789abcdef",
            "a-long-random-secret-from-your-vault",
            "q8Xr9mZLk3pW0aVb7N2cYt", // 22 base64: 131 bits
            &crate::security::tokens::generate_secret().unwrap(),
        ] {
            assert_eq!(weakness(strong), None, "{strong}");
        }
    }
}
