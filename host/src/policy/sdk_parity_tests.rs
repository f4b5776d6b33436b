//! The SDK's native test host (`wasmroute_policy::testing`) answers as
//! this host does: the same scenarios (pools with health, ejection, load
//! and ties; requests with headers, cookies, authorities and tried lists)
//! are built once as `BackendPool`s and `RequestView`s and asked through
//! the host functions a policy calls (`HostState`), and once as a
//! `TestHost` and `TestRequest`s and asked by a probe policy through the
//! SDK's own calls. Candidates masks, least-active answers, key hashes,
//! the string accessors and the pool stats must be equal.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use wasmroute_policy::testing::{TestBackend, TestHost, TestRequest};
use wasmroute_policy::{self as sdk, Decision, InitContext, Policy, PoolId};
use wasmtime::component::Resource;

use super::host::wasmroute::policy::host::{Host as _, HostRequest as _};
use super::host::{HostState, RequestKey, RequestView};
use crate::config::{BackendConfig, PoolConfig};
use crate::pool::{ActiveRequest, BackendPool, now_ms};

mod connections;

/// One backend of a scenario.
#[derive(Debug, Clone, Copy)]
struct Spec {
    weight: u32,
    up: bool,
    ejected: bool,
    active: u32,
    /// One answered request: latency in microseconds and whether it
    /// failed (a 503).
    answered: Option<(u32, bool)>,
    /// A load report (cpu, memory).
    load: Option<(f32, f32)>,
}

const UP: Spec = Spec {
    weight: 1,
    up: true,
    ejected: false,
    active: 0,
    answered: None,
    load: None,
};

const DOWN: Spec = Spec { up: false, ..UP };

const fn busy(active: u32) -> Spec {
    Spec { active, ..UP }
}

/// The address of backend `i` of pool `p`: the `TestHost` default.
fn address(p: usize, i: usize) -> String {
    format!("10.{p}.{}.{}:80", i >> 8, i & 255)
}

/// The scenario's pools: ties, health, ejection, an empty pool and one
/// of more than 64 backends.
fn pools() -> Vec<Vec<Spec>> {
    let mut big: Vec<Spec> = (0..130).map(|i| busy(i % 3 + 1)).collect();
    big[1].up = false;
    big[65] = busy(1);
    big[66] = DOWN;
    big[129] = busy(1);
    vec![
        vec![
            busy(2),
            DOWN,
            busy(1),
            Spec {
                ejected: true,
                ..busy(0)
            },
            busy(1),
            Spec {
                weight: 4,
                ..busy(1)
            }
            .with_sample(900, false),
        ],
        vec![
            busy(3).with_sample(1200, false),
            busy(3).with_load(0.42, 0.61),
            busy(3).with_sample(300, true),
            DOWN.with_load(1.0, 0.0),
        ],
        vec![DOWN, DOWN],
        Vec::new(),
        big,
    ]
}

impl Spec {
    const fn with_sample(self, latency_us: u32, failed: bool) -> Spec {
        Spec {
            answered: Some((latency_us, failed)),
            ..self
        }
    }

    const fn with_load(self, cpu: f32, memory: f32) -> Spec {
        Spec {
            load: Some((cpu, memory)),
            ..self
        }
    }

    /// The same backend for the SDK's test host.
    fn test_backend(&self) -> TestBackend {
        let mut b = TestBackend::up()
            .weight(self.weight)
            .healthy(self.up)
            .ejected(self.ejected)
            .active(self.active);
        if let Some((latency, failed)) = self.answered {
            b = b
                .ewma_us(latency)
                .total(1)
                .error_permille(u32::from(failed) * 1000);
        }
        if let Some((cpu, memory)) = self.load {
            b = b.load(cpu, memory);
        }
        b
    }
}

/// The scenario as this host's pools, with the guards that keep requests
/// in flight.
fn host_pools(specs: &[Vec<Spec>]) -> (Arc<[Arc<BackendPool>]>, Vec<ActiveRequest>) {
    let mut guards = Vec::new();
    let mut pools = Vec::new();
    for (p, backends) in specs.iter().enumerate() {
        let config = PoolConfig {
            name: format!("pool{p}"),
            backends: (0..backends.len())
                .map(|i| BackendConfig {
                    address: address(p, i).parse().unwrap(),
                    weight: backends[i].weight,
                })
                .collect(),
            ..PoolConfig::default()
        };
        let pool = Arc::new(BackendPool::new(&config, None));
        for (backend, spec) in pool.backends.iter().zip(backends) {
            if let Some((latency, failed)) = spec.answered {
                let status = if failed { 503 } else { 200 };
                let request = backend.start_request();
                let status = http::StatusCode::from_u16(status).unwrap();
                request.record_response(Duration::from_micros(latency.into()), status);
            }
            if let Some((cpu, memory)) = spec.load {
                backend.stats.load.store(cpu, memory, now_ms());
            }
            backend.stats.set_healthy(spec.up);
            backend.stats.set_ejected(spec.ejected);
            guards.extend((0..spec.active).map(|_| backend.start_request()));
        }
        pools.push(pool);
    }
    (pools.into(), guards)
}

/// The scenario as the SDK's test host.
fn test_host(specs: &[Vec<Spec>]) -> TestHost {
    specs
        .iter()
        .enumerate()
        .fold(TestHost::new(), |host, (p, backends)| {
            host.pool(&format!("pool{p}"), backends.iter().map(Spec::test_backend))
        })
}

/// A request of the scenario.
struct Req {
    method: &'static str,
    target: &'static str,
    authority: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    client_ip: &'static str,
    tried: &'static [(u32, u32)],
}

const PLAIN: Req = Req {
    method: "GET",
    target: "/",
    authority: None,
    headers: &[],
    client_ip: "127.0.0.1",
    tried: &[],
};

fn requests() -> Vec<Req> {
    let headers: &[(&str, &str)] = &[
        ("Host", "shop.example:8080"),
        ("x-user", "ann"),
        ("X-User", "bob"),
        ("cookie", "a=1; session=\"s 1\""),
        ("Cookie", "theme=dark;  b = 2 ;a=shadowed"),
        ("x-accent", "caf\u{e9}"),
        ("x-empty", ""),
    ];
    vec![
        PLAIN,
        Req {
            method: "POST",
            target: "/cart/items?id=7&x",
            headers,
            client_ip: "10.1.2.3",
            ..PLAIN
        },
        Req {
            method: "PURGE",
            target: "/a%20b",
            authority: Some("uri.example"),
            headers,
            client_ip: "2001:db8::1",
            tried: &[(0, 2), (1, 1)],
        },
        Req {
            client_ip: "::ffff:10.0.0.1",
            tried: &[(0, 0), (0, 2), (0, 4), (0, 5)],
            ..PLAIN
        },
        Req {
            tried: &[(0, 2), (0, 3), (4, 65), (4, 0), (1, 9)],
            ..PLAIN
        },
        Req {
            tried: &[(4, 129), (2, 0), (0, 1)],
            headers: &[("host", "only.example"), ("cookie", "x")],
            ..PLAIN
        },
    ]
}

impl Req {
    fn view(&self) -> RequestView {
        let uri = match self.authority {
            Some(authority) => format!("http://{authority}{}", self.target),
            None => self.target.to_owned(),
        };
        let mut builder = http::Request::builder().method(self.method).uri(uri);
        for (name, value) in self.headers {
            builder = builder.header(*name, value.as_bytes());
        }
        let (head, ()) = builder.body(()).unwrap().into_parts();
        let ip: IpAddr = self.client_ip.parse().unwrap();
        let mut view = RequestView::new(head, ip, false, None);
        view.tried = self.tried.to_vec();
        view
    }

    fn test_request(&self) -> TestRequest {
        let mut req = TestRequest::new(self.method, self.target).client_ip(self.client_ip);
        if let Some(authority) = self.authority {
            req = req.authority(authority);
        }
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        let tried: Vec<(PoolId, u32)> = self.tried.iter().map(|&(p, b)| (PoolId(p), b)).collect();
        req.retry_after(&tried)
    }
}

/// Pools asked about: the scenario's and one past them.
const ASKED_POOLS: u32 = 6;
/// Tie breakers asked with.
const TIES: [u64; 7] = [0, 1, 2, 3, 5, 64, u64::MAX];
/// Header names asked for.
const HEADERS: [&str; 6] = ["x-user", "X-USER", "host", "x-accent", "x-empty", "x-none"];
/// Cookie names asked for.
const COOKIES: [&str; 6] = ["a", "session", "theme", "b", "x", "A"];

/// One pool's stats as plain numbers: index, stable id, weight, healthy,
/// in flight, latency, total, error rate, ejected, load in
/// ten-thousandths (cpu, memory).
type StatsRow = (
    u32,
    u64,
    u32,
    bool,
    u32,
    u32,
    u64,
    u32,
    bool,
    Option<(u32, u32)>,
);

/// Everything a policy can ask about one request.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    strings: Vec<Option<String>>,
    attempt: u32,
    tried: Vec<(u32, u32)>,
    hashes: Vec<Option<u64>>,
    /// Per pool, the candidates words at `first` = 0, 64, 128, 192.
    candidates: Vec<Vec<u64>>,
    /// Per pool, least-active for every tie breaker.
    least_active: Vec<Vec<Option<u32>>>,
    stats: Vec<Vec<StatsRow>>,
}

fn ten_thousandths(v: f32) -> u32 {
    (v * 10_000.0).round() as u32
}

/// The keys asked to hash, in the host's type.
fn host_keys() -> Vec<RequestKey> {
    let mut keys = vec![RequestKey::ClientIp, RequestKey::Path, RequestKey::Host];
    keys.extend(HEADERS.map(|h| RequestKey::Header(h.into())));
    keys.extend(COOKIES.map(|c| RequestKey::Cookie(c.into())));
    keys
}

/// What this host answers, through the functions the guest calls.
fn host_seen(state: &mut HostState, view: RequestView) -> Seen {
    state.request = Some(view);
    let r = || Resource::new_borrow(0);
    let mut strings = vec![
        Some(state.path(r())),
        state.query(r()),
        state.authority(r()),
        Some(state.client_ip(r())),
    ];
    strings.extend(HEADERS.map(|h| state.header(r(), h.into())));
    strings.extend(COOKIES.map(|c| state.cookie(r(), c.into())));
    let hashes = host_keys()
        .into_iter()
        .map(|k| state.key_hash(r(), k))
        .collect();
    let pools = 0..ASKED_POOLS;
    let words =
        |state: &mut HostState, p| (0..4).map(|k| state.candidates(r(), p, k * 64)).collect();
    let candidates: Vec<Vec<u64>> = pools.clone().map(|p| words(state, p)).collect();
    let least = |state: &mut HostState, p| TIES.map(|t| state.least_active(r(), p, t)).to_vec();
    let least_active = pools.clone().map(|p| least(state, p)).collect();
    // The SDK's stats are retry-aware: a backend is healthy there when it
    // is one of the host's candidates (the same rule).
    let retry_aware = |words: &[u64], b: &super::host::BackendStats| {
        let mut row = host_row(b);
        let (word, bit) = ((b.index / 64) as usize, b.index % 64);
        row.3 = words.get(word).is_some_and(|w| w & 1 << bit != 0);
        row
    };
    let stats = pools
        .map(|p| {
            let words = &candidates[p as usize];
            let rows = state.pool_stats(p);
            rows.iter().map(|b| retry_aware(words, b)).collect()
        })
        .collect();
    Seen {
        strings,
        attempt: state.attempt(r()),
        tried: state.tried(r()),
        hashes,
        candidates,
        least_active,
        stats,
    }
}

/// The compared fields of a `BackendStats` of either side's bindings (two
/// types with the same fields).
macro_rules! stats_row {
    ($b:expr) => {{
        let b = $b;
        let load = b
            .load
            .map(|l| (ten_thousandths(l.cpu), ten_thousandths(l.memory)));
        (
            b.index,
            b.stable_id,
            b.weight,
            b.healthy,
            b.active_requests,
            b.ewma_latency_us,
            b.total_requests,
            b.error_rate_permille,
            b.ejected,
            load,
        )
    }};
}

fn host_row(b: &super::host::BackendStats) -> StatsRow {
    stats_row!(b)
}

fn sdk_row(b: &sdk::BackendStats) -> StatsRow {
    stats_row!(b)
}

/// The first four 64-backend words of a candidate set, rebuilt from its
/// public answers.
pub(super) fn candidate_words(c: &mut sdk::Candidates) -> Vec<u64> {
    (0..4u32)
        .map(|k| {
            (0..64)
                .filter(|i| c.contains(k * 64 + i))
                .fold(0, |w, i| w | 1 << i)
        })
        .collect()
}

/// A policy that asks everything and keeps the answers.
struct Probe {
    seen: Vec<Seen>,
}

impl Policy for Probe {
    fn init(_: &InitContext) -> Result<Self, String> {
        Ok(Probe { seen: Vec::new() })
    }

    fn decide(&mut self, req: &sdk::Request) -> Decision {
        use wasmroute_policy::key::HashKey;
        let mut strings = vec![
            Some(req.path()),
            req.query(),
            req.authority(),
            Some(req.client_ip()),
        ];
        strings.extend(HEADERS.map(|h| req.header(h)));
        strings.extend(COOKIES.map(|c| req.cookie(c)));
        let mut keys = vec![HashKey::ClientIp, HashKey::Path, HashKey::Host];
        keys.extend(HEADERS.map(|h| HashKey::Header(h.into())));
        keys.extend(COOKIES.map(|c| HashKey::Cookie(c.into())));
        let pools = (0..ASKED_POOLS).map(PoolId);
        let words = |p: PoolId| candidate_words(&mut p.candidates(req));
        self.seen.push(Seen {
            strings,
            attempt: req.attempt(),
            tried: req.tried().into_iter().map(|(p, b)| (p.0, b)).collect(),
            hashes: keys.iter().map(|k| req.key_hash(k)).collect(),
            candidates: pools.clone().map(words).collect(),
            least_active: pools
                .clone()
                .map(|p| TIES.map(|t| p.least_active(req, t)).to_vec())
                .collect(),
            stats: pools
                .map(|p| p.stats(req).iter().map(sdk_row).collect())
                .collect(),
        });
        Decision::no_backend()
    }
}

#[test]
fn sdk_test_host_answers_as_the_host() {
    let specs = pools();
    let (pools, _guards) = host_pools(&specs);
    let mut state = HostState::new(pools, Arc::default(), 1 << 20, Duration::from_millis(5), 7);
    let mut probe = test_host(&specs).init::<Probe>().unwrap();
    for (i, req) in requests().iter().enumerate() {
        let expected = host_seen(&mut state, req.view());
        let _ = probe.decide(&req.test_request());
        let seen = probe.policy_mut().seen.pop().unwrap();
        // Field by field, so a failure names what differs.
        assert_eq!(seen.strings, expected.strings, "request {i}: accessors");
        assert_eq!(
            (seen.attempt, &seen.tried),
            (expected.attempt, &expected.tried),
            "request {i}"
        );
        assert_eq!(seen.hashes, expected.hashes, "request {i}: key hashes");
        assert_eq!(
            seen.candidates, expected.candidates,
            "request {i}: candidates"
        );
        assert_eq!(
            seen.least_active, expected.least_active,
            "request {i}: least-active"
        );
        assert_eq!(seen.stats, expected.stats, "request {i}: stats");
    }
}

#[test]
fn the_scenario_covers_what_it_claims() {
    // Guards against a scenario that compares only trivial answers.
    let specs = pools();
    let (pools, _guards) = host_pools(&specs);
    let mut state = HostState::new(pools, Arc::default(), 1 << 20, Duration::from_millis(5), 7);
    let all = requests();
    let first = host_seen(&mut state, all[0].view());
    assert_eq!(
        first.candidates[0][0], 0b110101,
        "pool 0: down, ejected left out"
    );
    assert_eq!(
        first.least_active[0][..4],
        [Some(2), Some(4), Some(5), Some(2)],
        "a three-way tie"
    );
    assert_eq!(first.candidates[4][1], !0b100, "pool 4 beyond 64 backends");
    assert_eq!(first.candidates[4][2], 0b11, "the last word of 130");
    assert_eq!(first.candidates[2][0], 0, "no healthy backend");
    let stats = &first.stats[1];
    assert_eq!(
        stats[1].5, 750,
        "an unmeasured backend reports the pool's mean"
    );
    assert_eq!((stats[2].7, stats[1].9), (1000, Some((4200, 6100))));
    let retry = host_seen(&mut state, all[3].view());
    assert_eq!(
        retry.candidates[0][0], 0b110101,
        "every healthy one tried: all again"
    );
    let second = host_seen(&mut state, all[1].view());
    assert_eq!(second.strings[4], Some("ann".into()), "the first x-user");
    assert_eq!(second.strings[7], None, "a value that is not visible ASCII");
    assert_eq!(
        second.strings[10..14],
        [
            Some("1".into()),
            Some("s 1".into()),
            Some("dark".into()),
            None
        ]
    );
}

#[test]
fn stable_ids_are_the_hosts() {
    let specs = pools();
    let (pools, _guards) = host_pools(&specs);
    let host = test_host(&specs).pool("named", [TestBackend::up().address("[::1]:9001")]);
    for (p, pool) in pools.iter().enumerate() {
        for (i, backend) in pool.backends.iter().enumerate() {
            assert_eq!(
                host.stable_id(PoolId(p as u32), i as u32),
                backend.stable_id
            );
        }
    }
    let named = PoolConfig {
        name: "named".into(),
        backends: vec![BackendConfig {
            address: "[::1]:9001".parse().unwrap(),
            weight: 1,
        }],
        ..PoolConfig::default()
    };
    let named = BackendPool::new(&named, None);
    assert_eq!(
        host.stable_id(PoolId(specs.len() as u32), 0),
        named.backends[0].stable_id
    );
}
