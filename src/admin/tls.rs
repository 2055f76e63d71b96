//! The builder's TLS settings: certificates, client certificates, and the refusal of plain
//! HTTP off loopback.

use std::time::Duration;
#[cfg(feature = "tls")]
use std::{path::PathBuf, sync::Arc};

use super::AdminBuilder;
use crate::error::Error;
#[cfg(feature = "tls")]
use crate::security::Scope;
#[cfg(feature = "tls")]
use crate::tls::{ClientMap, Pem, TlsSettings};

/// The variables [`AdminBuilder::env`] reads for TLS.
const TLS_VARS: [&str; 5] = [
    "PRODBG_TLS_CERT",
    "PRODBG_TLS_KEY",
    "PRODBG_TLS_CLIENT_CA",
    "PRODBG_TLS_CLIENTS",
    "PRODBG_TLS_CLIENT_OPTIONAL",
];

/// What the TLS calls collected, assembled by [`AdminBuilder::build`].
#[derive(Debug, Default)]
pub(super) struct TlsOptions {
    #[cfg(feature = "tls")]
    cert_and_key: Option<(Pem, Pem)>,
    #[cfg(feature = "tls")]
    client_ca: Option<Pem>,
    #[cfg(feature = "tls")]
    clients: ClientMap,
    #[cfg(feature = "tls")]
    client_optional: bool,
    #[cfg(feature = "tls")]
    reload_every: Option<Duration>,
    pub(super) allow_plaintext: bool,
}

impl TlsOptions {
    /// The settings to serve with, `None` for plain HTTP; client settings without a
    /// certificate are an error.
    #[cfg(feature = "tls")]
    pub(super) fn settings(&self) -> Result<Option<TlsSettings>, Error> {
        let Some((cert, key)) = self.cert_and_key.clone() else {
            if self.client_ca.is_some() || !self.clients.is_empty() {
                return Err(Error::Config(
                    "a TLS client CA or client names need the server's own certificate: add \
                     .tls(..) / .tls_files(..) or PRODBG_TLS_CERT and PRODBG_TLS_KEY"
                        .into(),
                ));
            }
            return Ok(None);
        };
        if !self.clients.is_empty() && self.client_ca.is_none() {
            return Err(Error::Config(
                "TLS client names are mapped but no client CA is set to verify their \
                 certificates: add .tls_client_ca_file(..) or PRODBG_TLS_CLIENT_CA"
                    .into(),
            ));
        }
        Ok(Some(TlsSettings {
            cert,
            key,
            client_ca: self.client_ca.clone(),
            clients: self.clients.clone(),
            client_optional: self.client_optional,
            reload_every: self
                .reload_every
                .unwrap_or(crate::tls::DEFAULT_RELOAD_EVERY),
        }))
    }

    /// Whether client certificates can stand for tokens.
    pub(super) fn has_clients(&self) -> bool {
        #[cfg(feature = "tls")]
        return !self.clients.is_empty();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl AdminBuilder {
    /// Serves HTTPS with `cert_chain_pem` (the server's certificate first, then its
    /// intermediates) and `private_key_pem` (PKCS#8, PKCS#1 or SEC1), both PEM text. TLS 1.2
    /// and 1.3 with rustls' safe defaults, ALPN `http/1.1`. These never change; certificates
    /// that rotate come from [`tls_files`](Self::tls_files). A key that does not match the
    /// certificate, or PEM without a certificate or a key, is an error of
    /// [`build`](Self::build); an expired certificate a WARN.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(
        mut self,
        cert_chain_pem: impl AsRef<[u8]>,
        private_key_pem: impl AsRef<[u8]>,
    ) -> Self {
        self.tls.cert_and_key = Some((
            Pem::Bytes(Arc::from(cert_chain_pem.as_ref())),
            Pem::Bytes(Arc::from(private_key_pem.as_ref())),
        ));
        self
    }

    /// Serves HTTPS with the PEM files at `cert_chain` and `private_key` (also
    /// `PRODBG_TLS_CERT` and `PRODBG_TLS_KEY`), re-read when they change (checked every
    /// [`tls_reload_interval`](Self::tls_reload_interval)): new handshakes use the new
    /// certificate, and files that fail to load keep the old one, with a WARN and an audit
    /// record saying why. Point them at a Kubernetes secret mount (cert-manager's `tls.crt`
    /// and `tls.key`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_files(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Self {
        self.tls.cert_and_key = Some((Pem::File(cert_chain.into()), Pem::File(private_key.into())));
        self
    }

    /// Asks every client for a certificate signed by one of the CAs in `ca_pem` (PEM text):
    /// connections without one are refused at the handshake, unless
    /// [`tls_client_optional`](Self::tls_client_optional).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_ca(mut self, ca_pem: impl AsRef<[u8]>) -> Self {
        self.tls.client_ca = Some(Pem::Bytes(Arc::from(ca_pem.as_ref())));
        self
    }

    /// [`tls_client_ca`](Self::tls_client_ca) from a file (also `PRODBG_TLS_CLIENT_CA`),
    /// re-read when it changes like the certificate.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.client_ca = Some(Pem::File(path.into()));
        self
    }

    /// Lets a verified client certificate whose subject CN or a DNS SAN is `name` call as a
    /// token named `name` holding `scope`, without a bearer token; its audit records name it
    /// with `"via":"client-cert"`. `PRODBG_TLS_CLIENTS=prometheus:read,oncall:admin` maps
    /// several. A request that also sends `Authorization` is judged by that header. Needs a
    /// client CA.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client(mut self, name: &str, scope: Scope) -> Self {
        if let Err(e) = self.tls.clients.add(name, scope) {
            self.keep_error(Error::Config(e));
        }
        self
    }

    /// With a client CA, whether a client without a certificate may still connect and use a
    /// token (`PRODBG_TLS_CLIENT_OPTIONAL=1`). Default `false`: refused at the handshake.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_optional(mut self, optional: bool) -> Self {
        self.tls.client_optional = optional;
        self
    }

    /// How often the TLS files are checked for changes (a `stat` of each). Default 10 s.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_reload_interval(mut self, every: Duration) -> Self {
        if every < Duration::from_millis(100) {
            self.keep_error(Error::Config(
                "the TLS reload interval must be at least 100 ms".into(),
            ));
        } else {
            self.tls.reload_every = Some(every);
        }
        self
    }

    /// Allows plain HTTP on an address that is not loopback (`PRODBG_ALLOW_PLAINTEXT=1`), where
    /// [`spawn`](Self::spawn) otherwise refuses it: say so only where something else encrypts
    /// the traffic (a mesh sidecar, a VPN). The server then WARNs at spawn.
    pub fn allow_plaintext(mut self) -> Self {
        self.tls.allow_plaintext = true;
        self
    }

    /// Reads the TLS variables (see [`env`](Self::env)).
    pub(super) fn tls_env(&mut self) {
        match std::env::var("PRODBG_ALLOW_PLAINTEXT").as_deref() {
            Ok("1" | "true" | "yes") => self.tls.allow_plaintext = true,
            Ok("0" | "false" | "no" | "") | Err(_) => {}
            Ok(other) => self.keep_error(Error::Config(format!(
                "PRODBG_ALLOW_PLAINTEXT is {:?}: expected 1 or 0",
                other.chars().take(16).collect::<String>()
            ))),
        }
        let set: Vec<&str> = TLS_VARS
            .into_iter()
            .filter(|v| std::env::var_os(v).is_some())
            .collect();
        if set.is_empty() {
            return;
        }
        #[cfg(not(feature = "tls"))]
        self.keep_error(Error::Config(format!(
            "{} is set but prodbg was built without its `tls` feature: enable it \
             (prodbg = {{ features = [\"tls\"] }})",
            set[0]
        )));
        #[cfg(feature = "tls")]
        if let Err(e) = self.tls_env_read() {
            self.keep_error(e);
        }
    }

    #[cfg(feature = "tls")]
    fn tls_env_read(&mut self) -> Result<(), Error> {
        let path = |var: &str| -> Result<Option<PathBuf>, Error> {
            match std::env::var_os(var) {
                None => Ok(None),
                Some(v) if v.is_empty() => Err(Error::Config(format!("{var} is set but empty"))),
                Some(v) => Ok(Some(PathBuf::from(v))),
            }
        };
        {
            match (path("PRODBG_TLS_CERT")?, path("PRODBG_TLS_KEY")?) {
                (Some(c), Some(k)) => {
                    self.tls.cert_and_key = Some((Pem::File(c), Pem::File(k)));
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(Error::Config(
                        "PRODBG_TLS_CERT is set without PRODBG_TLS_KEY: set both".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(Error::Config(
                        "PRODBG_TLS_KEY is set without PRODBG_TLS_CERT: set both".into(),
                    ))
                }
            }
            if let Some(ca) = path("PRODBG_TLS_CLIENT_CA")? {
                self.tls.client_ca = Some(Pem::File(ca));
            }
            if let Ok(list) = std::env::var("PRODBG_TLS_CLIENTS") {
                let map = ClientMap::parse(&list)
                    .map_err(|e| Error::Config(format!("PRODBG_TLS_CLIENTS: {e}")))?;
                for (name, scope) in map.entries() {
                    self.tls
                        .clients
                        .add(name, scope)
                        .map_err(|e| Error::Config(format!("PRODBG_TLS_CLIENTS: {e}")))?;
                }
            }
            match std::env::var("PRODBG_TLS_CLIENT_OPTIONAL").as_deref() {
                Ok("1" | "true" | "yes") => self.tls.client_optional = true,
                Ok("0" | "false" | "no" | "") | Err(_) => {}
                Ok(_) => {
                    return Err(Error::Config(
                        "PRODBG_TLS_CLIENT_OPTIONAL: expected 1 or 0".into(),
                    ))
                }
            }
            Ok(())
        }
    }
}
