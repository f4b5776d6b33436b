//! The file as serde reads it, before validation.
//!
//! Values that need checking beyond their TOML type (addresses, durations,
//! sizes, names) are kept as written here and checked in `validate`, so
//! that one load reports all of them at once instead of stopping at the
//! first. Missing keys default to empty values for the same reason;
//! `validate` reports them with their path.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::model::{OnDown, OnError, Protocol, ProxyProtocol, UnknownSni};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub policies: RawPolicies,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    pub resolver: Option<RawResolver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    pub nameservers: Option<Vec<String>>,
    pub refresh: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub address: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
    /// Any integer here; the range is checked in `validate`.
    pub queue: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub drain_timeout: Option<RawDuration>,
    pub upgrade_socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicies {
    pub dir: Option<PathBuf>,
    pub decision_timeout: Option<RawDuration>,
    pub memory_limit: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    #[serde(default)]
    pub name: String,
    pub address: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// Free-form: handed to the policy as is, so unknown keys are its business.
    #[serde(default)]
    pub policy_config: toml::Table,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// `https` only; see `tls` in the model.
    pub handshake_timeout: Option<RawDuration>,
    pub unknown_sni: Option<UnknownSni>,
    /// `http` only: the port of the https side to redirect to.
    pub redirect_to_https: Option<u16>,
    /// The listen queue length; any integer here, the range is checked in
    /// `validate` (so a negative number gets the same reason as 0).
    pub backlog: Option<i64>,
    pub send_timeout: Option<RawDuration>,
    /// `tcp` only: how long to wait for a ClientHello to peek.
    pub peek_timeout: Option<RawDuration>,
    /// `tcp` only: the longest a relay may carry no byte either way.
    pub idle_timeout: Option<RawDuration>,
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    pub trusted_proxies: Option<Vec<String>>,
    /// `[listeners.shadow]`: a candidate policy deciding alongside.
    pub shadow: Option<RawShadow>,
}

/// `[listeners.shadow]`; every check is in `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    pub policy: Option<String>,
    pub sample: Option<f64>,
    pub policy_config: Option<toml::Table>,
    pub decision_timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub health: Option<RawHealth>,
    pub load_header: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    pub response_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub retries: Option<u32>,
    pub passive: Option<RawPassive>,
    /// `[pools.tls]`: TLS to the backends.
    pub tls: Option<RawUpstreamTls>,
    #[serde(default)]
    pub on_down: OnDown,
    pub proxy_protocol: Option<ProxyProtocol>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub address: Option<String>,
    pub srv: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    #[serde(default = "default_threshold")]
    pub rise: u32,
    #[serde(default = "default_threshold")]
    pub fall: u32,
    pub expect_status: Option<RawStatusRange>,
    pub expect_body: Option<String>,
    pub jitter: Option<RawDuration>,
    pub steps: Option<Vec<RawHealthStep>>,
    /// Wide, so that an out-of-range port gets our reason, not serde's.
    pub port: Option<i64>,
}

/// One `steps` entry: exactly one of the two (checked by validation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthStep {
    pub send: Option<String>,
    pub expect: Option<String>,
}

/// `[pools.passive]`: outlier detection; every key optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassive {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub error_rate_percent: Option<u32>,
    pub min_requests: Option<u32>,
    pub ejection_time: Option<RawDuration>,
    pub max_ejection_time: Option<RawDuration>,
    pub max_ejected_percent: Option<u32>,
}

/// A status range as written: an integer (`200`) or a string (`"200-399"`).
#[derive(Debug)]
pub(super) enum RawStatusRange {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawStatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusRangeVisitor)
    }
}

struct StatusRangeVisitor;

impl Visitor<'_> for StatusRangeVisitor {
    type Value = RawStatusRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status code such as 200 or a range such as \"200-399\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatusRange, E> {
        Ok(RawStatusRange::Code(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatusRange, E> {
        Ok(RawStatusRange::Code(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatusRange, E> {
        Ok(RawStatusRange::Text(v.to_owned()))
    }
}

fn default_protocol() -> Protocol {
    Protocol::Http
}

fn default_on_error() -> OnError {
    OnError::Fallback
}

fn default_weight() -> u32 {
    1
}

fn default_threshold() -> u32 {
    2
}

/// A duration as written (`"5ms"`); only strings are accepted, so a bare
/// number is a type error naming the expected form.
#[derive(Debug)]
pub(super) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string with a unit, such as \"5ms\" or \"1s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration(v.to_owned()))
    }
}

/// A size as written: a TOML integer (bytes) or a string (`"16MiB"`).
#[derive(Debug)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"16MiB\" or a whole number of bytes")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
        u64::try_from(v)
            .map(RawSize::Bytes)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(v.to_owned()))
    }
}
