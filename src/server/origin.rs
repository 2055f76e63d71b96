//! Where a request comes from: the `Host` it names (DNS rebinding) and the page that made a
//! browser send it (CSRF). The rules are stated in docs/security.md.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::Request;
use axum::http::{header, Method};

use crate::seam::ApiError;
use crate::security::Scope;

/// The host names this server answers to besides IP literals and `localhost`: the bind
/// address's name and the configured ones (`AdminBuilder::allowed_hosts`,
/// `PRODBG_ALLOWED_HOSTS`). `*` turns the check off.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedHosts {
    names: Vec<String>,
    any: bool,
}

impl AllowedHosts {
    /// From names as configured (case and a trailing dot ignored; `*.example.com` allows
    /// every subdomain of `example.com`; `*` allows any name).
    pub(crate) fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> AllowedHosts {
        let mut out = AllowedHosts::default();
        for n in names {
            let n = normalize(n.as_ref());
            if n == "*" {
                out.any = true;
            } else if !n.is_empty() && !out.names.contains(&n) {
                out.names.push(n);
            }
        }
        out
    }

    /// Whether `host` (a `Host` header's value: `name`, `name:port`, `[v6]:port`) names this
    /// server. An IP literal always does: a page can only be served from an IP literal by the
    /// server at that address, so rebinding needs a name.
    pub(crate) fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = strip_port(host);
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        let name = normalize(name);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.names
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(parent) => name
                    .strip_suffix(parent)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => *allowed == name,
            })
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `name` of `name:port` (`[v6]` of `[v6]:port`).
fn strip_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Refuses a request naming a host this server does not answer to: 421, saying how to allow it.
/// A request without `Host` (HTTP/1.0) is not from a browser and passes.
pub(crate) fn check_host(req: &Request, allowed: &AllowedHosts) -> Result<(), ApiError> {
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    });
    match host {
        Some(h) if !allowed.allows(h) => Err(ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this server does not answer to the host {:?} (a page on another name pointed at this address, DNS rebinding, is refused this way): use its IP address or localhost, or allow the name with AdminBuilder::allowed_hosts or PRODBG_ALLOWED_HOSTS",
                clip(h, 64)
            ),
        )),
        _ => Ok(()),
    }
}

/// What the CSRF check let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// Same origin, a typed URL, or a client that is not a browser.
    Own,
    /// A top-level `GET` navigation from another site (a link clicked there): it may read,
    /// never start profile-scope work.
    Navigation,
}

/// The CSRF defence. A browser that holds Basic credentials for this server sends them with
/// any request a page of another site makes it send, so requests that a browser marks as
/// coming from another origin are refused with 403:
///
/// - `Sec-Fetch-Site` (every current browser sends it): `same-origin` and `none` (typed URL,
///   bookmark) pass; `same-site` (another port of the same host counts as same-site) and
///   `cross-site` pass only for a top-level `GET` navigation (a link clicked elsewhere), never
///   for a method that changes something nor for a sub-resource (`<img>`, `<iframe>`,
///   `fetch`) — and [`check_navigation`] keeps such a navigation off profile-scope routes;
/// - without it, an `Origin` header on a `POST`/`PUT`/`DELETE` must name this host;
/// - neither header: a `POST`/`PUT`/`DELETE` with Basic credentials (what a browser adds by
///   itself) is refused, except Go's symbol lookup `POST /debug/pprof/symbol` (`go tool
///   pprof` sends URL credentials as Basic); one with a bearer token or none (curl, scripts) passes —
///   no page can make a browser add an `Authorization: Bearer` header to another origin's
///   request.
pub(crate) fn check_origin(req: &Request) -> Result<Site, ApiError> {
    let headers = req.headers();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let refuse = |what: String| {
        ApiError::forbidden(format!(
            "cross-origin request refused ({what}): a page of another origin cannot use this browser's credentials here; open the console at this server's own /debug/ or use curl"
        ))
    };
    match get("sec-fetch-site") {
        Some("same-origin" | "none") => return Ok(Site::Own),
        Some(site) => {
            let top_level = get("sec-fetch-mode") == Some("navigate")
                && get("sec-fetch-dest").is_none_or(|d| d == "document");
            if *req.method() == Method::GET && top_level {
                return Ok(Site::Navigation);
            }
            return Err(refuse(format!("Sec-Fetch-Site: {}", clip(site, 32))));
        }
        None => {}
    }
    if safe {
        return Ok(Site::Own);
    }
    let Some(origin) = get("origin") else {
        let basic = get("authorization").is_some_and(|a| {
            a.split_once(' ')
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        });
        // Go's symbol lookup (a POST that changes nothing) is what `go tool pprof` sends with
        // URL credentials, as Basic.
        let symbol_lookup = req.uri().path() == "/debug/pprof/symbol";
        if basic && !symbol_lookup {
            return Err(ApiError::forbidden(format!(
                "a {} with Basic credentials must carry an Origin or Sec-Fetch-Site header, as every current browser sends, since a browser adds Basic credentials by itself; from a script send the token as Authorization: Bearer <secret>",
                req.method()
            )));
        }
        return Ok(Site::Own);
    };
    let host = get("host").unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    if same {
        Ok(Site::Own)
    } else {
        Err(refuse(format!("Origin: {}", clip(origin, 64))))
    }
}

/// Refuses profile-scope work (profiles, dumps, bundles, and anything above) to a navigation
/// from another site: a link elsewhere must not make an operator's browser start it.
pub(crate) fn check_navigation(site: Option<Site>, needed: Option<Scope>) -> Result<(), ApiError> {
    match (site, needed) {
        (Some(Site::Navigation), Some(scope)) if scope >= Scope::Profile => {
            Err(ApiError::forbidden(format!(
                "a link from another site cannot start {scope}-scope work: open this URL from this server's console, or paste it into the address bar"
            )))
        }
        _ => Ok(()),
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost_always_pass_names_only_when_allowed() {
        let none = AllowedHosts::default();
        for ok in [
            "127.0.0.1:6060",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:6060",
            "[2001:db8::1]",
            "localhost:6060",
            "LocalHost.",
            "app.localhost:1",
        ] {
            assert!(none.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:6060",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "x",
            "",
        ] {
            assert!(!none.allows(bad), "{bad}");
        }
        let some = AllowedHosts::new(["Admin.Internal.", "*.svc.cluster.local"]);
        assert!(some.allows("admin.internal:6060"));
        assert!(some.allows("app.ns.svc.cluster.local:6060"));
        assert!(!some.allows("svc.cluster.local"));
        assert!(!some.allows("evilsvc.cluster.local"));
        assert!(!some.allows("other.internal"));
        assert!(AllowedHosts::new(["*"]).allows("anything.example"));
    }
}
