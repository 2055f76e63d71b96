//! PEM in, a checked rustls server configuration out.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::TlsSettings;

/// Largest PEM file read, in bytes (a chain of a few certificates is a few KiB).
pub(crate) const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where a PEM comes from: bytes given once, or a file re-read when it changes.
#[derive(Clone)]
pub(crate) enum Pem {
    /// Given to the builder; never changes.
    Bytes(Arc<[u8]>),
    /// Read at build, and again when [`super::reload`] sees it change.
    File(PathBuf),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never the bytes: one of them is a private key.
            Pem::Bytes(b) => write!(f, "Pem::Bytes({} bytes)", b.len()),
            Pem::File(p) => write!(f, "Pem::File({})", p.display()),
        }
    }
}

impl Pem {
    /// How errors name it: `file /path` or `the PEM given to .tls(..)`.
    fn origin(&self, what: &str) -> String {
        match self {
            Pem::File(p) => format!("{what} file {}", p.display()),
            Pem::Bytes(_) => format!("the {what} PEM given to the builder"),
        }
    }

    fn read(&self, what: &str) -> Result<Arc<[u8]>, String> {
        let path = match self {
            Pem::Bytes(b) => return Ok(b.clone()),
            Pem::File(p) => p,
        };
        let origin = self.origin(what);
        let file =
            std::fs::File::open(path).map_err(|e| format!("{origin}: cannot open it: {e}"))?;
        let mut bytes = Vec::new();
        file.take(MAX_PEM_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{origin}: cannot read it: {e}"))?;
        if bytes.len() as u64 > MAX_PEM_BYTES {
            return Err(format!(
                "{origin}: larger than {MAX_PEM_BYTES} bytes, too large for PEM certificates or a key"
            ));
        }
        Ok(bytes.into())
    }
}

/// One loaded configuration and what the logs and the audit record say of it.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// What new handshakes use.
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's serial number, hex.
    pub serial: String,
    /// The leaf certificate's subject.
    pub subject: String,
    /// The leaf certificate's validity, Unix seconds.
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
}

impl Loaded {
    /// `not_after` as RFC 3339.
    pub(crate) fn expires(&self) -> String {
        crate::encode::time::format(unix(self.not_after))
    }

    /// Logs the certificate now in use; WARN when it is expired or not yet valid (clients will
    /// refuse it) or expires within a week.
    pub(crate) fn log(&self, what: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (serial, subject, expires) = (&self.serial, &self.subject, self.expires());
        if now > self.not_after {
            tracing::warn!(target: "prodbg", %serial, %subject, %expires, "the admin server's TLS certificate has expired: clients will refuse it until it is renewed");
        } else if now < self.not_before {
            tracing::warn!(target: "prodbg", %serial, %subject, not_before = %crate::encode::time::format(unix(self.not_before)), "the admin server's TLS certificate is not valid yet: clients will refuse it (check the host's clock)");
        } else if self.not_after - now < 7 * 86_400 {
            tracing::warn!(target: "prodbg", %serial, %subject, %expires, "the admin server's TLS certificate expires within a week");
        } else {
            tracing::info!(target: "prodbg", %serial, %subject, %expires, "admin server TLS certificate {what}");
        }
    }
}

fn unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// The crypto provider every configuration uses: *ring*, chosen explicitly, so a host whose
/// dependency graph also enables rustls' aws-lc-rs gets the same server. rustls 0.23.48
/// deprecates it for lacking post-quantum key exchange; prodbg keeps it for its build (no C
/// library to compile beyond ring's own, no cmake) — docs/tls.md says so. Key exchange
/// prefers X25519, then P-256, then P-384 (ring's default list starts with P-384, whose key
/// agreement costs about 14 times X25519's here: `cargo bench --bench server_overhead`).
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

/// Reads and checks `settings` into a server configuration sharing `sessions`.
pub(crate) fn load(
    settings: &TlsSettings,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<Loaded, String> {
    let chain = certificates(&settings.cert, "TLS certificate")?;
    let key = private_key(&settings.key)?;
    let leaf = describe(&chain[0]).map_err(|e| {
        format!(
            "{}: the first certificate cannot be parsed: {e}",
            settings.cert.origin("TLS certificate")
        )
    })?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "{} and {}: {}",
            settings.cert.origin("TLS certificate"),
            settings.key.origin("TLS private key"),
            key_error(&e)
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "TLS client CA")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "{}: a certificate is not a usable CA: {e}",
                        ca.origin("TLS client CA")
                    )
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if settings.client_optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.origin("TLS client CA")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = sessions.clone();
    Ok(Loaded {
        config: Arc::new(config),
        serial: leaf.serial,
        subject: leaf.subject,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
    })
}

fn key_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate's public key (is the key of another certificate?)".into()
        }
        other => format!("the private key cannot be used: {other}"),
    }
}

/// Every `CERTIFICATE` block of `pem`, at least one.
fn certificates(pem: &Pem, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem.read(what)?;
    let origin = pem.origin(what);
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{origin}: not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{origin}: holds no certificate (expected a -----BEGIN CERTIFICATE----- block)"
        ));
    }
    Ok(certs)
}

/// The one private key of `pem` (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let what = "TLS private key";
    let bytes = pem.read(what)?;
    let origin = pem.origin(what);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{origin}: holds no private key (expected a -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)"
        ),
        other => format!("{origin}: not a valid PEM private key: {other}"),
    })
}

/// What x509-parser reads of a certificate that rustls does not expose.
pub(crate) struct Description {
    pub serial: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Serial, subject and validity of a DER certificate.
pub(crate) fn describe(der: &[u8]) -> Result<Description, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(Description {
        serial: cert.raw_serial_as_string().replace(':', ""),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}
