//! The `connection` resource of `wit/policy.wit` (0.3): what a policy sees
//! of a TCP connection it decides.
//!
//! As with requests, the view is moved into the store for the call and the
//! guest holds a borrow handle (`rep` 0); each accessor copies out only
//! what is asked for.

use std::net::SocketAddr;
use std::time::Duration;

use wasmtime::component::Resource;

use super::derived;
use super::host::{ConnectionKey, HostState};
use crate::pool::{FNV1A64_OFFSET, fnv1a64_extend};

/// Marker type of the `connection` resource: the data lives in
/// [`HostState::connection`] for the duration of one decision.
pub struct ConnectionHandle;

/// What the client's first bytes said, when they were a TLS ClientHello
/// (peeked, never consumed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lower-cased.
    pub server_name: Option<Box<str>>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<Box<str>>,
}

/// A TCP connection as its policy sees it, moved into the store for one
/// decision.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    /// The client (the peer, or a trusted PROXY header's source).
    pub client: SocketAddr,
    /// The proxy port the client connected to.
    pub local_port: u16,
    /// The ClientHello, when the policy reads it and the client sent one.
    pub hello: Option<ClientHello>,
    /// Backends already tried for this connection, as (pool, backend).
    pub tried: Vec<(u32, u32)>,
    /// Time spent in the policy for this connection so far.
    pub decision_time: Duration,
}

impl ConnectionView {
    /// A view of a connection before its first decision.
    pub fn new(client: SocketAddr, local_port: u16, hello: Option<ClientHello>) -> ConnectionView {
        ConnectionView {
            client,
            local_port,
            hello,
            tried: Vec::new(),
            decision_time: Duration::ZERO,
        }
    }

    fn server_name(&self) -> Option<&str> {
        self.hello.as_ref()?.server_name.as_deref()
    }
}

impl HostState {
    fn connection_view(&self) -> &ConnectionView {
        // Only reachable through a borrow handle the host hands out during
        // `decide-connection`, when the view is present.
        self.connection
            .as_ref()
            .expect("connection accessed outside of a decision")
    }
}

impl super::host::wasmroute::policy::host::HostConnection for HostState {
    fn client_ip(&mut self, _: Resource<ConnectionHandle>) -> String {
        self.connection_view().client.ip().to_string()
    }

    fn client_port(&mut self, _: Resource<ConnectionHandle>) -> u16 {
        self.connection_view().client.port()
    }

    fn local_port(&mut self, _: Resource<ConnectionHandle>) -> u16 {
        self.connection_view().local_port
    }

    fn is_tls(&mut self, _: Resource<ConnectionHandle>) -> bool {
        self.connection_view().hello.is_some()
    }

    fn server_name(&mut self, _: Resource<ConnectionHandle>) -> Option<String> {
        self.connection_view().server_name().map(str::to_owned)
    }

    fn alpn(&mut self, _: Resource<ConnectionHandle>) -> Vec<String> {
        match &self.connection_view().hello {
            Some(hello) => hello.alpn.iter().map(|p| p.to_string()).collect(),
            None => Vec::new(),
        }
    }

    fn attempt(&mut self, _: Resource<ConnectionHandle>) -> u32 {
        self.connection_view().tried.len() as u32
    }

    fn tried(&mut self, _: Resource<ConnectionHandle>) -> Vec<(u32, u32)> {
        self.connection_view().tried.clone()
    }

    fn key_hash(&mut self, _: Resource<ConnectionHandle>, key: ConnectionKey) -> Option<u64> {
        let view = self.connection_view();
        match key {
            ConnectionKey::ClientIp => Some(derived::ip_hash(view.client.ip())),
            ConnectionKey::ServerName => Some(fnv1a64_extend(
                FNV1A64_OFFSET,
                view.server_name()?.as_bytes(),
            )),
        }
    }

    fn candidates(&mut self, _: Resource<ConnectionHandle>, pool: u32, first: u32) -> u64 {
        self.candidates_in(pool, &self.connection_view().tried, first)
    }

    fn least_active(
        &mut self,
        _: Resource<ConnectionHandle>,
        pool: u32,
        tie_breaker: u64,
    ) -> Option<u32> {
        self.least_active_in(pool, &self.connection_view().tried, tie_breaker)
    }

    fn drop(&mut self, _: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        // Borrow handles are never owned by the guest; nothing to free.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{BackendConfig, PoolConfig};
    use crate::policy::{
        BoundPolicy, Capabilities, ConnectionDecision, PolicyEngine, PolicyLimits,
        decide_connection,
    };
    use crate::pool::BackendPool;

    fn bound(name: &str) -> Arc<BoundPolicy> {
        let engine = PolicyEngine::new().unwrap();
        let bytes = crate::bundled::get(name).unwrap();
        let module = Arc::new(engine.compile(name, bytes).unwrap());
        let config = PoolConfig {
            name: "db".into(),
            backends: ["127.0.0.1:1", "127.0.0.1:2"]
                .iter()
                .map(|a| BackendConfig {
                    address: a.parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            ..PoolConfig::default()
        };
        let pools: Arc<[Arc<BackendPool>]> = vec![Arc::new(BackendPool::new(&config, None))].into();
        let limits = PolicyLimits {
            decision_timeout: Duration::from_millis(250),
            memory_limit: 16 << 20,
        };
        let policy = BoundPolicy::new(module, pools, Arc::default(), &toml::Table::new(), limits);
        policy.validate().unwrap();
        Arc::new(policy)
    }

    #[test]
    fn a_connection_policy_says_so_and_decides_connections() {
        let policy = bound("round-robin");
        assert_eq!(policy.module.interface(), "0.3");
        let capabilities = policy.capabilities().expect("known after validate");
        assert!(capabilities.contains(Capabilities::REQUESTS | Capabilities::CONNECTIONS));
        assert!(!capabilities.contains(Capabilities::CLIENT_HELLO));
        let mut view = ConnectionView::new("127.0.0.1:5000".parse().unwrap(), 6379, None);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (back, decision) = decide_connection(&policy, view);
            view = back;
            match decision.unwrap() {
                ConnectionDecision::Forward(f) => seen.push((f.pool, f.backend)),
                ConnectionDecision::Reject => panic!("rejected with healthy backends"),
            }
        }
        assert_eq!(seen, [(0, 0), (0, 1), (0, 0), (0, 1)], "one turn each");
        policy.pools[0].backends[0].stats.set_healthy(false);
        policy.pools[0].backends[1].stats.set_healthy(false);
        let (_, decision) = decide_connection(&policy, view);
        assert!(matches!(decision.unwrap(), ConnectionDecision::Reject));
    }
}
