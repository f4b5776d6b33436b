//! The connection resource of the SDK's native test host against this
//! host's (`connection.rs`): peer, ClientHello, retry view, key hashes,
//! candidates and least-active, for the pools of the request scenario.

use std::sync::Arc;
use std::time::Duration;

use wasmroute_policy::testing::TestConnection;
use wasmroute_policy::{self as sdk, Decision, InitContext, Policy, PoolId};
use wasmtime::component::Resource;

use super::{ASKED_POOLS, host_pools, pools, test_host};
use crate::policy::host::wasmroute::policy::host::HostConnection as C;
use crate::policy::host::{ConnectionKey, HostState};
use crate::policy::{ClientHello, ConnectionView};

/// Everything a policy can ask about one connection.
#[derive(Debug, Default, PartialEq)]
struct SeenConnection {
    peer: (String, u16, u16),
    hello: (bool, Option<String>, Vec<String>),
    retry: (u32, Vec<(u32, u32)>),
    hashes: (u64, Option<u64>),
    candidates: Vec<u64>,
    least_active: Vec<Option<u32>>,
}

/// A connection policy that asks everything and keeps the answers.
struct ConnectionProbe {
    seen: Vec<SeenConnection>,
}

impl Policy for ConnectionProbe {
    fn init(_: &InitContext) -> Result<Self, String> {
        Ok(ConnectionProbe { seen: Vec::new() })
    }

    fn decide(&mut self, _: &sdk::Request) -> Decision {
        Decision::no_backend()
    }
}

impl sdk::ConnectionPolicy for ConnectionProbe {
    const READS_CLIENT_HELLO: bool = true;

    fn decide_connection(&mut self, conn: &sdk::Connection) -> sdk::ConnectionDecision {
        let pools = (0..ASKED_POOLS).map(PoolId);
        let mask = |p: PoolId| super::candidate_words(&mut p.candidates(conn))[0];
        let tried = conn.tried().into_iter().map(|(p, b)| (p.0, b)).collect();
        self.seen.push(SeenConnection {
            peer: (conn.client_ip(), conn.client_port(), conn.local_port()),
            hello: (conn.is_tls(), conn.server_name(), conn.alpn()),
            retry: (conn.attempt(), tried),
            hashes: (conn.client_ip_hash(), conn.server_name_hash()),
            candidates: pools.clone().map(mask).collect(),
            least_active: pools.map(|p| p.least_active(conn, 1)).collect(),
        });
        sdk::ConnectionDecision::reject()
    }
}

/// What this host answers about `view`, through the connection resource.
fn host_seen_connection(state: &mut HostState, view: ConnectionView) -> SeenConnection {
    state.connection = Some(view);
    let r = || Resource::new_borrow(0);
    let pools = 0..ASKED_POOLS;
    SeenConnection {
        peer: (
            C::client_ip(state, r()),
            C::client_port(state, r()),
            C::local_port(state, r()),
        ),
        hello: (
            C::is_tls(state, r()),
            C::server_name(state, r()),
            C::alpn(state, r()),
        ),
        retry: (C::attempt(state, r()), C::tried(state, r())),
        hashes: (
            C::key_hash(state, r(), ConnectionKey::ClientIp).unwrap(),
            C::key_hash(state, r(), ConnectionKey::ServerName),
        ),
        candidates: pools
            .clone()
            .map(|p| C::candidates(state, r(), p, 0))
            .collect(),
        least_active: pools.map(|p| C::least_active(state, r(), p, 1)).collect(),
    }
}

#[test]
fn sdk_test_connections_answer_as_the_host() {
    let specs = pools();
    let (pools, _guards) = host_pools(&specs);
    let mut state = HostState::new(pools, Arc::default(), 1 << 20, Duration::from_millis(5), 7);
    let mut probe = test_host(&specs).init::<ConnectionProbe>().unwrap();
    let hello = ClientHello {
        server_name: Some("db.example".into()),
        alpn: vec!["h2".into(), "http/1.1".into()],
    };
    let cases = [
        ("10.0.0.1:5000", None, &[][..]),
        (
            "[2001:db8::5]:443",
            Some(hello),
            &[(0, 2), (0, 4), (1, 0)][..],
        ),
        (
            "127.0.0.1:1",
            Some(ClientHello::default()),
            &[(0, 0), (0, 2), (0, 4), (0, 5)][..],
        ),
    ];
    for (i, (client, hello, tried)) in cases.into_iter().enumerate() {
        let client: std::net::SocketAddr = client.parse().unwrap();
        let mut conn = TestConnection::new()
            .client_ip(&client.ip().to_string())
            .client_port(client.port())
            .local_port(6379);
        if let Some(hello) = &hello {
            conn = conn
                .tls()
                .alpn(&hello.alpn.iter().map(|p| &**p).collect::<Vec<_>>());
            if let Some(name) = &hello.server_name {
                conn = conn.server_name(name);
            }
        }
        let tried_ids: Vec<(PoolId, u32)> = tried.iter().map(|&(p, b)| (PoolId(p), b)).collect();
        let _ = probe.decide_connection(&conn.retry_after(&tried_ids));
        let mut view = ConnectionView::new(client, 6379, hello);
        view.tried = tried.to_vec();
        let expected = host_seen_connection(&mut state, view);
        assert_eq!(
            probe.policy_mut().seen.pop().unwrap(),
            expected,
            "connection {i}"
        );
    }
}
