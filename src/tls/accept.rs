//! One connection's handshake: what the first byte says (a TLS record, or a plaintext request
//! to refuse), the handshake itself, and who the verified client certificate names.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::Tls;
use crate::security::tokens::Token;

/// The first byte of every TLS connection: a handshake record (`ContentType::Handshake`).
const HANDSHAKE_RECORD: u8 = 0x16;

/// Whether a connection whose first byte is `first` starts a TLS handshake (else it is a
/// plaintext client, answered with [`PLAINTEXT_REFUSAL`]).
pub(crate) fn is_tls(first: u8) -> bool {
    first == HANDSHAKE_RECORD
}

/// What a plaintext request to the TLS port is told before the connection closes.
pub(crate) const PLAINTEXT_REFUSAL: &str = "this admin port speaks HTTPS (TLS): use https:// instead of http:// (curl needs --cacert with the CA that signed the server's certificate)";

impl Tls {
    /// Runs the server side of the handshake over `io` with the current configuration; the
    /// caller bounds it in time. Returns the stream and the token the client certificate
    /// stands for, if any.
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<(TlsStream<IO>, Option<Arc<Token>>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.current().config.clone();
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(io).await?;
        let who = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| self.settings.clients.identify(leaf));
        Ok((stream, who))
    }
}
