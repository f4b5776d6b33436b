//! The routing `consistent-hash` documents, on the SDK's native test host, and its
//! config checks.

use super::*;
use wasmroute_policy::ConfigValue;

fn init(config: &[(&str, ConfigValue)]) -> Result<ConsistentHash, String> {
    let ctx = InitContext::from_parts(&["web", "api"], config);
    ConsistentHash::init(&ctx)
}

#[test]
fn config_is_checked() {
    let p = init(&[
        ("key", ConfigValue::Text("header:x-user".into())),
        ("pool", ConfigValue::Text("api".into())),
        ("table_size", ConfigValue::Integer(65537)),
    ])
    .unwrap();
    assert_eq!(p.key, HashKey::Header("x-user".into()));
    assert_eq!(p.pool, PoolId(1));
    assert_eq!(p.table.size(), 65537);
    let err = |c: &[(&str, ConfigValue)]| init(c).err().unwrap();
    assert_eq!(
        err(&[("table_size", ConfigValue::Integer(1000))]),
        "table_size: must be a prime number, got 1000"
    );
    assert!(err(&[("table_size", ConfigValue::Integer(-1))]).starts_with("table_size: "));
    assert!(err(&[("key", ConfigValue::Text("ip".into()))]).starts_with("key: unknown key"));
    assert!(err(&[("hash", ConfigValue::Text("ip".into()))]).starts_with("hash: unknown key"));
}

mod routing {
    use super::super::ConsistentHash;
    use wasmroute_policy::PoolId;
    use wasmroute_policy::testing::{
        TestBackend, TestConnection, TestHost, TestPolicy, TestRequest,
    };

    const ADDRESSES: [&str; 4] = [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9003",
        "[::1]:9004",
    ];

    fn host(addresses: &[&str], key: &str) -> TestHost {
        let backends = addresses.iter().map(|a| TestBackend::up().address(a));
        TestHost::new()
            .pool("web", backends)
            .config("key", key)
            .config("table_size", 1021i64)
    }

    fn user(name: &str) -> TestRequest {
        TestRequest::get("/").header("x-user", name)
    }

    fn backend(p: &mut TestPolicy<ConsistentHash>, req: &TestRequest) -> u32 {
        p.decide(req).target().expect("forwarded").1
    }

    fn users() -> Vec<String> {
        (0..400).map(|i| format!("user-{i}")).collect()
    }

    /// The backend of every user.
    fn placement(p: &mut TestPolicy<ConsistentHash>) -> Vec<u32> {
        users().iter().map(|u| backend(p, &user(u))).collect()
    }

    #[test]
    fn a_key_keeps_its_backend_in_every_worker_and_process() {
        let h = host(&ADDRESSES, "header:x-user");
        let mut a = h.init::<ConsistentHash>().unwrap();
        let first = placement(&mut a);
        assert_eq!(placement(&mut a), first, "stable over time");
        let mut b = h.init::<ConsistentHash>().unwrap();
        assert_eq!(placement(&mut b), first, "another worker agrees");
        let mut other = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        assert_eq!(placement(&mut other), first, "another proxy agrees");
        let mut per_backend = [0; 4];
        first.iter().for_each(|&b| per_backend[b as usize] += 1);
        assert!(
            per_backend.iter().all(|&n| n > 60),
            "keys spread: {per_backend:?}"
        );
    }

    #[test]
    fn the_table_depends_on_addresses_not_order() {
        let mut forward = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let reversed: Vec<&str> = ADDRESSES.iter().rev().copied().collect();
        let mut backward = host(&reversed, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let by_address = |p: &mut TestPolicy<ConsistentHash>, order: &[&str]| {
            let placed = placement(p);
            placed
                .iter()
                .map(|&b| order[b as usize].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            by_address(&mut forward, &ADDRESSES),
            by_address(&mut backward, &reversed)
        );
    }

    /// The address each user's key goes to with a pool of `addresses`
    /// (a new instance: what a config commit or DNS change builds).
    fn placement_by_address(addresses: &[&str]) -> Vec<String> {
        let mut p = host(addresses, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let placed = placement(&mut p);
        placed
            .iter()
            .map(|&b| addresses[b as usize].to_owned())
            .collect()
    }

    /// Keys that changed backend though neither backend was `changed`.
    fn moved_needlessly(before: &[String], after: &[String], changed: &str) -> usize {
        let pairs = before.iter().zip(after);
        pairs
            .filter(|(b, a)| b != a && *b != changed && *a != changed)
            .count()
    }

    #[test]
    fn a_pool_growing_or_shrinking_moves_only_keys_of_the_changed_backend() {
        let before = placement_by_address(&ADDRESSES);
        let mut grown = ADDRESSES.to_vec();
        grown.push("127.0.0.2:9001");
        let after = placement_by_address(&grown);
        let joined = after.iter().filter(|a| *a == "127.0.0.2:9001").count();
        assert!(joined > 40, "the new backend takes its share: {joined}");
        let needless = moved_needlessly(&before, &after, "127.0.0.2:9001");
        // Maglev's disruption: a few percent at most.
        assert!(
            needless * 20 < before.len(),
            "{needless} keys moved between kept backends"
        );

        let shrunk: Vec<&str> = (ADDRESSES.iter().copied())
            .filter(|a| *a != ADDRESSES[1])
            .collect();
        let after = placement_by_address(&shrunk);
        assert!(after.iter().all(|a| a != ADDRESSES[1]));
        let needless = moved_needlessly(&before, &after, ADDRESSES[1]);
        assert!(
            needless * 20 < before.len(),
            "{needless} keys moved between kept backends"
        );
    }

    #[test]
    fn a_backend_going_down_moves_only_its_keys_and_they_come_back() {
        let mut p = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let before = placement(&mut p);
        p.host().update(PoolId(0), 2, |b| b.healthy(false));
        let during = placement(&mut p);
        assert!(during.iter().all(|&d| d != 2), "a down backend gets no key");
        let kept = |b: &&u32| **b != 2;
        let others = before.iter().zip(&during).filter(|(b, _)| kept(b));
        let moved = others.clone().filter(|(b, d)| b != d).count();
        // Maglev's disruption: a few percent at most of the other keys.
        assert!(
            moved * 20 < others.count(),
            "{moved} keys of healthy backends moved"
        );
        p.host().update(PoolId(0), 2, |b| b.healthy(true));
        assert_eq!(placement(&mut p), before);
        for i in 0..4 {
            p.host().update(PoolId(0), i, |b| b.healthy(false));
        }
        assert_eq!(p.decide(&user("ann")).status(), Some(503));
        assert_eq!(p.decide_connection(&TestConnection::new()).target(), None);
    }

    #[test]
    fn without_the_header_the_client_ip_is_the_key() {
        let mut by_header = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let mut by_ip = host(&ADDRESSES, "client-ip")
            .init::<ConsistentHash>()
            .unwrap();
        let ips: Vec<String> = (0..200)
            .map(|i| format!("10.0.{}.{}", i / 100, i % 100))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for ip in &ips {
            let req = TestRequest::get("/").client_ip(ip);
            let b = backend(&mut by_ip, &req);
            assert_eq!(backend(&mut by_header, &req), b, "{ip}");
            seen.insert(b);
        }
        assert_eq!(seen.len(), 4, "client IPs spread too");
    }

    #[test]
    fn cookie_path_and_host_keys() {
        for (key, a, b) in [
            (
                "cookie:sid",
                TestRequest::get("/").cookie("sid", "s1"),
                TestRequest::get("/").cookie("sid", "s2"),
            ),
            ("path", TestRequest::get("/a/1"), TestRequest::get("/a/2")),
            (
                "host",
                TestRequest::get("/").header("host", "a.example"),
                TestRequest::get("/").header("host", "b.example"),
            ),
        ] {
            let mut p = host(&ADDRESSES, key).init::<ConsistentHash>().unwrap();
            // The same value from other clients: the same backend.
            let first = backend(&mut p, &a);
            for ip in ["10.9.9.1", "10.9.9.2", "2001:db8::9"] {
                assert_eq!(backend(&mut p, &a.clone().client_ip(ip)), first, "{key}");
            }
            let values: std::collections::BTreeSet<u32> = (0..64)
                .map(|i| backend(&mut p, &b.clone().header("x-n", &i.to_string())))
                .collect();
            assert_eq!(values.len(), 1, "{key}: the key alone decides");
        }
    }

    #[test]
    fn a_retry_is_rehashed_to_an_untried_backend() {
        let mut p = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        for name in users().iter().take(50) {
            let first = backend(&mut p, &user(name));
            let retry = user(name).retry_after(&[(PoolId(0), first)]);
            let second = backend(&mut p, &retry);
            assert_ne!(second, first, "{name}");
            assert_eq!(
                backend(&mut p, &retry),
                second,
                "the retry is consistent too"
            );
        }
    }

    #[test]
    fn a_connection_hashes_its_client_ip_as_a_request_would() {
        let mut p = host(&ADDRESSES, "header:x-user")
            .init::<ConsistentHash>()
            .unwrap();
        let mut by_ip = host(&ADDRESSES, "client-ip")
            .init::<ConsistentHash>()
            .unwrap();
        for i in 0..100 {
            let ip = format!("192.0.2.{i}");
            let req = backend(&mut by_ip, &TestRequest::get("/").client_ip(&ip));
            let conn = TestConnection::new().client_ip(&ip).client_port(1000 + i);
            assert_eq!(
                p.decide_connection(&conn).target(),
                Some((PoolId(0), req)),
                "{ip}"
            );
            let retry = conn.retry_after(&[(PoolId(0), req)]);
            let (_, other) = p.decide_connection(&retry).target().unwrap();
            assert_ne!(other, req);
        }
    }
}
