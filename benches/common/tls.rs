//! TLS clients of the admin server under test: a test CA and server certificate (rcgen), and
//! rustls client connections over blocking TCP, with or without session resumption.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

/// A CA's certificate (PEM) and a server certificate and key (PEM) it signed for 127.0.0.1.
pub fn pki() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (issuer.pem(), server.pem(), key.serialize_pem())
}

/// A rustls client config trusting `ca_pem`; `resume`: keep sessions for resumption. It sends
/// an X25519 key share first, as curl, Go, Chromium and Prometheus do (ring's own default
/// list starts with P-384).
#[allow(deprecated)]
pub fn client_config(ca_pem: &str, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    use rustls::crypto::ring::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

/// A TLS stream over blocking TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake: the stream, the handshake's time (TCP connect
/// included) and whether it was resumed.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> (TlsStream, Duration, bool) {
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn = ClientConnection::new(config.clone(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let took = start.elapsed();
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    (StreamOwned::new(conn, sock), took, resumed)
}
