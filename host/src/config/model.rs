//! The validated config: what the rest of the proxy reads.
//!
//! Every value here has been checked and every default filled in; relative
//! paths are already resolved against the config file's folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A whole config file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (as given), for messages and reloads.
    pub file: PathBuf,
    pub admin: Option<AdminConfig>,
    /// `[server]`: the process's own lifecycle (drain, upgrade).
    pub server: ServerConfig,
    /// `[access_log]`; none (no access log) when the section is absent.
    pub access_log: Option<AccessLogConfig>,
    pub policies: PoliciesConfig,
    /// At least one.
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    /// `[resolver]`: how backend names are resolved (defaults when absent).
    pub resolver: ResolverConfig,
}

/// `[resolver]`: where backend names (`address = "name:port"`) are looked
/// up and how often again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// `nameservers = ["IP:port", ...]`, asked over UDP (TCP for answers
    /// too long for it); empty: the system's (`/etc/resolv.conf`, and the
    /// hosts file).
    pub nameservers: Vec<SocketAddr>,
    /// How often every name is resolved again; never longer than the
    /// answer's TTL when it has one. Default 5s; more than zero.
    pub refresh: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            refresh: Duration::from_secs(5),
        }
    }
}

/// `[admin]`: the admin endpoint, present only when the section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9901`.
    pub address: SocketAddr,
    /// The bearer token state-changing requests need; without one they
    /// are accepted from loopback peers only. 16 to 256 visible ASCII
    /// characters.
    pub token: Option<String>,
}

/// `[server]`: how the process stops and hands over (every key optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a drain (SIGTERM, an upgrade, a removed listener) waits for
    /// in-flight requests before closing what is left. Default 30s; more
    /// than zero.
    pub drain_timeout: Duration,
    /// The unix socket a running instance listens on for
    /// `serve --upgrade`. `None`: the default, derived from the config
    /// file's path by the server (`server::upgrade::default_socket`).
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: Duration::from_secs(30),
            upgrade_socket: None,
        }
    }
}

/// `[access_log]`: one line per request, written off the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Where the lines go.
    pub target: LogTarget,
    /// How a line is written. Default `json`.
    pub format: LogFormat,
    /// Lines waiting for the writer at most; past it lines are dropped
    /// (and counted). Default 8192; 1..=1048576.
    pub queue: usize,
}

/// Where access log lines go: `path = "-"` or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to; resolved against the config file's folder.
    File(PathBuf),
}

/// The line format of the access log: `"json"` or `"combined"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's `combined`, then the upstream address and time.
    Combined,
}

/// `[policies]`: where policy modules live and what each call may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoliciesConfig {
    /// Resolved against the config file's folder when relative.
    pub dir: PathBuf,
    /// Default 5ms; more than zero.
    pub decision_timeout: Duration,
    /// Bytes; default 16 MiB, at least 1 MiB, at most 4 GiB.
    pub memory_limit: u64,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// Default `http`.
    pub protocol: Protocol,
    /// File stem of a module in `policies.dir`.
    pub policy: String,
    /// Pools the policy may pick, each defined; the first is the default.
    pub pools: Vec<String>,
    /// Default `fallback`.
    pub on_error: OnError,
    /// Free-form, handed to the policy's init. Empty when absent.
    pub policy_config: toml::Table,
    /// Only for `https`, where at least one is required; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// `https` only: how long a client may take to complete the TLS
    /// handshake. Default 10s; more than zero.
    pub handshake_timeout: Duration,
    /// `https` only: what a ClientHello naming no configured certificate
    /// gets. Default `default`.
    pub unknown_sni: UnknownSni,
    /// `http` only: answer every request with a 301 to
    /// `https://<host>[:port]<path>` instead of proxying it. Default none.
    pub redirect_to_https: Option<u16>,
    /// The listen queue length asked of the kernel (which caps it at
    /// `net.core.somaxconn`). Applies when the socket is bound: at start,
    /// or on a reload that changes the listener's address. Default 4096;
    /// 1..=65535.
    pub backlog: u32,
    /// The longest a write of response bytes to the client may stall (the
    /// client not reading) before the connection is closed. Default 60s;
    /// more than zero. A reload applies it to the next request.
    pub send_timeout: Duration,
    /// `accept_proxy_protocol`: connections from `trusted_proxies` start
    /// with a PROXY protocol header (v1 or v2) whose source address is
    /// the client's. Default false.
    pub accept_proxy_protocol: bool,
    /// `trusted_proxies`: the peers whose header is believed; required (not
    /// empty) with `accept_proxy_protocol`, refused without it.
    pub trusted_proxies: Vec<super::Cidr>,
    /// `tcp` only: the relay's timeouts (defaults on other listeners,
    /// where they are refused if set).
    pub tcp: TcpTimeouts,
    /// `[listeners.shadow]`: a candidate policy that decides sampled
    /// requests after the live one, for comparison only; none when absent.
    pub shadow: Option<ShadowConfig>,
}

/// `[listeners.shadow]`: shadow decisions. The candidate decides on the
/// same request view after the live decision; its answer is counted and
/// compared, never served.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// File stem of the candidate module in `policies.dir`; never the
    /// listener's own `policy`.
    pub policy: String,
    /// The share of requests the candidate decides, `0.0..=1.0`. Default 1.0.
    pub sample: f64,
    /// Handed to the candidate's init. Default: the listener's `policy_config`.
    pub policy_config: toml::Table,
    /// The candidate's own decision deadline. `None`: `policies.decision_timeout`.
    pub decision_timeout: Option<Duration>,
}

/// The timeouts of a `tcp` listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// `peek_timeout`: how long a connection whose policy reads the TLS
    /// ClientHello may take to send it before it is decided without one.
    /// Default 5s; more than zero.
    pub peek: Duration,
    /// `idle_timeout`: a relay that carries no byte in either direction
    /// for this long is closed (both sides). Default 1h; more than zero.
    pub idle: Duration,
}

impl Default for TcpTimeouts {
    fn default() -> Self {
        TcpTimeouts {
            peek: Duration::from_secs(5),
            idle: Duration::from_secs(3600),
        }
    }
}

/// What an `https` listener does with an SNI name none of its
/// certificates covers: `"default"` or `"refuse"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSni {
    /// Serve the first (default) certificate, like a client without SNI.
    Default,
    /// Fail the handshake (the client gets a TLS alert).
    Refuse,
}

/// What a listener speaks: `"http"`, `"https"` or `"tcp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Tcp,
}

/// What a listener does when its policy fails (trap, timeout, bad answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Host round-robin over the healthy backends of the default (first) pool.
    Fallback,
    /// Refuse: 503 with a short body (HTTP), or close the connection (TCP).
    Reject,
}

/// One `[[listeners.certificates]]` entry; paths resolved like `policies.dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One `[[pools]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    /// Addresses distinct. As loaded: the entries given as `IP:port`; as
    /// served: those, then the addresses `names` resolved to (see
    /// `crate::dns`). A pool has at least one entry of either kind.
    pub backends: Vec<BackendConfig>,
    /// The entries given by name (`name:port` or `srv`), in file order:
    /// each address a name resolves to is one backend with the entry's
    /// weight.
    pub names: Vec<NamedBackend>,
    /// Active health check; none when `[pools.health]` is absent.
    pub health: Option<HealthConfig>,
    /// Response header in which backends report their utilization
    /// (`cpu=0.42, mem=0.61`). Default `X-Backend-Load`; stripped from
    /// responses before they reach the client.
    pub load_header: http::HeaderName,
    /// Timeouts and retries of requests to this pool's backends.
    pub upstream: UpstreamConfig,
    /// Passive health checking (outlier detection); none when
    /// `[pools.passive] enabled = false`. On by default.
    pub passive: Option<PassiveConfig>,
    /// `[pools.tls]`: speak TLS to this pool's backends; none (plain HTTP)
    /// when the table is absent.
    pub tls: Option<UpstreamTlsConfig>,
    /// What a backend's connections become when its active check marks it
    /// down.
    pub on_down: OnDown,
    /// `proxy_protocol`: the PROXY protocol header every new connection to
    /// the pool's backends starts with; none when absent. Such connections
    /// carry one client connection's requests and are never pooled.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A PROXY protocol version (`"v1"`: the text line, `"v2"`: binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header with its 12-byte signature.
    V2,
}

/// `[pools.tls]`: TLS from the proxy to a pool's backends (re-encryption).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CA certificates to trust; none: the system's roots.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified in the backend's certificate;
    /// none: the backend's IP address (verified, no SNI sent).
    pub server_name: Option<String>,
}

/// An empty pool with every default: a base for struct literals in tests
/// and benches (`PoolConfig { name, backends, ..Default::default() }`).
impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: String::new(),
            backends: Vec::new(),
            names: Vec::new(),
            health: None,
            load_header: http::HeaderName::from_static("x-backend-load"),
            upstream: UpstreamConfig::default(),
            passive: Some(PassiveConfig::default()),
            tls: None,
            on_down: OnDown::Keep,
            proxy_protocol: None,
        }
    }
}

/// The per-pool timeouts and retry budget (keys directly in `[[pools]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `connect_timeout`: TCP connect to a backend. Default 2s; > 0.
    pub connect_timeout: Duration,
    /// `response_timeout`: from the start of an attempt (connect included)
    /// to the backend's response head; past it the client gets a 504.
    /// Default 30s; > 0.
    pub response_timeout: Duration,
    /// `idle_timeout`: the longest pause between two pieces of a response
    /// body streaming from the backend; past it the response is cut off.
    /// Default 60s; > 0.
    pub idle_timeout: Duration,
    /// `retries`: further attempts, each on a backend not tried yet, after
    /// a failure that is safe to retry. Default 2; at most 10; 0 = none.
    pub retries: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            retries: 2,
        }
    }
}

/// `[pools.passive]`: outlier detection on live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Eject after this many failures in a row (connect failure, timeout,
    /// reset, 5xx). Default 5; 0 turns the rule off.
    pub consecutive_failures: u32,
    /// Eject when the failure share over the error window (10-20 s) is
    /// above this percentage. Default 0 (rule off); at most 100.
    pub error_rate_percent: u32,
    /// The error-rate rule needs at least this many requests in the window.
    /// Default 20; >= 1.
    pub min_requests: u32,
    /// The first ejection lasts this long; each further one twice as long
    /// as the previous. Default 30s; > 0.
    pub ejection_time: Duration,
    /// Cap of the ejection time; also how long a backend must stay in
    /// before its back-off starts over. Default 5m; >= `ejection_time`.
    pub max_ejection_time: Duration,
    /// At most this share of the pool's backends is ejected at once
    /// (rounded down). Default 50; at most 100.
    pub max_ejected_percent: u32,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            consecutive_failures: 5,
            error_rate_percent: 0,
            min_requests: 20,
            ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    /// Default 1; at least 1.
    pub weight: u32,
}

/// A backend entry given by DNS name: `address = "name:port"` (each A
/// and AAAA record of the name is a backend on that port), or
/// `srv = "_service._proto.name"` (each SRV record's target and port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBackend {
    /// The name as written (syntax checked), without a trailing dot.
    pub name: String,
    /// The port of every address, for `address = "name:port"`; none for
    /// an SRV name, whose records give the ports.
    pub port: Option<u16>,
    /// The weight of each address it resolves to. Default 1; at least 1.
    pub weight: u32,
}

impl NamedBackend {
    /// The entry as configured: `name:port`, or the SRV name.
    pub fn text(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `[pools.health]`: an active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// HTTP GET path (starts with '/'); none means a TCP connect check.
    pub path: Option<String>,
    /// Default 1s; more than zero.
    pub interval: Duration,
    /// Default 500ms; more than zero.
    pub timeout: Duration,
    /// Successes in a row to mark a backend up. Default 2; at least 1.
    pub rise: u32,
    /// Failures in a row to mark a backend down. Default 2; at least 1.
    pub fall: u32,
    /// HTTP checks: the statuses that pass, inclusive. Default 200-399.
    pub expect_status: (u16, u16),
    /// HTTP checks: a substring the body must contain (first 64 KiB).
    pub expect_body: Option<String>,
    /// Each wait between two checks is `interval` plus a random offset in
    /// `-jitter/2 ..= +jitter/2`, and the first check waits a random
    /// `0..jitter`, so checks of many backends spread out. Default a tenth
    /// of `interval`; at most `interval`; `"0s"` turns it off.
    pub jitter: Duration,
    /// A send/expect script run on one TCP connection (`steps = [...]`);
    /// empty for a connect or an HTTP check. Never set with `path`.
    pub steps: Vec<HealthStep>,
    /// The backend port the check goes to instead of the backend's own
    /// (same IP); none: the backend's address.
    pub port: Option<u16>,
}

/// One step of a `steps` health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStep {
    /// Write these bytes to the connection.
    Send(Vec<u8>),
    /// Wait until these bytes (non-empty, at most
    /// [`HEALTH_EXPECT_LIMIT`]) have arrived since the previous expect.
    Expect(Vec<u8>),
}

/// How much an `expect` step buffers while waiting for its bytes.
pub const HEALTH_EXPECT_LIMIT: usize = 64 * 1024;

/// `on_down`: what marking a backend down by its active check does to the
/// connections already open to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDown {
    /// `"keep"` (the default): they carry on; only new requests avoid it.
    #[default]
    Keep,
    /// `"close-connections"`: idle keep-alive connections to it are closed
    /// and its in-flight exchanges are cut.
    CloseConnections,
}
