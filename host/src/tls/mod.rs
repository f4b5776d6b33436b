//! TLS at the edge: `https` listeners terminate TLS with rustls and serve
//! HTTP/1.1 or HTTP/2 (by ALPN) over it; `http` listeners may instead
//! redirect every request to https.
//!
//! - [`certs`]: PEM loading and the checks that make a bad certificate a
//!   `FILE: key: reason` error at `check` and reload, not a failed handshake;
//! - [`resolver`]: the certificate for a ClientHello's SNI name (exact,
//!   wildcard, default), per `unknown_sni`;
//! - [`acceptor`]: the rustls server config and the handshake under
//!   `handshake_timeout`;
//! - the `301` redirect listener is HTTP's (`crate::http::redirect`), TLS
//!   to backends the upstream layer's (`crate::upstream::tls`); serving an
//!   accepted connection is the listener's (`crate::listener`).
//!
//! This module reads the config only: nothing above it.
//!
//! Why rustls with the **ring** provider rather than aws-lc-rs: ring builds
//! with just a C compiler, while aws-lc-rs needs cmake (and NASM on some
//! targets) at build time, which a fresh machine with only rustup does not
//! have; the README promises that `cargo build` works there. Both give
//! TLS 1.2 and 1.3 with ECDHE, AES-GCM and ChaCha20-Poly1305 and sign with
//! RSA, ECDSA and Ed25519 keys, so nothing a client sees changes.
//!
//! How certificates change at run time: a listener's [`Frontend`] lives in
//! its `ListenerState`, which a reload replaces atomically. Certificate
//! files are watched like the config file, and a change re-plans the
//! config; a pair that fails its checks refuses the whole reload, so the
//! old certificates keep serving and the log says why. New connections
//! pick the new [`TlsTerminator`] when they are accepted; open connections
//! already finished their handshake and keep going untouched.

pub mod acceptor;
pub mod certs;
pub mod resolver;

use std::sync::Arc;

pub use acceptor::{HandshakeError, TlsConfigError, TlsTerminator};
pub use resolver::SniResolver;

use crate::config::{ListenerConfig, Protocol};

/// The crypto provider every TLS config of the proxy uses (see the module docs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a listener does with a new connection before HTTP.
#[derive(Debug, Clone, Default)]
pub enum Frontend {
    /// Plain HTTP to the proxy.
    #[default]
    Plain,
    /// TLS handshake first (`protocol = "https"`).
    Tls(Arc<TlsTerminator>),
    /// Plain HTTP answered with redirects to this https port.
    RedirectToHttps(u16),
}

impl Frontend {
    /// The frontend `listener` asks for, loading its certificates.
    pub fn build(listener: &ListenerConfig) -> Result<Frontend, Vec<TlsConfigError>> {
        if listener.protocol == Protocol::Https {
            return Ok(Frontend::Tls(Arc::new(TlsTerminator::build(listener)?)));
        }
        Ok(match listener.redirect_to_https {
            Some(port) => Frontend::RedirectToHttps(port),
            None => Frontend::Plain,
        })
    }
}

/// Every certificate and key file the config's listeners use, in order.
pub fn certificate_files(config: &crate::config::Config) -> Vec<std::path::PathBuf> {
    let pairs = config.listeners.iter().flat_map(|l| &l.certificates);
    pairs
        .flat_map(|pair| [pair.cert.clone(), pair.key.clone()])
        .collect()
}

/// A digest of the contents of [`certificate_files`] (an unreadable file
/// counts as its error), so a reload can tell whether any of them changed
/// even when the config text did not.
pub fn certificate_digest(config: &crate::config::Config) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for path in certificate_files(config) {
        hasher.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => hasher.update(Sha256::digest(&bytes)),
            Err(error) => hasher.update(error.to_string()),
        }
    }
    hasher.finalize().into()
}
