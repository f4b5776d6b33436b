//! TLS from the proxy to a pool's backends (`[pools.tls]`), for
//! re-encryption: each backend of such a pool is verified against the
//! configured CA (or the system's roots) under the configured server name
//! (sent as SNI), or its IP address when no name is configured.
//!
//! The settings are built (and checked) while a config is planned
//! ([`UpstreamTlsPlan`]) and handed to each backend when its pool is built
//! (`crate::pool`), so a new connection reads them from its own backend:
//! no process-wide table. One address speaks one protocol: a config that
//! puts an address in two pools with different `tls` settings is refused.
//! Pooled connections belong to a backend of one committed config, so a
//! reload that changes a pool's TLS settings starts new connections.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Config, UpstreamTlsConfig};
use crate::tls::TlsConfigError;

/// How to speak TLS to one backend.
pub struct BackendTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// The TLS settings of a config's backends, built (and checked) while
/// planning, handed to the backends when their pools are built.
#[derive(Default, Clone)]
pub struct UpstreamTlsPlan {
    /// `None`: the address speaks plain HTTP.
    by_address: HashMap<SocketAddr, Option<Arc<BackendTls>>>,
}

impl UpstreamTlsPlan {
    /// Builds the TLS client of every pool with `[pools.tls]`; problems
    /// come back with keys relative to the config (`pools[1].tls.ca`).
    pub fn build(config: &Config) -> Result<UpstreamTlsPlan, Vec<TlsConfigError>> {
        let mut plan = UpstreamTlsPlan::default();
        let mut settings: HashMap<SocketAddr, (usize, Option<&UpstreamTlsConfig>)> = HashMap::new();
        let mut errors = Vec::new();
        for (index, pool) in config.pools.iter().enumerate() {
            let client = match &pool.tls {
                None => None,
                Some(tls) => match client_config(index, tls) {
                    Ok(client) => Some((client, tls)),
                    Err(error) => {
                        errors.push(error);
                        continue;
                    }
                },
            };
            for backend in &pool.backends {
                let address = backend.address;
                if let Some((first, other)) = settings.insert(address, (index, pool.tls.as_ref()))
                    && other != pool.tls.as_ref()
                {
                    errors.push(TlsConfigError {
                        key: format!("pools[{index}].tls"),
                        reason: format!(
                            "backend {address} is also in pools[{first}] with other TLS settings; an address speaks one protocol"
                        ),
                    });
                }
                let tls = client
                    .as_ref()
                    .map(|(client, tls)| backend_tls(client, tls, address));
                plan.by_address.insert(address, tls);
            }
        }
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors)
        }
    }

    /// How to speak to `address` (`None`: plain TCP, or not in the
    /// config).
    pub fn for_address(&self, address: SocketAddr) -> Option<Arc<BackendTls>> {
        self.by_address.get(&address).cloned().flatten()
    }
}

fn backend_tls(
    client: &Arc<ClientConfig>,
    tls: &UpstreamTlsConfig,
    address: SocketAddr,
) -> Arc<BackendTls> {
    let server_name = tls
        .server_name
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
    Arc::new(BackendTls {
        connector: TlsConnector::from(Arc::clone(client)),
        server_name,
    })
}

/// A TLS client trusting `tls.ca` (or the system's roots), TLS 1.2 and
/// 1.3, offering `http/1.1` (the upstream client speaks HTTP/1.1).
fn client_config(
    index: usize,
    tls: &UpstreamTlsConfig,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let error = |field: &str, reason: String| TlsConfigError {
        key: format!("pools[{index}].tls.{field}"),
        reason,
    };
    let roots = match &tls.ca {
        Some(path) => ca_roots(path).map_err(|reason| error("ca", reason))?,
        None => system_roots().map_err(|reason| error("ca", reason))?,
    };
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&versions)
        .map_err(|e| error("ca", format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn ca_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no system CA certificates found ({}); set ca",
            errors.join("; ")
        ));
    }
    Ok(roots)
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// The TLS handshake over a connected TCP stream.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<MaybeTls> {
        let name = self.server_name.clone();
        let stream = self.connector.connect(name, tcp).await?;
        Ok(MaybeTls::Tls(Box::new(stream)))
    }
}

/// An upstream connection: plain TCP or TLS over TCP (tokio I/O; hyper's
/// client wraps it in `TokioIo`).
pub enum MaybeTls {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTP over TLS (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_a_tls_and_a_plain_pool_is_refused() {
        let text = r#"
[policies]
dir = "p"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
policy = "rr"
pools = ["plain", "secure"]
[[pools]]
name = "plain"
backends = [{ address = "127.0.0.1:9001" }]
[[pools]]
name = "secure"
backends = [{ address = "127.0.0.1:9001" }]
[pools.tls]
server_name = "a.test"
"#;
        let config = Config::parse(text, std::path::Path::new("/x/w.toml")).unwrap();
        let errors = UpstreamTlsPlan::build(&config).err().expect("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "pools[1].tls");
        assert!(
            errors[0].reason.contains("also in pools[0]"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn names_default_to_the_backend_ip() {
        let client = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let client = Arc::new(client);
        let address = "10.0.0.7:443".parse().unwrap();
        let by_ip = backend_tls(&client, &UpstreamTlsConfig::default(), address);
        assert_eq!(by_ip.server_name.to_str(), "10.0.0.7");
        let named = UpstreamTlsConfig {
            ca: None,
            server_name: Some("api.internal".into()),
        };
        let by_name = backend_tls(&client, &named, address);
        assert_eq!(by_name.server_name.to_str(), "api.internal");
    }
}
