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
    pub policies: PoliciesConfig,
    /// At least one.
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
}

/// `[admin]`: the admin endpoint, present only when the section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9901`.
    pub address: SocketAddr,
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
    /// At least one, addresses distinct.
    pub backends: Vec<BackendConfig>,
    /// Active health check; none when `[pools.health]` is absent.
    pub health: Option<HealthConfig>,
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    /// Default 1; at least 1.
    pub weight: u32,
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
}
