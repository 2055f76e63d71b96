//! What a host endpoint's request leaves in its audit record: the body's size and SHA-256 and a
//! bounded copy with secrets redacted, and the handler's own details, bounded. No HTTP here.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::security::redact::{redact_json, redact_query, redact_value};

/// Largest copy of a body kept, in bytes of its redacted JSON or text.
pub(crate) const MAX_COPY: usize = 1024;
/// Bodies up to this size that parse as JSON are redacted as JSON, whole, before the copy is
/// cut; a larger body's first [`TEXT_WINDOW`] bytes are redacted as text.
const MAX_PARSE: usize = 64 * 1024;
/// See [`MAX_PARSE`].
const TEXT_WINDOW: usize = 4 * 1024;
/// Longest `content_type` kept.
const MAX_CONTENT_TYPE: usize = 128;
/// Longest handler detail value kept, in bytes of JSON.
pub(crate) const MAX_DETAIL_VALUE: usize = 1024;
/// Most handler detail entries kept.
pub(crate) const MAX_DETAILS: usize = 32;

/// A request body, as its audit record tells it (`details.request_body`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BodyRecord {
    /// Size in bytes.
    pub(crate) bytes: usize,
    /// SHA-256 of the exact bytes the handler received, lowercase hex.
    pub(crate) sha256: String,
    /// The `Content-Type` header, clipped to 128 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
    /// The body parsed as JSON with secrets redacted, when that fits in 1 KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) json: Option<Value>,
    /// Otherwise the first 1 KiB of the redacted JSON or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// Whether `text` stops before the body's end.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) truncated: bool,
    /// The body is not UTF-8: no copy is kept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) binary: bool,
}

/// Describes `body` for the audit record.
pub(crate) fn describe(content_type: Option<&str>, body: &[u8]) -> BodyRecord {
    let mut rec = BodyRecord {
        bytes: body.len(),
        sha256: hex::encode(Sha256::digest(body)),
        content_type: content_type.map(|c| clip(c, MAX_CONTENT_TYPE).to_string()),
        json: None,
        text: None,
        truncated: false,
        binary: false,
    };
    if body.is_empty() {
        return rec;
    }
    if body.len() <= MAX_PARSE {
        if let Ok(mut doc) = serde_json::from_slice::<Value>(body) {
            redact_json(&mut doc);
            let rendered = doc.to_string();
            if rendered.len() <= MAX_COPY {
                rec.json = Some(doc);
            } else {
                rec.text = Some(clip(&rendered, MAX_COPY).to_string());
                rec.truncated = true;
            }
            return rec;
        }
    }
    let window = if body.len() <= MAX_PARSE {
        body
    } else {
        &body[..TEXT_WINDOW]
    };
    let text = match std::str::from_utf8(window) {
        Ok(t) => t,
        // Cut inside a character at the window's end: keep what comes before it.
        Err(e) if e.error_len().is_none() && window.len() < body.len() => {
            std::str::from_utf8(&window[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => {
            rec.binary = true;
            return rec;
        }
    };
    // A form by the rules of the record's query; other text word by word.
    let form = content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let redacted = if form {
        redact_query(text)
    } else {
        redact_value(text)
    }
    .into_owned();
    let copy = clip(&redacted, MAX_COPY);
    rec.truncated = copy.len() < redacted.len() || window.len() < body.len();
    rec.text = Some(copy.to_string());
    rec
}

/// Bounds a handler's details: at most [`MAX_DETAILS`] entries (the rest are dropped and
/// counted in `details_dropped`), each value at most [`MAX_DETAIL_VALUE`] bytes of JSON (a
/// longer one becomes its clipped rendering, ending in `…`).
pub(crate) fn bound_details(details: &mut Map<String, Value>) {
    if details.len() > MAX_DETAILS {
        let dropped = details.len() - MAX_DETAILS;
        let keep: Map<String, Value> = std::mem::take(details)
            .into_iter()
            .take(MAX_DETAILS)
            .collect();
        *details = keep;
        details.insert("details_dropped".into(), dropped.into());
    }
    for value in details.values_mut() {
        let rendered = match &mut *value {
            Value::String(s) if s.len() <= MAX_DETAIL_VALUE => continue,
            Value::String(s) => std::mem::take(s),
            other => other.to_string(),
        };
        if rendered.len() > MAX_DETAIL_VALUE {
            let end = MAX_DETAIL_VALUE - '…'.len_utf8();
            *value = Value::String(format!("{}…", clip(&rendered, end)));
        }
    }
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_small_json_body_is_kept_redacted_with_its_digest() {
        let body = br#"{"user":"bob","password":"hunter2","ttl":30}"#;
        let rec = describe(Some("application/json"), body);
        assert_eq!(rec.bytes, body.len());
        assert_eq!(rec.sha256, hex::encode(Sha256::digest(body)));
        assert_eq!(
            rec.json,
            Some(json!({"user": "bob", "password": "[redacted]", "ttl": 30}))
        );
        assert_eq!((rec.text, rec.truncated, rec.binary), (None, false, false));
    }

    #[test]
    fn json_sent_as_a_form_is_still_redacted_as_json() {
        // `curl -d '{…}'` says application/x-www-form-urlencoded.
        let rec = describe(
            Some("application/x-www-form-urlencoded"),
            br#"{"api_key":"k-123"}"#,
        );
        assert_eq!(rec.json, Some(json!({"api_key": "[redacted]"})));
    }

    #[test]
    fn a_large_json_body_keeps_its_first_kib_redacted_before_the_cut() {
        let items: Vec<Value> = (0..200)
            .map(|i| json!({"id": i, "secret": format!("s3cr3t-{i}")}))
            .collect();
        let body = serde_json::to_vec(&json!({ "items": items })).unwrap();
        let rec = describe(Some("application/json"), &body);
        let text = rec.text.unwrap();
        assert!(rec.truncated && rec.json.is_none());
        assert!(text.len() <= MAX_COPY, "{}", text.len());
        assert!(
            text.starts_with(r#"{"items":[{"id":0,"secret":"[redacted]"}"#),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn form_and_text_bodies_are_redacted_by_name_and_by_value() {
        let rec = describe(
            Some("application/x-www-form-urlencoded"),
            b"user=bob&password=hunter2&mode=fast",
        );
        assert_eq!(
            rec.text.as_deref(),
            Some("user=bob&password=[redacted]&mode=fast")
        );
        let rec = describe(
            Some("text/plain"),
            b"rotate now, Authorization: Bearer abc.def",
        );
        assert_eq!(
            rec.text.as_deref(),
            Some("rotate now, Authorization: [redacted] [redacted]")
        );
        assert!(!rec.truncated);
    }

    #[test]
    fn a_body_over_the_parse_limit_is_judged_by_its_first_window() {
        let mut body = b"token=ghp_0123456789abcdefABCDEF0123 ".to_vec();
        body.resize(MAX_PARSE + 10, b'x');
        let rec = describe(None, &body);
        let text = rec.text.unwrap();
        assert!(text.starts_with("token=[redacted] xxx"), "{text}");
        assert!(rec.truncated && text.len() <= MAX_COPY);
        assert_eq!(rec.bytes, MAX_PARSE + 10);
    }

    #[test]
    fn binary_and_empty_bodies_keep_size_and_digest_only() {
        let rec = describe(Some("application/octet-stream"), &[0xff, 0x00, 0xfe]);
        assert!(rec.binary && rec.text.is_none() && rec.json.is_none());
        assert_eq!(rec.bytes, 3);
        let rec = describe(None, b"");
        assert_eq!(rec.bytes, 0);
        assert_eq!(
            rec.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(rec.text.is_none() && rec.json.is_none() && !rec.binary);
        assert_eq!(
            serde_json::to_value(&rec).unwrap(),
            json!({"bytes": 0, "sha256": rec.sha256})
        );
    }

    #[test]
    fn handler_details_are_bounded() {
        let mut details: Map<String, Value> =
            (0..40).map(|i| (format!("k{i:02}"), json!(i))).collect();
        details.insert("k00".into(), json!("é".repeat(2000)));
        details.insert("k01".into(), json!({"list": vec![7; 1000]}));
        bound_details(&mut details);
        assert_eq!(details.len(), MAX_DETAILS + 1);
        assert_eq!(details["details_dropped"], 8);
        for key in ["k00", "k01"] {
            let s = details[key].as_str().unwrap();
            assert!(
                s.len() <= MAX_DETAIL_VALUE && s.ends_with('…'),
                "{key}: {s}"
            );
        }
        assert!(details["k01"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"list":[7,7"#));
        assert_eq!(details["k02"], 2);
    }
}
