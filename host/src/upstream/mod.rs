//! Connections from the proxy to backends, for both codecs: each
//! backend's [`Connections`] owns its idle keep-alive queues ([`idle`]),
//! how to open a new connection (TCP, then TLS for a pool with
//! `[pools.tls]`: [`tls`], set per backend when its pool is built, never
//! looked up in a process-wide table) and the two connection kinds: the
//! fast codec's byte streams ([`RawConnection`]) and hyper's client
//! connections ([`Connection`]). A pool with `proxy_protocol` starts each
//! new connection with a PROXY header ([`proxy_protocol`]) naming the
//! client connection it is opened for; such a connection is that client
//! connection's alone, so it is never kept idle for another one.
//!
//! This layer knows sockets and TLS only: nothing of requests, pools or
//! policies.

pub mod counted;
pub mod idle;
pub mod proxy_protocol;
pub mod raw;
pub mod stall;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

pub use counted::CountedBody;
pub use idle::{IDLE_TIMEOUT, IdleConnections, MAX_IDLE, Reusable};
pub use proxy_protocol::Addresses;
pub use raw::RawConnection;
pub use stall::SendStall;
pub use tls::{BackendTls, MaybeTls};

/// The body of an upstream request sent by hyper's client: the client's
/// body, streamed (and counted: [`CountedBody`]), or nothing (a bodiless request, which a retry can send
/// again).
pub type UpstreamBody = Either<CountedBody, Empty<Bytes>>;

/// One hyper upstream connection: its sending half, and what it shares
/// with its driver task and its current exchange's bodies.
#[derive(Debug)]
pub struct Connection {
    /// hyper's sending half.
    pub send: http1::SendRequest<UpstreamBody>,
    /// Built with the connection (one allocation per connection, none per
    /// request).
    pub state: Arc<ConnectionState>,
}

/// What a hyper upstream connection shares with the task driving it and
/// with the bodies of the exchange it carries (one at a time).
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// The client-side stall watch the driver task runs.
    pub stall: SendStall,
    /// The data bytes of the current request's body, when it is counted
    /// ([`CountedBody::count_into`]).
    pub request_bytes: AtomicU64,
}

impl Reusable for Connection {
    fn is_closed(&mut self) -> bool {
        self.send.is_closed() || self.state.stall.is_cut()
    }
}

/// One backend's connections: where they go, how they are opened, and
/// the idle ones of each kind.
#[derive(Debug)]
pub struct Connections {
    /// The backend's address.
    pub address: SocketAddr,
    /// How to speak TLS to it (`None`: plain TCP).
    pub tls: Option<Arc<BackendTls>>,
    /// The PROXY header each new connection starts with (`None`: none).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Idle connections of hyper's client (HTTP/2 clients, upgrades and
    /// HTTP/1.0 requests, through hyper's codec).
    pub hyper: IdleConnections<Connection>,
    /// Idle byte streams of the fast codec.
    pub raw: IdleConnections<RawConnection>,
}

impl Connections {
    /// No connection yet to `address`, which speaks `tls` after the
    /// `proxy_protocol` header, if any.
    pub fn new(
        address: SocketAddr,
        tls: Option<Arc<BackendTls>>,
        proxy_protocol: Option<ProxyProtocol>,
    ) -> Connections {
        // A connection that started with a PROXY header is its client
        // connection's alone: none is kept idle for another.
        let cap = match proxy_protocol {
            Some(_) => 0,
            None => MAX_IDLE,
        };
        Connections {
            address,
            tls,
            proxy_protocol,
            hyper: IdleConnections::with_cap(cap),
            raw: IdleConnections::with_cap(cap),
        }
    }

    /// A new stream of the proxy's own (a health check) to `target`: the
    /// backend's address, or another port of it (`[pools.health] port`).
    /// TCP (no Nagle), then to the backend's own port a PROXY header saying
    /// it is the proxy's (v2 LOCAL, v1 `UNKNOWN`) when the pool sends one
    /// (a side port is another service: none), then TLS when the backend
    /// has it.
    pub async fn open_check(&self, target: SocketAddr) -> std::io::Result<MaybeTls> {
        let header = self.proxy_protocol.filter(|_| target == self.address);
        self.open_with(target, header, None).await
    }

    /// A new stream for the client connection `client`: like
    /// [`open_check`](Self::open_check) to the backend's address, with
    /// the client's endpoints in the PROXY header.
    pub async fn open_for(&self, client: Addresses) -> std::io::Result<MaybeTls> {
        self.open_with(self.address, self.proxy_protocol, Some(client))
            .await
    }

    async fn open_with(
        &self,
        target: SocketAddr,
        header: Option<ProxyProtocol>,
        client: Option<Addresses>,
    ) -> std::io::Result<MaybeTls> {
        let mut tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        if let Some(version) = header {
            let mut bytes = Vec::with_capacity(proxy_protocol::V1_MAX);
            proxy_protocol::encode(version, client, &mut bytes);
            tcp.write_all(&bytes).await?;
        }
        match &self.tls {
            None => Ok(MaybeTls::Plain(tcp)),
            Some(tls) => tls.connect(tcp).await,
        }
    }

    /// Closes every idle connection of both kinds.
    pub fn close_idle(&self) {
        self.hyper.clear();
        self.raw.clear();
    }

    /// Keeps no connection of either kind from now on (see
    /// [`IdleConnections::retire`]), after moving the idle ones to `next`
    /// when it is the same backend reached the same way (same address and
    /// PROXY header, plain TCP or the same TLS settings).
    pub fn retire(&self, next: Option<&Connections>) {
        if let Some(next) = next.filter(|next| self.same_route(next)) {
            self.hyper.hand_over(&next.hyper);
            self.raw.hand_over(&next.raw);
        }
        self.hyper.retire();
        self.raw.retire();
    }

    fn same_route(&self, other: &Connections) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.address == other.address && self.proxy_protocol == other.proxy_protocol && same_tls
    }

    /// Closes the stale idle connections of both kinds.
    pub fn sweep(&self) {
        self.hyper.sweep();
        self.raw.sweep();
    }
}

/// An error with its sources, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
