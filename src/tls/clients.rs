//! Client certificates that stand for tokens: a verified certificate whose subject CN, or one
//! of whose DNS SANs, is a mapped name calls as the token of that name and scope.

use std::sync::Arc;

use crate::security::tokens::Token;
use crate::security::Scope;

/// Most names mapped (each is compared with the names of every verified client certificate).
pub(crate) const MAX_CLIENTS: usize = 64;

/// Certificate names → the token each stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientMap {
    entries: Vec<Arc<Token>>,
}

impl ClientMap {
    /// Parses `PRODBG_TLS_CLIENTS`: `name:scope` entries separated by commas, e.g.
    /// `prometheus:read,oncall:admin`.
    pub(crate) fn parse(text: &str) -> Result<ClientMap, String> {
        let mut map = ClientMap::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, scope)) = entry.rsplit_once(':') else {
                return Err(format!(
                    "TLS client entry {entry:?} is malformed: expected name:scope, e.g. prometheus:read"
                ));
            };
            let scope = scope
                .trim()
                .parse::<Scope>()
                .map_err(|e| format!("TLS client {name:?}: {e}"))?;
            map.add(name.trim(), scope)?;
        }
        Ok(map)
    }

    /// Maps certificates named `name` (subject CN or DNS SAN) to a token of that name
    /// holding `scope`.
    pub(crate) fn add(&mut self, name: &str, scope: Scope) -> Result<(), String> {
        if self.entries.iter().any(|t| t.name() == name) {
            return Err(format!("TLS client {name:?} is mapped twice"));
        }
        if self.entries.len() >= MAX_CLIENTS {
            return Err(format!(
                "more than {MAX_CLIENTS} TLS client names are mapped"
            ));
        }
        let token = Token::for_certificate(name, scope).map_err(|e| format!("TLS client: {e}"))?;
        self.entries.push(Arc::new(token));
        Ok(())
    }

    /// Whether no name is mapped.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The mapped names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|t| t.name())
    }

    /// The mapped names and their scopes.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, Scope)> {
        self.entries.iter().map(|t| (t.name(), t.scope()))
    }

    /// The token a verified client certificate (DER) stands for: the first of its subject CNs,
    /// then of its DNS SANs, that is mapped. `None` for a certificate that names no
    /// mapped client (it must then present a token like any client).
    pub(crate) fn identify(&self, der: &[u8]) -> Option<Arc<Token>> {
        if self.entries.is_empty() {
            return None;
        }
        names_in(der)
            .iter()
            .find_map(|n| self.entries.iter().find(|t| t.name() == n).cloned())
    }
}

/// The subject CNs and DNS SANs of a DER certificate, in that order.
pub(crate) fn names_in(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        }));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_names_and_scopes_and_refuses_bad_entries() {
        let map = ClientMap::parse("prometheus:read, oncall:admin").unwrap();
        assert_eq!(map.names().collect::<Vec<_>>(), ["prometheus", "oncall"]);
        for (text, needle) in [
            ("prometheus", "malformed"),
            ("prometheus:root", "unknown scope"),
            ("a:read,a:admin", "twice"),
            ("bad name:read", "name"),
        ] {
            let err = ClientMap::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
