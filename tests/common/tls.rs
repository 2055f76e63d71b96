//! A test PKI made with rcgen: a CA, server certificates for 127.0.0.1 and localhost, client
//! certificates by name, and clients (reqwest, curl) that trust it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Pair {
    /// Writes `name.crt` and `name.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &self.cert).unwrap();
        std::fs::write(&k, &self.key).unwrap();
        (c, k)
    }

    /// cert + key, the form reqwest's `Identity::from_pem` takes.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert, self.key).as_bytes()).unwrap()
    }
}

/// A CA that signs servers and clients (or, made [`from_pem`](Ca::from_pem), only trusts).
pub struct Ca {
    issuer: Option<CertifiedIssuer<'static, KeyPair>>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// A CA known by its certificate only: it makes clients that trust it, and signs nothing.
    pub fn from_pem(pem: &str) -> Ca {
        Ca {
            issuer: None,
            pem: pem.to_string(),
        }
    }

    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca {
            issuer: Some(issuer),
            pem,
        }
    }

    /// A server certificate for 127.0.0.1, ::1 and localhost with serial `serial`.
    pub fn server(&self, serial: u64) -> Pair {
        self.server_with(serial, |_| {})
    }

    /// [`server`](Self::server), with `edit` applied to the parameters (e.g. validity dates).
    pub fn server_with(&self, serial: u64, edit: impl FnOnce(&mut CertificateParams)) -> Pair {
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "prodbg-test-server");
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        self.sign(params)
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let issuer = self
            .issuer
            .as_ref()
            .expect("a CA made from_pem signs nothing");
        let cert = params.signed_by(&key, issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A reqwest client trusting this CA (and nothing else), presenting `identity` if given.
    pub fn reqwest(&self, identity: Option<&Pair>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .tls_info(true)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(id) = identity {
            b = b.identity(id.identity());
        }
        b.build().unwrap()
    }
}

/// The serial number (hex, lower case, no separators) of the certificate a TLS response came
/// over.
pub fn peer_serial(response: &reqwest::Response) -> String {
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info (the client is built with tls_info(true))");
    let der = info.peer_certificate().expect("a server certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string().replace(':', "").to_lowercase()
}
