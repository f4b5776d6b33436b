//! The test host's own rules: what it shows a connection policy, its
//! generator, its counters, and its refusals.

use super::*;
use crate::shared::SharedCounter;

/// What a connection policy saw: TLS, server name, ALPN, client IP,
/// client port, local port, attempt.
type Sight = (bool, Option<String>, Vec<String>, String, u16, u16, u32);

/// Records what it sees of connections, and answers requests with a draw.
struct Seer<const HELLO: bool> {
    seen: Vec<Sight>,
}

impl<const HELLO: bool> Policy for Seer<HELLO> {
    fn init(_: &InitContext) -> Result<Self, String> {
        Ok(Seer { seen: Vec::new() })
    }

    fn decide(&mut self, _: &Request) -> Decision {
        Decision::respond(200)
            .body(crate::random().to_string())
            .into()
    }
}

impl<const HELLO: bool> ConnectionPolicy for Seer<HELLO> {
    const READS_CLIENT_HELLO: bool = HELLO;

    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        let seen = (
            conn.is_tls(),
            conn.server_name(),
            conn.alpn(),
            conn.client_ip(),
        );
        let ports = (conn.client_port(), conn.local_port(), conn.attempt());
        self.seen
            .push((seen.0, seen.1, seen.2, seen.3, ports.0, ports.1, ports.2));
        ConnectionDecision::reject()
    }
}

fn hello() -> TestConnection {
    let conn = TestConnection::new()
        .client_ip("10.0.0.9")
        .client_port(5000);
    conn.local_port(6379)
        .server_name("DB.Example")
        .alpn(&["h2", "http/1.1"])
}

#[test]
fn only_a_policy_reading_the_client_hello_sees_it() {
    let host = TestHost::new().pool("db", [TestBackend::up()]);
    let mut reads = host.init::<Seer<true>>().unwrap();
    let _ = reads.decide_connection(&hello().retry_after(&[(PoolId(0), 0)]));
    let alpn = vec!["h2".to_string(), "http/1.1".to_string()];
    let ip = "10.0.0.9".to_string();
    let expected = (
        true,
        Some("db.example".into()),
        alpn,
        ip.clone(),
        5000,
        6379,
        1,
    );
    assert_eq!(reads.policy().seen, [expected]);
    let mut blind = host.init::<Seer<false>>().unwrap();
    let _ = blind.decide_connection(&hello());
    assert_eq!(
        blind.policy().seen,
        [(false, None, vec![], ip, 5000, 6379, 0)]
    );
}

fn draws(policy: &mut TestPolicy<Seer<false>>) -> Vec<Vec<u8>> {
    let body = |d: Decision| d.body().expect("a local answer").to_vec();
    (0..4)
        .map(|_| body(policy.decide(&TestRequest::get("/"))))
        .collect()
}

#[test]
fn random_is_seeded_per_host_and_drawn_per_instance() {
    let host = |seed| TestHost::new().seed(seed);
    let first = draws(&mut host(1).init().unwrap());
    assert_eq!(draws(&mut host(1).init().unwrap()), first, "the same seed");
    assert_ne!(draws(&mut host(2).init().unwrap()), first, "another seed");
    let shared = host(1);
    let mut a = shared.init::<Seer<false>>().unwrap();
    let mut b = shared.init::<Seer<false>>().unwrap();
    assert_eq!(draws(&mut a), first, "the first instance seeded first");
    assert_ne!(
        draws(&mut b),
        first,
        "a second instance draws its own sequence"
    );
    let default = draws(&mut TestHost::new().init().unwrap());
    let explicit = draws(&mut TestHost::new().seed(TestHost::DEFAULT_SEED).init().unwrap());
    assert_eq!(default, explicit);
}

/// Adds 1 to slot 3 per decision.
struct Count(SharedCounter);

impl Policy for Count {
    fn init(_: &InitContext) -> Result<Self, String> {
        Ok(Count(SharedCounter::new(3)?))
    }

    fn decide(&mut self, _: &Request) -> Decision {
        Decision::respond(200 + self.0.fetch_add(1).rem_euclid(100) as u16).into()
    }
}

#[test]
fn counters_are_shared_by_instances_and_wrap() {
    let host = TestHost::new();
    let (mut a, mut b) = (host.init::<Count>().unwrap(), host.init::<Count>().unwrap());
    let req = TestRequest::get("/");
    let statuses = [a.decide(&req), b.decide(&req), a.decide(&req)].map(|d| d.status());
    assert_eq!(statuses, [Some(200), Some(201), Some(202)]);
    assert_eq!((host.counter(3), a.host().counter(3)), (3, 3));
    host.set_counter(3, i64::MAX);
    let _ = a.decide(&req);
    assert_eq!(host.counter(3), i64::MIN);
    assert_eq!(host.counter(64), 0, "out of range");
    assert_eq!(crate::sys::counter_slots(), 64);
}

#[test]
fn clones_are_independent_copies() {
    let host = TestHost::new().pool("web", [TestBackend::up()]);
    let copy = host.clone().pool("api", [TestBackend::up()]);
    host.update(PoolId(0), 0, |b| b.healthy(false));
    let mut original = host.init::<Count>().unwrap();
    let mut copied = copy.init::<Count>().unwrap();
    let sizes = |p: &mut TestPolicy<Count>| {
        let _installed = sys::install(p.instance.clone());
        (
            PoolId(0).size(),
            PoolId(1).size(),
            PoolId(0).all_stats()[0].healthy,
        )
    };
    assert_eq!(sizes(&mut original), (1, 0, false));
    assert_eq!(sizes(&mut copied), (1, 1, true));
}

#[test]
#[should_panic(expected = "a host call outside a policy call")]
fn a_host_call_outside_a_policy_call_panics() {
    let _ = PoolId(0).size();
}

#[test]
#[should_panic(expected = "invalid name")]
fn a_header_no_request_can_carry_is_refused() {
    let _ = TestRequest::get("/").header("x a", "1");
}

#[test]
fn default_addresses_give_the_documented_stable_ids() {
    let host = TestHost::new()
        .pool("a", [TestBackend::up()])
        .pool("b", (0..300).map(|_| TestBackend::up()));
    let fnv = |s: &str| crate::balance::fnv1a64(s.as_bytes());
    assert_eq!(host.stable_id(PoolId(0), 0), fnv("10.0.0.0:80"));
    assert_eq!(host.stable_id(PoolId(1), 258), fnv("10.1.1.2:80"));
    let named = TestHost::new().pool("c", [TestBackend::up().address("[::1]:9001").stable_id(7)]);
    assert_eq!(named.stable_id(PoolId(0), 0), 7);
}
