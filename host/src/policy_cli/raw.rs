//! A cases file (`wasmroute policy test --cases FILE`) as serde reads it,
//! before validation ([`super::cases`]). Unknown keys are refused
//! everywhere but inside `policy_config`; values that need checking beyond
//! their TOML type (addresses, methods, paths, header names) are kept as
//! written so that the error can name the key.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCases {
    /// The listener's `policy_config`; else the one of `--listener`.
    pub policy_config: Option<toml::Table>,
    /// The listener's pools, the first being the default; else those of
    /// `--listener`.
    pub pools: Option<Vec<RawPool>>,
    #[serde(default)]
    pub cases: Vec<RawCase>,
}

/// One `[[pools]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub name: String,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
}

/// One backend and the live signals it shows the policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: String,
    pub weight: Option<u32>,
    pub healthy: Option<bool>,
    /// Requests in flight.
    pub active: Option<u32>,
    /// Latency EWMA in microseconds.
    pub ewma_us: Option<u32>,
    /// Failed share of recent requests, 0.0 ..= 1.0.
    pub error_rate: Option<f64>,
    pub load: Option<RawLoad>,
}

/// A utilization report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    pub cpu: f32,
    pub memory: f32,
}

/// One `[[cases]]` entry: a request or a connection, and what the policy
/// should decide.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCase {
    pub name: String,
    pub request: Option<RawRequest>,
    pub connection: Option<RawConnection>,
    /// This case's pools instead of the file's.
    pub pools: Option<Vec<RawPool>>,
    /// This case's `policy_config` instead of the file's.
    pub policy_config: Option<toml::Table>,
    pub expect: Option<RawExpect>,
}

/// A header value: one, or several for a repeated header.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawHeaderValues {
    One(String),
    Many(Vec<String>),
}

/// The request of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequest {
    pub method: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, RawHeaderValues>,
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
    pub client_ip: Option<String>,
    pub tls: Option<bool>,
    pub server_name: Option<String>,
    pub http_version: Option<String>,
    #[serde(default)]
    pub tried: Vec<RawTried>,
}

/// A backend an earlier attempt tried (the retry view).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTried {
    pub pool: String,
    /// The backend's address.
    pub backend: String,
}

/// The TCP connection of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    pub client_ip: Option<String>,
    pub client_port: Option<u16>,
    pub local_port: Option<u16>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub alpn: Vec<String>,
    pub tls: Option<bool>,
    #[serde(default)]
    pub tried: Vec<RawTried>,
}

/// What the decision should be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub pool: Option<String>,
    /// A backend address.
    pub backend: Option<String>,
    pub status: Option<u16>,
    pub reject: Option<bool>,
    /// Response headers the decision sets (an answer's headers, or a
    /// forward's response edits).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers a forward sets on the request to the backend.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// An answer's body.
    pub body: Option<String>,
}
