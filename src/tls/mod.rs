//! TLS on the admin listener (feature `tls`): rustls with the *ring* provider, HTTP/1.1 over
//! ALPN `http/1.1`, TLS 1.2 and 1.3 with rustls' safe defaults.
//!
//! - [`load`]: certificate chain, key and client CA from PEM, checked (a key that does not
//!   match, a CA file without a certificate, an expired certificate) into a server config;
//! - [`clients`]: verified client certificates standing for tokens (subject CN or SAN → name
//!   and scope);
//! - [`reload`]: files re-read when they change; a new file that fails to load keeps the old
//!   configuration, logged and audited;
//! - [`accept`]: the handshake of one connection, under the connection caps and their
//!   timeouts; a plaintext request is answered with a clear refusal, not a hang.

pub(crate) mod accept;
pub(crate) mod clients;
pub(crate) mod load;
pub(crate) mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

pub(crate) use clients::ClientMap;
pub(crate) use load::Pem;

/// How often certificate files are checked for changes by default.
pub(crate) const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// What the builder collected: where the certificate, key and client CA come from, which
/// client certificates stand for which tokens, and whether a client without one may still use
/// a token.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub clients: ClientMap,
    pub client_optional: bool,
    pub reload_every: Duration,
}

impl TlsSettings {
    /// The files to watch (none when every PEM was given as bytes).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                Pem::File(path) => Some(path.clone()),
                Pem::Bytes(_) => None,
            })
            .collect()
    }
}

/// The live TLS state of a server: the configuration new handshakes use (swapped on
/// rotation), the session cache every configuration shares (so resumption survives a
/// rotation), and the client map.
#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) settings: TlsSettings,
    current: ArcSwap<load::Loaded>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Tls {
    /// Loads `settings` (every error names the file and what is wrong with it) and logs the
    /// certificate's subject, serial and expiry, with a WARN when it is expired or not yet
    /// valid.
    pub(crate) fn new(settings: TlsSettings) -> Result<Arc<Tls>, String> {
        let sessions: Arc<dyn rustls::server::StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(256);
        let loaded = load::load(&settings, &sessions)?;
        loaded.log("loaded");
        Ok(Arc::new(Tls {
            settings,
            current: ArcSwap::from_pointee(loaded),
            sessions,
        }))
    }

    /// The configuration new handshakes use.
    pub(crate) fn current(&self) -> Arc<load::Loaded> {
        self.current.load_full()
    }

    /// Loads the files again; on success new handshakes use them, on failure the old
    /// configuration stays.
    pub(crate) fn reload(&self) -> Result<Arc<load::Loaded>, String> {
        let loaded = Arc::new(load::load(&self.settings, &self.sessions)?);
        self.current.store(loaded.clone());
        Ok(loaded)
    }
}
