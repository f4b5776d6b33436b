//! The request and connection handles on native builds: the data a
//! [`TestRequest`](crate::testing::TestRequest) or
//! [`TestConnection`](crate::testing::TestConnection) describes, with the
//! accessors of the host's resources (the same signatures wit-bindgen
//! generates, answered as `host/src/policy/host.rs` and `connection.rs`
//! answer them).

use std::net::{IpAddr, SocketAddr};

use super::{derived, with_host};
use crate::balance::fnv1a64;
use crate::bindings::types::{self, ConnectionKey, RequestKey};

/// A request head as the test host holds it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The method as sent (`GET`; matched case-sensitively, as HTTP does).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?`.
    pub query: Option<String>,
    /// The URI's authority (an HTTP/2 `:authority`), if any.
    pub uri_authority: Option<String>,
    /// The headers in order, repeated names included.
    pub headers: Vec<(String, String)>,
    /// The TCP peer.
    pub client_ip: IpAddr,
    /// 10, 11 or 20.
    pub http_version: u8,
    /// Whether the client connection is TLS.
    pub is_tls: bool,
    /// The SNI of a TLS connection.
    pub server_name: Option<String>,
    /// Backends already tried, as (pool, backend).
    pub tried: Vec<(u32, u32)>,
}

/// A header value as the host's `header` accessor returns it: only when it
/// is visible ASCII (`http::HeaderValue::to_str`).
fn readable(value: &str) -> Option<&str> {
    let visible = |b: u8| b == b'\t' || (32..127).contains(&b);
    value.bytes().all(visible).then_some(value)
}

impl Request {
    /// The first readable value of header `name` (any case).
    fn header_str(&self, name: &str) -> Option<&str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        readable(value)
    }

    /// The URI's authority, else the `Host` header.
    fn authority_str(&self) -> Option<&str> {
        self.uri_authority
            .as_deref()
            .or_else(|| self.header_str("host"))
    }

    /// Cookie `name` across every readable `Cookie` header.
    fn cookie_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, value)| readable(value))
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }

    // The accessors of `wit/policy.wit`'s `request`, named and typed as
    // wit-bindgen generates them, answered as the host answers them.

    /// `method`: the common methods by name (case-sensitive), else other.
    pub fn method(&self) -> types::Method {
        match self.method.as_str() {
            "GET" => types::Method::Get,
            "HEAD" => types::Method::Head,
            "POST" => types::Method::Post,
            "PUT" => types::Method::Put,
            "DELETE" => types::Method::Delete,
            "CONNECT" => types::Method::Connect,
            "OPTIONS" => types::Method::Options,
            "TRACE" => types::Method::Trace,
            "PATCH" => types::Method::Patch,
            other => types::Method::Other(other.to_owned()),
        }
    }

    pub fn path(&self) -> String {
        self.path.clone()
    }

    pub fn query(&self) -> Option<String> {
        self.query.clone()
    }

    pub fn authority(&self) -> Option<String> {
        self.authority_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_str(name).map(str::to_owned)
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_str(name).map(str::to_owned)
    }

    pub fn client_ip(&self) -> String {
        self.client_ip.to_string()
    }

    pub fn http_version(&self) -> u8 {
        self.http_version
    }

    pub fn is_tls(&self) -> bool {
        self.is_tls
    }

    pub fn server_name(&self) -> Option<String> {
        self.server_name.clone()
    }

    pub fn attempt(&self) -> u32 {
        self.tried.len() as u32
    }

    pub fn tried(&self) -> Vec<(u32, u32)> {
        self.tried.clone()
    }

    pub fn key_hash(&self, key: RequestKey<'_>) -> Option<u64> {
        let text = match key {
            RequestKey::ClientIp => return Some(fnv1a64(self.client_ip().as_bytes())),
            RequestKey::Path => self.path.as_str(),
            RequestKey::Host => self.authority_str()?,
            RequestKey::Header(name) => self.header_str(name)?,
            RequestKey::Cookie(name) => self.cookie_str(name)?,
        };
        Some(fnv1a64(text.as_bytes()))
    }

    pub fn candidates(&self, pool: u32, first: u32) -> u64 {
        candidates_in(pool, &self.tried, first)
    }

    pub fn least_active(&self, pool: u32, tie_breaker: u64) -> Option<u32> {
        least_active_in(pool, &self.tried, tie_breaker)
    }
}

/// A TCP connection as the test host holds it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// The client's address.
    pub client: SocketAddr,
    /// The proxy port the client connected to.
    pub local_port: u16,
    /// The ClientHello's server name (lower-cased) and ALPN protocols,
    /// when the client sent one and the policy reads it.
    pub hello: Option<(Option<String>, Vec<String>)>,
    /// Backends already tried, as (pool, backend).
    pub tried: Vec<(u32, u32)>,
}

impl Connection {
    // The accessors of `wit/policy.wit`'s `connection`, likewise.

    /// `client-ip`: the address as the host renders it.
    pub fn client_ip(&self) -> String {
        self.client.ip().to_string()
    }

    pub fn client_port(&self) -> u16 {
        self.client.port()
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn is_tls(&self) -> bool {
        self.hello.is_some()
    }

    pub fn server_name(&self) -> Option<String> {
        self.hello.as_ref()?.0.clone()
    }

    pub fn alpn(&self) -> Vec<String> {
        self.hello
            .as_ref()
            .map(|(_, alpn)| alpn.clone())
            .unwrap_or_default()
    }

    pub fn attempt(&self) -> u32 {
        self.tried.len() as u32
    }

    pub fn tried(&self) -> Vec<(u32, u32)> {
        self.tried.clone()
    }

    pub fn key_hash(&self, key: ConnectionKey) -> Option<u64> {
        match key {
            ConnectionKey::ClientIp => Some(fnv1a64(self.client_ip().as_bytes())),
            ConnectionKey::ServerName => Some(fnv1a64(self.server_name()?.as_bytes())),
        }
    }

    pub fn candidates(&self, pool: u32, first: u32) -> u64 {
        candidates_in(pool, &self.tried, first)
    }

    pub fn least_active(&self, pool: u32, tie_breaker: u64) -> Option<u32> {
        least_active_in(pool, &self.tried, tie_breaker)
    }
}

/// `candidates` of the installed host's pool `pool`; 0 for an unknown one.
fn candidates_in(pool: u32, tried: &[(u32, u32)], first: u32) -> u64 {
    with_host(|host| match host.pools.get(pool as usize) {
        Some(backends) => derived::candidates(backends, pool, tried, first),
        None => 0,
    })
}

/// `least-active` of the installed host's pool `pool`.
fn least_active_in(pool: u32, tried: &[(u32, u32)], tie_breaker: u64) -> Option<u32> {
    with_host(|host| {
        let backends = host.pools.get(pool as usize)?;
        derived::least_active(backends, pool, tried, tie_breaker)
    })
}
