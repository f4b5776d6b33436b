//! Validates a cases file into the [`Case`]s `policy test` replays; every
//! problem is a `FILE: key: reason` error (`cases[2].request.method: ...`).
//!
//! ```toml
//! policy_config = { video_prefix = "/video" }   # optional: else --listener's
//! [[pools]]                                     # optional: else --listener's
//! name = "web"
//! backends = [ { address = "10.0.0.1:80" }, { address = "10.0.0.2:80", healthy = false, active = 3 } ]
//! [[cases]]
//! name = "video to the video pool"
//! request = { method = "GET", path = "/video/1", headers = { "x-route-pool" = "video" } }
//! expect = { pool = "video" }     # or { backend = "10.0.0.1:80" }, { status = 503 }
//! ```
//!
//! A case may give its own `pools` and `policy_config` instead of the
//! file's; each case is decided by a fresh instance, so cases never depend
//! on each other's order.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::expect::{self, Expect};
use super::raw::{RawBackend, RawCase, RawCases, RawConnection, RawPool, RawRequest, RawTried};
use crate::config::ConfigError;
use crate::policy::ClientHello;

/// The client address of a case that gives none.
const DEFAULT_CLIENT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
/// The client port of a connection case that gives none.
const DEFAULT_CLIENT_PORT: u16 = 40_000;

/// One backend as a case sets it up.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Its address (the decision shows it).
    pub address: SocketAddr,
    /// Configured weight, at least 1 (default 1).
    pub weight: u32,
    /// Up (default) or down.
    pub healthy: bool,
    /// Requests in flight.
    pub active: u32,
    /// Latency EWMA in microseconds (0: no sample).
    pub ewma_us: u32,
    /// Failures per thousand recent requests, when given.
    pub error_permille: Option<u32>,
    /// The last utilization report (cpu, memory), when given.
    pub load: Option<(f32, f32)>,
}

/// One pool as a case sets it up.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Its name (the decision shows it).
    pub name: String,
    /// Backends in order (index = the backend id policies see).
    pub backends: Vec<BackendSpec>,
}

impl PoolSpec {
    /// The index of `pool` in `pools`.
    pub fn index_of(pools: &[PoolSpec], pool: &str) -> Option<u32> {
        pools.iter().position(|p| p.name == pool).map(|i| i as u32)
    }
}

/// Pools and `policy_config` a cases file falls back on (`--listener`'s).
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    /// The listener's pools.
    pub pools: Option<Arc<[PoolSpec]>>,
    /// The listener's `policy_config`.
    pub policy_config: Option<Arc<toml::Table>>,
    /// Where they come from, for errors (`listener `edge` of wasmroute.toml`).
    pub source: String,
}

/// What a case asks the policy.
#[derive(Debug)]
pub enum Input {
    /// A request, decided by `decide`.
    Request(RequestInput),
    /// A TCP connection, decided by `decide-connection`.
    Connection(ConnectionInput),
}

/// A request of a case.
#[derive(Debug)]
pub struct RequestInput {
    /// Method, URI, version and headers.
    pub head: http::request::Parts,
    /// The client address.
    pub client_ip: IpAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The SNI name of a TLS client connection.
    pub server_name: Option<Arc<str>>,
    /// Backends tried before, as (pool, backend).
    pub tried: Vec<(u32, u32)>,
}

/// A connection of a case.
#[derive(Debug)]
pub struct ConnectionInput {
    /// The client address.
    pub client: SocketAddr,
    /// The proxy port it connected to.
    pub local_port: u16,
    /// The ClientHello it sent, if any (passed to policies that read it).
    pub hello: Option<ClientHello>,
    /// Backends tried before, as (pool, backend).
    pub tried: Vec<(u32, u32)>,
}

/// One validated case.
#[derive(Debug)]
pub struct Case {
    /// Its `name`.
    pub name: String,
    /// `cases[N]`, for errors.
    pub key: String,
    /// The pools it is decided against.
    pub pools: Arc<[PoolSpec]>,
    /// The `policy_config` `init` gets.
    pub policy_config: Arc<toml::Table>,
    /// Where `policy_config` comes from, for an `init` refusal.
    pub config_key: String,
    /// What is decided.
    pub input: Input,
    /// What the decision should be.
    pub expect: Expect,
}

/// Collects the errors of one file.
pub(super) struct Errors<'a> {
    pub file: &'a Path,
    pub errors: Vec<ConfigError>,
}

impl Errors<'_> {
    pub fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, key, reason));
    }
}

/// Validates a parsed file into its cases, or every problem found.
pub(super) fn validate(
    raw: RawCases,
    file: &Path,
    fallback: &Fallback,
) -> Result<Vec<Case>, Vec<ConfigError>> {
    let mut errors = Errors {
        file,
        errors: Vec::new(),
    };
    if raw.cases.is_empty() {
        errors.add("cases", "no [[cases]]: nothing to test");
    }
    let file_pools = raw.pools.map(|p| pools(&mut errors, "pools", p));
    let file_pools = file_pools.or_else(|| fallback.pools.clone());
    let (file_config, file_config_key) = match raw.policy_config {
        Some(table) => (Arc::new(table), "policy_config".to_owned()),
        None => match &fallback.policy_config {
            Some(table) => (
                Arc::clone(table),
                format!("policy_config (from {})", fallback.source),
            ),
            None => (Arc::default(), "policy_config".to_owned()),
        },
    };
    let mut cases = Vec::new();
    for (index, mut raw_case) in raw.cases.into_iter().enumerate() {
        let key = format!("cases[{index}]");
        let case_pools = match raw_case.pools.take() {
            Some(p) => Some(pools(&mut errors, &format!("{key}.pools"), p)),
            None => file_pools.clone(),
        };
        let Some(case_pools) = case_pools else {
            let reason = "no pools: give [[pools]] in the file or in the case, or --config \
                          and --listener";
            errors.add(format!("{key}.pools"), reason);
            continue;
        };
        let (policy_config, config_key) = match raw_case.policy_config.take() {
            Some(table) => (Arc::new(table), format!("{key}.policy_config")),
            None => (Arc::clone(&file_config), file_config_key.clone()),
        };
        let setup = CaseSetup {
            key,
            pools: case_pools,
            policy_config,
            config_key,
        };
        if let Some(case) = case(&mut errors, setup, raw_case) {
            cases.push(case);
        }
    }
    match errors.errors.is_empty() {
        true => Ok(cases),
        false => Err(errors.errors),
    }
}

/// What a case is decided against, resolved before its input.
struct CaseSetup {
    key: String,
    pools: Arc<[PoolSpec]>,
    policy_config: Arc<toml::Table>,
    config_key: String,
}

fn case(errors: &mut Errors<'_>, setup: CaseSetup, raw: RawCase) -> Option<Case> {
    let key = &setup.key;
    if raw.name.trim().is_empty() {
        errors.add(format!("{key}.name"), "must not be empty");
    }
    let input = match (raw.request, raw.connection) {
        (Some(request), None) => {
            request_input(errors, key, &setup.pools, request).map(Input::Request)
        }
        (None, Some(connection)) => {
            connection_input(errors, key, &setup.pools, connection).map(Input::Connection)
        }
        (Some(_), Some(_)) => {
            errors.add(key.as_str(), "give `request` or `connection`, not both");
            None
        }
        (None, None) => {
            errors.add(key.as_str(), "missing `request` (or `connection`)");
            None
        }
    };
    let Some(raw_expect) = raw.expect else {
        errors.add(
            format!("{key}.expect"),
            "missing: what should the policy decide?",
        );
        return None;
    };
    let connection = matches!(input, Some(Input::Connection(_)));
    let expect = expect::validate(errors, key, &setup.pools, connection, raw_expect);
    Some(Case {
        name: raw.name,
        key: setup.key,
        pools: setup.pools,
        policy_config: setup.policy_config,
        config_key: setup.config_key,
        input: input?,
        expect: expect?,
    })
}

/// Validates a pool list; the list stays usable (bad entries left out) so
/// that its cases are still checked.
fn pools(errors: &mut Errors<'_>, key: &str, raw: Vec<RawPool>) -> Arc<[PoolSpec]> {
    if raw.is_empty() {
        errors.add(key, "at least one pool is needed");
    }
    let mut out: Vec<PoolSpec> = Vec::new();
    for (i, pool) in raw.into_iter().enumerate() {
        let pool_key = format!("{key}[{i}]");
        if pool.name.is_empty() {
            errors.add(format!("{pool_key}.name"), "must not be empty");
        } else if out.iter().any(|p| p.name == pool.name) {
            errors.add(
                format!("{pool_key}.name"),
                format!("pool `{}` is defined twice", pool.name),
            );
        }
        let mut backends: Vec<BackendSpec> = Vec::new();
        for (j, backend) in pool.backends.into_iter().enumerate() {
            let backend_key = format!("{pool_key}.backends[{j}]");
            if let Some(spec) = backend_spec(errors, &backend_key, backend) {
                if backends.iter().any(|b| b.address == spec.address) {
                    let reason = format!("{} is in the pool twice", spec.address);
                    errors.add(format!("{backend_key}.address"), reason);
                }
                backends.push(spec);
            }
        }
        out.push(PoolSpec {
            name: pool.name,
            backends,
        });
    }
    out.into()
}

fn backend_spec(errors: &mut Errors<'_>, key: &str, raw: RawBackend) -> Option<BackendSpec> {
    let address = socket_address(errors, &format!("{key}.address"), &raw.address);
    let weight = raw.weight.unwrap_or(1);
    if weight == 0 {
        errors.add(format!("{key}.weight"), "must be at least 1");
    }
    let error_permille = raw.error_rate.map(|rate| {
        if !(0.0..=1.0).contains(&rate) {
            errors.add(
                format!("{key}.error_rate"),
                format!("{rate} is not within 0.0 ..= 1.0"),
            );
        }
        (rate.clamp(0.0, 1.0) * 1000.0).round() as u32
    });
    let load = raw.load.map(|load| {
        for (field, value) in [("cpu", load.cpu), ("memory", load.memory)] {
            if !(0.0..=1.0).contains(&value) {
                let reason = format!("{value} is not within 0.0 ..= 1.0");
                errors.add(format!("{key}.load.{field}"), reason);
            }
        }
        (load.cpu, load.memory)
    });
    Some(BackendSpec {
        address: address?,
        weight: weight.max(1),
        healthy: raw.healthy.unwrap_or(true),
        active: raw.active.unwrap_or(0),
        ewma_us: raw.ewma_us.unwrap_or(0),
        error_permille,
        load,
    })
}

/// `IP:port`, as in the config file (no host names).
pub(super) fn socket_address(errors: &mut Errors<'_>, key: &str, text: &str) -> Option<SocketAddr> {
    match text.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            errors.add(key, format!("{text:?} is not an IP:port address"));
            None
        }
    }
}

fn ip(errors: &mut Errors<'_>, key: &str, text: Option<&str>) -> Option<IpAddr> {
    let Some(text) = text else {
        return Some(DEFAULT_CLIENT_IP);
    };
    match text.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errors.add(key, format!("{text:?} is not an IP address"));
            None
        }
    }
}

fn request_input(
    errors: &mut Errors<'_>,
    case: &str,
    pools: &[PoolSpec],
    raw: RawRequest,
) -> Option<RequestInput> {
    let key = format!("{case}.request");
    let client_ip = ip(
        errors,
        &format!("{key}.client_ip"),
        raw.client_ip.as_deref(),
    );
    let tried = tried(errors, &key, pools, &raw.tried);
    let server_name = raw.server_name.as_deref().map(Arc::from);
    let tls = raw.tls.unwrap_or(server_name.is_some());
    if server_name.is_some() && !tls {
        errors.add(
            format!("{key}.server_name"),
            "a server name needs `tls = true`",
        );
    }
    let head = super::request::head(errors, &key, raw);
    Some(RequestInput {
        head: head?,
        client_ip: client_ip?,
        tls,
        server_name,
        tried: tried?,
    })
}

fn connection_input(
    errors: &mut Errors<'_>,
    case: &str,
    pools: &[PoolSpec],
    raw: RawConnection,
) -> Option<ConnectionInput> {
    let key = format!("{case}.connection");
    let client_ip = ip(
        errors,
        &format!("{key}.client_ip"),
        raw.client_ip.as_deref(),
    );
    let tried = tried(errors, &key, pools, &raw.tried);
    let tls = raw
        .tls
        .unwrap_or(raw.server_name.is_some() || !raw.alpn.is_empty());
    if !tls && (raw.server_name.is_some() || !raw.alpn.is_empty()) {
        errors.add(
            format!("{key}.tls"),
            "a server name or ALPN list needs `tls = true`",
        );
    }
    let hello = tls.then(|| ClientHello {
        server_name: raw.server_name.map(|name| name.to_ascii_lowercase().into()),
        alpn: raw.alpn.into_iter().map(Into::into).collect(),
    });
    Some(ConnectionInput {
        client: SocketAddr::new(client_ip?, raw.client_port.unwrap_or(DEFAULT_CLIENT_PORT)),
        local_port: raw.local_port.unwrap_or(0),
        hello,
        tried: tried?,
    })
}

/// The retry view: each `{ pool, backend }` as (pool id, backend id).
fn tried(
    errors: &mut Errors<'_>,
    key: &str,
    pools: &[PoolSpec],
    raw: &[RawTried],
) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, entry) in raw.iter().enumerate() {
        let entry_key = format!("{key}.tried[{i}]");
        match backend_in(errors, &entry_key, pools, &entry.pool, &entry.backend) {
            Some(ids) => out.push(ids),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// (pool id, backend id) of the backend at `address` in pool `pool`.
pub(super) fn backend_in(
    errors: &mut Errors<'_>,
    key: &str,
    pools: &[PoolSpec],
    pool: &str,
    address: &str,
) -> Option<(u32, u32)> {
    let Some(pool_id) = PoolSpec::index_of(pools, pool) else {
        errors.add(format!("{key}.pool"), unknown_pool(pools, pool));
        return None;
    };
    let address = socket_address(errors, &format!("{key}.backend"), address)?;
    let backends = &pools[pool_id as usize].backends;
    match backends.iter().position(|b| b.address == address) {
        Some(index) => Some((pool_id, index as u32)),
        None => {
            let reason = format!("pool `{pool}` has no backend {address}");
            errors.add(format!("{key}.backend"), reason);
            None
        }
    }
}

/// The reason for naming a pool that is not defined.
pub(super) fn unknown_pool(pools: &[PoolSpec], pool: &str) -> String {
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    format!("unknown pool `{pool}` (pools: {})", names.join(", "))
}
