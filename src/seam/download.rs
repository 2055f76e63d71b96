//! File names of downloads, for the incident ticket: `<service>-<what>-<time>.<ext>`, e.g.
//! `checkout-cpu-2026-12-01T03-04-05Z.pb.gz`, so that `curl -OJ` and a browser save files
//! that say what they hold and stay apart.

use std::time::SystemTime;

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The `Content-Security-Policy` of an inferno SVG served as a document (a frame of the
/// console, or opened directly): its own inline script (search, zoom) and style may run,
/// nothing may load, only this server's pages may frame it, and it runs sandboxed (an opaque
/// origin: its script cannot reach the console page or the API).
pub(crate) const SVG_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox allow-scripts";

/// `<service>-<what>-<time>.<ext>`: the service name reduced to `A-Z a-z 0-9 . _ -` (others
/// become `_`, at most 64 characters, never starting with `.`), the time as
/// [`file_stamp`](crate::encode::time::file_stamp).
pub(crate) fn file_name(service: &str, what: &str, at: SystemTime, ext: &str) -> String {
    let mut name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    while name.starts_with('.') {
        name.remove(0);
    }
    if name.is_empty() {
        name.push_str("service");
    }
    format!(
        "{name}-{what}-{}.{ext}",
        crate::encode::time::file_stamp(at)
    )
}

/// `Content-Disposition: attachment; filename="…"` (saved) for `name` from [`file_name`].
pub(crate) fn attachment(name: &str) -> HeaderValue {
    disposition("attachment", name)
}

/// `Content-Disposition: inline; filename="…"` (shown by a browser, saved by `curl -OJ`).
pub(crate) fn inline(name: &str) -> HeaderValue {
    disposition("inline", name)
}

/// A profile's response in `format` (`svg`, `folded`, else gzipped pprof): its content type, a
/// disposition named `name(ext)`, the SVG's [`SVG_CSP`], and the `x-prodbg-*` figures in
/// `figures` (a value that is not header-safe has its non-ASCII and control characters blanked).
pub(crate) fn profile_response(
    format: &str,
    name: impl Fn(&str) -> String,
    body: Vec<u8>,
    figures: &[(&'static str, String)],
) -> Response {
    let (content_type, disposition) = match format {
        "svg" => ("image/svg+xml", inline(&name("svg"))),
        "folded" => ("text/plain; charset=utf-8", inline(&name("folded.txt"))),
        _ => ("application/octet-stream", attachment(&name("pb.gz"))),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if format == "svg" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    for (name, value) in figures {
        let clean = value.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), " ");
        if let Ok(v) = HeaderValue::from_str(&clean) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    response
}

fn disposition(kind: &str, name: &str) -> HeaderValue {
    // `file_name` only produces header-safe characters; anything else is replaced anyway.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!("{kind}; filename=\"{safe}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn names_are_filesystem_safe() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_558_245);
        assert_eq!(
            file_name("checkout", "cpu", t, "pb.gz"),
            "checkout-cpu-2025-12-01T03-04-05Z.pb.gz"
        );
        assert_eq!(
            file_name("../my svc:\"x\"/é", "heap", t, "svg"),
            "_my_svc__x___-heap-2025-12-01T03-04-05Z.svg"
        );
        assert_eq!(
            file_name("..", "bundle", t, "tar.gz"),
            "service-bundle-2025-12-01T03-04-05Z.tar.gz"
        );
        assert_eq!(
            attachment("a-cpu-x.pb.gz"),
            "attachment; filename=\"a-cpu-x.pb.gz\""
        );
    }
}
