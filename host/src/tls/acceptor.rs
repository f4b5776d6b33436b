//! The server side of TLS for one `https` listener: the rustls config
//! (TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, certificates by SNI)
//! and the handshake of each accepted connection.
//!
//! The handshake runs in the connection's own task under the listener's
//! `handshake_timeout`, so a client that connects and stalls, or sends
//! garbage, costs one task for at most that long and never delays the
//! accept loop or other connections. A client that speaks plain HTTP to
//! the port gets a short `400` telling it to use `https://` (what nginx
//! does) instead of a TLS alert it cannot read.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::certs::{self, LoadedCertificate, PairFile};
use super::resolver::SniResolver;
use crate::config::ListenerConfig;

/// The first byte of every TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plaintext HTTP client on a TLS port is told.
const PLAINTEXT_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 43\r\n\
connection: close\r\n\r\n\
this port speaks TLS: use https:// instead\n";

/// A problem with one listener's TLS settings: `key` is relative to the
/// listener (`certificates[0].key`), `reason` names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError {
    /// Config key below `listeners[i]`.
    pub key: String,
    /// For a human.
    pub reason: String,
}

/// A listener's TLS server: certificates, protocol versions, ALPN, timeout.
pub struct TlsTerminator {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    /// DNS names by certificate, for logs and `Debug`.
    names: Vec<Vec<String>>,
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Why a connection never reached HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish in time.
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    /// The first bytes were not a TLS handshake (plain HTTP, a scanner).
    #[error("not TLS: the first byte is {0:#04x}")]
    NotTls(u8),
    /// The client closed before sending anything.
    #[error("closed before the handshake")]
    Closed,
    /// rustls refused the handshake, or the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl TlsTerminator {
    /// Loads and checks every certificate of `listener` and builds its TLS
    /// server; all problems are returned together.
    pub fn build(listener: &ListenerConfig) -> Result<TlsTerminator, Vec<TlsConfigError>> {
        let provider = super::provider();
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for (index, pair) in listener.certificates.iter().enumerate() {
            match certs::load(&pair.cert, &pair.key, &provider) {
                Ok(certificate) => loaded.push(certificate),
                Err(error) => errors.push(TlsConfigError {
                    key: match error.file {
                        PairFile::Cert => format!("certificates[{index}].cert"),
                        PairFile::Key => format!("certificates[{index}].key"),
                    },
                    reason: error.reason,
                }),
            }
        }
        errors.extend(nameless(&loaded));
        if !errors.is_empty() {
            return Err(errors);
        }
        let resolver =
            SniResolver::new(&listener.name, &loaded, listener.unknown_sni).ok_or_else(|| {
                vec![TlsConfigError {
                    key: "certificates".to_owned(),
                    reason: "an https listener needs at least one certificate".to_owned(),
                }]
            })?;
        let config = server_config(provider, resolver).map_err(|reason| {
            vec![TlsConfigError {
                key: "protocol".to_owned(),
                reason,
            }]
        })?;
        Ok(TlsTerminator {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: listener.handshake_timeout,
            names: loaded.into_iter().map(|c| c.names).collect(),
        })
    }

    /// Runs the server handshake on `stream`, bounded by the listener's
    /// `handshake_timeout`.
    pub async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let timeout = self.handshake_timeout;
        tokio::time::timeout(timeout, async {
            let stream = expect_tls(stream).await?;
            Ok(self.acceptor.accept(stream).await?)
        })
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
    }
}

/// Only the first (default) certificate may cover no DNS name: SNI could
/// never select any other.
fn nameless(loaded: &[LoadedCertificate]) -> Vec<TlsConfigError> {
    let later = loaded.iter().enumerate().skip(1);
    later
        .filter(|(_, c)| c.names.is_empty())
        .map(|(index, _)| TlsConfigError {
            key: format!("certificates[{index}].cert"),
            reason: "the certificate names no DNS name (subjectAltName or CN), so SNI can never select it; only the first certificate may".to_owned(),
        })
        .collect()
}

/// TLS 1.3 and 1.2 with the ring suites, ALPN `h2` then `http/1.1`.
fn server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: SniResolver,
) -> Result<ServerConfig, String> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Peeks at the first byte: a TLS handshake record passes; plain HTTP
/// gets a `400` and is closed; anything else is closed.
async fn expect_tls(mut stream: TcpStream) -> Result<TcpStream, HandshakeError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return Ok(stream);
    }
    if first[0].is_ascii_uppercase() {
        // Looks like an HTTP method; best effort, the socket closes anyway.
        let _ = stream.write_all(PLAINTEXT_REPLY).await;
        let _ = stream.shutdown().await;
    }
    Err(HandshakeError::NotTls(first[0]))
}

/// The SNI name and ALPN protocol a finished handshake agreed on.
pub fn negotiated(stream: &TlsStream<TcpStream>) -> (Option<Arc<str>>, Option<&[u8]>) {
    let (_, session) = stream.get_ref();
    (
        session.server_name().map(Arc::from),
        session.alpn_protocol(),
    )
}

/// Logs a failed handshake at debug level: clients fail handshakes all
/// the time (scanners, closed tabs), it is never the proxy's fault.
pub fn log_failure(listener: &str, peer: SocketAddr, error: &HandshakeError) {
    tracing::debug!(listener, %peer, %error, "TLS handshake failed");
}
