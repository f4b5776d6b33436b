//! TLS for the end-to-end tests: certificates generated per test with
//! rcgen (a test CA and leaf certificates for chosen names), written as
//! PEM files, and a real rustls client that reports which certificate the
//! proxy presented and which ALPN protocol it chose, then speaks HTTP/1.1
//! or HTTP/2 over the connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::STEP;
use crate::client::{Reply, empty};

/// The crypto provider of the test clients (the proxy's, too).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority that issues leaf certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

/// A leaf certificate and its key, as PEM text and the leaf's DER.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM: the leaf, then the CA.
    pub chain_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
    /// The leaf, to recognise it on the wire.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A fresh CA with an ECDSA P-256 key.
    pub fn new() -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasmroute test CA");
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate as PEM (for `curl --cacert`).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate (a trust anchor for clients).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A leaf for `names` (DNS names, wildcards allowed), with a fresh key
    /// of `alg` (e.g. `&rcgen::PKCS_ECDSA_P256_SHA256`).
    pub fn leaf_with(
        &self,
        names: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> anyhow::Result<Leaf> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        edit(&mut params);
        let key = KeyPair::generate_for(alg)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// An ECDSA P-256 leaf for `names`.
    pub fn leaf(&self, names: &[&str]) -> anyhow::Result<Leaf> {
        self.leaf_with(names, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {})
    }
}

impl Leaf {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.chain_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A rustls client: what it trusts, which ALPN protocols it offers.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts `ca` only and verifies the server name; offers `alpn`.
    pub fn trusting(ca: &TestCa, alpn: &[&str]) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone())?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Accepts any certificate (to look at what a server presents for a
    /// name it does not cover); signatures are still checked.
    pub fn accepting_any(alpn: &[&str]) -> anyhow::Result<TlsClient> {
        let verifier = Arc::new(AcceptAny(provider()));
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// The same client without the SNI extension (`name` is still what
    /// the certificate is verified against).
    pub fn without_sni(&self) -> TlsClient {
        let mut config = (*self.config).clone();
        config.enable_sni = false;
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// Connects and completes the handshake for `name`, within [`STEP`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
        tcp.set_nodelay(true)?;
        self.connect_on(tcp, name).await
    }

    /// Completes the handshake for `name` on a connected `tcp` (which may
    /// have carried bytes before, such as a PROXY protocol header), within
    /// [`STEP`].
    pub async fn connect_on(
        &self,
        tcp: TcpStream,
        name: &str,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(name.to_owned())?;
        let connector = TlsConnector::from(Arc::clone(&self.config));
        Ok(tokio::time::timeout(STEP, connector.connect(name, tcp)).await??)
    }
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()?
        .first()
        .map(|c| c.clone().into_owned())
}

/// The ALPN protocol the server chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<String> {
    let (_, session) = stream.get_ref();
    session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// One open HTTP connection over TLS (HTTP/2 when ALPN chose `h2`).
pub enum TlsHttp {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<crate::client::ReqBody>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<crate::client::ReqBody>),
}

impl TlsHttp {
    /// Starts HTTP on `stream` per its ALPN result.
    pub async fn start(stream: TlsStream<TcpStream>) -> anyhow::Result<TlsHttp> {
        let h2 = alpn(&stream).as_deref() == Some("h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(TlsHttp::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Ok(TlsHttp::H1(send))
        }
    }

    /// GET `https://<host><path>` on this connection, read whole within [`STEP`].
    pub async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<Reply> {
        let exchange = async {
            let response = match self {
                TlsHttp::H1(send) => {
                    let request = Request::get(path).header("host", host).body(empty())?;
                    send.ready().await?;
                    send.send_request(request).await?
                }
                TlsHttp::H2(send) => {
                    let request = Request::get(format!("https://{host}{path}"))
                        .version(Version::HTTP_2)
                        .body(empty())?;
                    send.ready().await?;
                    send.send_request(request).await?
                }
            };
            let (parts, body) = response.into_parts();
            let body: Bytes = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("GET {path}: no reply within {STEP:?}"))?
    }
}

/// Accepts every certificate; still verifies handshake signatures, so the
/// server must hold the key of what it presents.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS backend on `127.0.0.1:0` serving `leaf` over HTTP/1.1: every
/// answer is `tls-backend sni=<SNI or ->`, with `x-backend: tls-backend`.
/// Stops when dropped.
pub struct TlsBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    /// Binds and starts serving.
    pub async fn start(leaf: &Leaf) -> anyhow::Result<TlsBackend> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = stream.get_ref().1.server_name().unwrap_or("-").to_owned();
                    let service = hyper::service::service_fn(move |_req| {
                        let body = format!("tls-backend sni={sni}");
                        async move {
                            http::Response::builder()
                                .header("x-backend", "tls-backend")
                                .body(http_body_util::Full::new(Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(TlsBackend { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
