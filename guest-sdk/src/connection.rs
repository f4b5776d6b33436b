//! TCP connections: what a [`ConnectionPolicy`](crate::ConnectionPolicy)
//! sees of one and what it answers.

use crate::bindings::types;
use crate::sys;
use crate::{PoolId, Request};

/// A TCP connection being decided, owned by the host (a view of it: every
/// accessor is one host call, and those returning strings or lists
/// allocate). The client's bytes are never read by the guest: the host
/// peeks at a TLS ClientHello only for a policy whose
/// [`ConnectionPolicy::READS_CLIENT_HELLO`](crate::ConnectionPolicy::READS_CLIENT_HELLO)
/// is true.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    inner: &'a sys::Connection,
}

impl<'a> Connection<'a> {
    pub(crate) fn new(inner: &'a sys::Connection) -> Self {
        Connection { inner }
    }

    /// The client's IP address as text (`127.0.0.1`, `::1`).
    pub fn client_ip(&self) -> String {
        self.inner.client_ip()
    }

    /// The client's TCP port.
    pub fn client_port(&self) -> u16 {
        self.inner.client_port()
    }

    /// The proxy port the client connected to (tells a read listener from
    /// a write listener, for example).
    pub fn local_port(&self) -> u16 {
        self.inner.local_port()
    }

    /// True when the client's first bytes are a TLS ClientHello (always
    /// false unless the policy reads the ClientHello).
    pub fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }

    /// The ClientHello's server name (SNI), lower-cased.
    pub fn server_name(&self) -> Option<String> {
        self.inner.server_name()
    }

    /// The ALPN protocols the ClientHello offers, in the client's order.
    pub fn alpn(&self) -> Vec<String> {
        self.inner.alpn()
    }

    /// 0 for the first decision; 1, 2, ... when the chosen backend could
    /// not be connected to and the host asks again.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt()
    }

    /// The backends already tried for this connection, in order.
    pub fn tried(&self) -> Vec<(PoolId, u32)> {
        self.inner
            .tried()
            .into_iter()
            .map(|(pool, backend)| (PoolId(pool), backend))
            .collect()
    }

    /// The 64-bit FNV-1a hash of the client's IP address text, computed by
    /// the host (the same function as `BackendStats::stable_id`).
    pub fn client_ip_hash(&self) -> u64 {
        self.inner
            .key_hash(types::ConnectionKey::ClientIp)
            .unwrap_or_default()
    }

    /// The FNV-1a hash of the server name; `None` without one.
    pub fn server_name_hash(&self) -> Option<u64> {
        self.inner.key_hash(types::ConnectionKey::ServerName)
    }
}

/// A request or a connection: what the pool helpers
/// ([`PoolId::candidates`], [`PoolId::least_active`], [`PoolId::stats`])
/// decide for. They take `impl Into<Subject>`, so `&Request` and
/// `&Connection` both do, and one balancing routine
/// (`fn pick(&mut self, subject: Subject) -> Option<u32>`) serves both
/// kinds of listener.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An HTTP request.
    Request(Request<'a>),
    /// A TCP connection.
    Connection(Connection<'a>),
}

impl<'a> From<&Request<'a>> for Subject<'a> {
    fn from(req: &Request<'a>) -> Self {
        Subject::Request(*req)
    }
}

impl<'a> From<&Connection<'a>> for Subject<'a> {
    fn from(conn: &Connection<'a>) -> Self {
        Subject::Connection(*conn)
    }
}

impl Subject<'_> {
    /// 0 on the first decision, then the number of backends tried.
    pub(crate) fn attempt(&self) -> u32 {
        match self {
            Subject::Request(r) => r.attempt(),
            Subject::Connection(c) => c.attempt(),
        }
    }

    /// The backends of `pool` already tried; empty on a first attempt
    /// (without a host call beyond [`attempt`](Self::attempt)).
    pub(crate) fn tried_in(&self, pool: PoolId) -> Vec<u32> {
        if self.attempt() == 0 {
            return Vec::new();
        }
        let tried = match self {
            Subject::Request(r) => r.tried_raw(),
            Subject::Connection(c) => c.inner.tried(),
        };
        tried
            .into_iter()
            .filter(|&(p, _)| p == pool.0)
            .map(|(_, backend)| backend)
            .collect()
    }

    pub(crate) fn candidate_mask(&self, pool: PoolId, first: u32) -> u64 {
        match self {
            Subject::Request(r) => r.candidate_mask(pool, first),
            Subject::Connection(c) => c.inner.candidates(pool.0, first),
        }
    }

    pub(crate) fn least_active_in(&self, pool: PoolId, tie_breaker: u64) -> Option<u32> {
        match self {
            Subject::Request(r) => r.least_active_in(pool, tie_breaker),
            Subject::Connection(c) => c.inner.least_active(pool.0, tie_breaker),
        }
    }
}

/// Where a connection goes: built by [`ConnectionDecision::forward`] or
/// [`ConnectionDecision::reject`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionDecision(types::ConnectionDecision);

impl ConnectionDecision {
    /// Connect to backend `backend` of `pool` (it must be healthy) and
    /// stream the connection both ways.
    pub fn forward(pool: PoolId, backend: u32) -> Self {
        ConnectionDecision(types::ConnectionDecision::Forward(
            types::ConnectionForward {
                pool: pool.0,
                backend,
            },
        ))
    }

    /// Close the client's connection; nothing is connected.
    pub fn reject() -> Self {
        ConnectionDecision(types::ConnectionDecision::Reject)
    }

    /// [`forward`](Self::forward) to `backend` of `pool` when a backend was
    /// picked, else [`reject`](Self::reject).
    pub fn forward_or_reject(pool: PoolId, backend: Option<u32>) -> Self {
        match backend {
            Some(backend) => ConnectionDecision::forward(pool, backend),
            None => ConnectionDecision::reject(),
        }
    }

    /// The (pool, backend) a forward goes to; `None` for a rejection.
    pub fn target(&self) -> Option<(PoolId, u32)> {
        match &self.0 {
            types::ConnectionDecision::Forward(f) => Some((PoolId(f.pool), f.backend)),
            types::ConnectionDecision::Reject => None,
        }
    }

    pub(crate) fn into_raw(self) -> types::ConnectionDecision {
        self.0
    }
}
