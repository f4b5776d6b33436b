//! The shipped affinity policies, end to end: consistent hashing keeps
//! keys on their backend (and moves only about 1/N when a backend goes
//! away), signed sticky cookies pin a client and cannot be forged, and the
//! read/write split routes by method.

use std::collections::{BTreeMap, BTreeSet};

use http::{Method, Request, StatusCode};
use tokio::task::JoinSet;
use wasmroute_e2e::client::empty;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, Reply, bundled,
};

/// The backend answering each key (sent in `header`), in key order; eight
/// clients in parallel.
async fn backends_for(url: &str, header: &str, keys: &[String]) -> Vec<String> {
    let mut set = JoinSet::new();
    let chunk = keys.len().div_ceil(8);
    for (n, part) in keys.chunks(chunk).enumerate() {
        let (url, header, part) = (url.to_owned(), header.to_owned(), part.to_vec());
        set.spawn(async move {
            let client = Client::http1();
            let mut out = Vec::with_capacity(part.len());
            for key in &part {
                let reply = client.get_with(&url, &[(&header, key)]).await.unwrap();
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                out.push(reply.backend().expect("x-backend").to_owned());
            }
            (n, out)
        });
    }
    let mut parts: Vec<(usize, Vec<String>)> = set.join_all().await;
    parts.sort_by_key(|(n, _)| *n);
    parts.into_iter().flat_map(|(_, out)| out).collect()
}

fn hash_config(backends: &[&Backend]) -> ConfigBuilder {
    ConfigBuilder::new()
        .listener(
            ListenerSpec::new("edge", "consistent-hash", &["web"])
                .policy_config("key", "header:x-user"),
        )
        .pool(PoolSpec::new("web", backends))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_and_moves_about_a_quarter_when_one_of_four_goes() {
    let web = Backend::start_many("web", 4).await.unwrap();
    let all: Vec<&Backend> = web.iter().collect();
    let fx = ProxyFixture::start(
        &hash_config(&all),
        &[("consistent-hash", bundled("consistent-hash"))],
    )
    .await
    .unwrap();
    let url = fx.url("edge", "/");
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();

    let first = backends_for(&url, "x-user", &keys).await;
    // Nothing changed: every key on the same backend.
    let again = backends_for(&url, "x-user", &keys).await;
    assert_eq!(
        first, again,
        "a key changed backend with no change to the pool"
    );
    let mut per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &first {
        *per_backend.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 4, "{per_backend:?}");
    assert!(
        per_backend.values().all(|&n| (150..=350).contains(&n)),
        "uneven spread: {per_backend:?}"
    );

    // web-4 leaves the pool (the others change index, not identity).
    let removed = web[3].name().to_owned();
    fx.rewrite_config(&hash_config(&all[..3]).render()).unwrap();
    fx.reload().await.unwrap();
    let served = web[3].served();
    let after = backends_for(&url, "x-user", &keys).await;
    assert_eq!(web[3].served(), served, "a removed backend got requests");
    let kept = first.iter().zip(&after).filter(|(a, b)| a == b).count();
    let needless = first
        .iter()
        .zip(&after)
        .filter(|(a, b)| **a != removed && a != b)
        .count();
    assert!(kept >= 700, "only {kept} of 1000 keys kept their backend");
    assert!(
        needless <= 30,
        "{needless} keys left a backend that is still there"
    );
    fx.shutdown().await.unwrap();
}

/// The `name=value` part of a reply's `Set-Cookie`, if any.
fn set_cookie(reply: &Reply) -> Option<String> {
    let value = reply.headers.get("set-cookie")?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_owned())
}

async fn get_with_cookie(client: &Client, url: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let reply = client.get_with(url, &headers).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
}

const SECRET: &str = "a test secret of 32 bytes.......";

fn sticky_config(backends: &[&Backend]) -> ConfigBuilder {
    ConfigBuilder::new()
        .listener(
            ListenerSpec::new("edge", "sticky-cookie", &["web"])
                .policy_config("secret", SECRET)
                .policy_config("cookie", "lb")
                .policy_config_toml("max_age", "600"),
        )
        .pool(PoolSpec::new("web", backends))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_clients_and_cannot_be_forged() {
    let web = Backend::start_many("web", 3).await.unwrap();
    let all: Vec<&Backend> = web.iter().collect();
    let policies = [("sticky-cookie", bundled("sticky-cookie"))];
    let fx = ProxyFixture::start(&sticky_config(&all), &policies)
        .await
        .unwrap();
    let url = fx.url("edge", "/");
    let client = Client::http1();

    // New clients are balanced (round robin) and each gets a cookie.
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..30 {
        let reply = get_with_cookie(&client, &url, None).await;
        let cookie = set_cookie(&reply).expect("a new client gets a cookie");
        assert!(cookie.starts_with("lb="), "{cookie}");
        let raw = reply.headers["set-cookie"].to_str().unwrap();
        assert!(
            raw.contains("HttpOnly") && raw.contains("Max-Age=600"),
            "{raw}"
        );
        cookies.insert(reply.backend().unwrap().to_owned(), cookie);
    }
    assert_eq!(
        cookies.len(),
        3,
        "round robin placed clients on all: {cookies:?}"
    );

    // A client with a cookie stays put, and gets no new cookie.
    for (backend, cookie) in &cookies {
        for _ in 0..20 {
            let reply = get_with_cookie(&client, &url, Some(cookie)).await;
            assert_eq!(reply.backend(), Some(backend.as_str()), "{cookie}");
            assert_eq!(set_cookie(&reply), None);
        }
    }

    // Another wasmroute instance with the same secret and backends honours
    // the cookie: no shared state.
    let other = ProxyFixture::start(&sticky_config(&all), &policies)
        .await
        .unwrap();
    for (backend, cookie) in &cookies {
        let reply = get_with_cookie(&client, &other.url("edge", "/"), Some(cookie)).await;
        assert_eq!(reply.backend(), Some(backend.as_str()));
    }
    other.shutdown().await.unwrap();

    // Forgeries: web-1's tag on web-2's id, a flipped tag digit, garbage.
    // Each is ignored: the request is re-balanced and gets a fresh cookie.
    let value = |b: &str| cookies[b].trim_start_matches("lb=").to_owned();
    let (v1, v2) = (value("web-1"), value("web-2"));
    let (id2, tag1) = (&v2[..16], &v1[17..]);
    let mut flipped = v2.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for forged in [format!("{id2}.{tag1}"), flipped, "garbage".into()] {
        let cookie = format!("lb={forged}");
        let mut landed = BTreeSet::new();
        for _ in 0..9 {
            let reply = get_with_cookie(&client, &url, Some(&cookie)).await;
            let fresh = set_cookie(&reply).expect("a forged cookie is replaced");
            assert_ne!(fresh, cookie);
            let backend = reply.backend().unwrap().to_owned();
            // The fresh cookie is genuine and pins its backend.
            let pinned = get_with_cookie(&client, &url, Some(&fresh)).await;
            assert_eq!(pinned.backend(), Some(backend.as_str()));
            landed.insert(backend);
        }
        assert!(
            landed.len() >= 2,
            "{cookie}: forged cookie pinned to {landed:?}"
        );
    }

    // web-3 leaves the pool: its clients are re-placed (and re-pinned);
    // the others keep their backend across the config reload.
    fx.rewrite_config(&sticky_config(&all[..2]).render())
        .unwrap();
    fx.reload().await.unwrap();
    let served = web[2].served();
    let reply = get_with_cookie(&client, &url, Some(&cookies["web-3"])).await;
    let fresh = set_cookie(&reply).expect("re-pinned");
    let backend = reply.backend().unwrap().to_owned();
    assert_ne!(backend, "web-3");
    let reply = get_with_cookie(&client, &url, Some(&fresh)).await;
    assert_eq!(reply.backend(), Some(backend.as_str()));
    assert_eq!(web[2].served(), served);
    for b in ["web-1", "web-2"] {
        let reply = get_with_cookie(&client, &url, Some(&cookies[b])).await;
        assert_eq!(reply.backend(), Some(b));
        assert_eq!(set_cookie(&reply), None);
    }
    fx.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_split_routes_by_method() {
    let primary = Backend::start("primary-1").await.unwrap();
    let replicas = Backend::start_many("replica", 2).await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new(
            "edge",
            "read-write-split",
            &["primary", "replicas"],
        ))
        .pool(PoolSpec::new("primary", &[&primary]))
        .pool(PoolSpec::new("replicas", &[&replicas[0], &replicas[1]]));
    let fx = ProxyFixture::start(
        &config,
        &[("read-write-split", bundled("read-write-split"))],
    )
    .await
    .unwrap();
    let url = fx.url("edge", "/items/1");
    let client = Client::http1();
    let mut reads = BTreeMap::<String, usize>::new();
    for _ in 0..4 {
        for (method, write) in [
            (Method::GET, false),
            (Method::HEAD, false),
            (Method::OPTIONS, false),
            (Method::POST, true),
            (Method::PUT, true),
            (Method::PATCH, true),
            (Method::DELETE, true),
        ] {
            let req = Request::builder()
                .method(method.clone())
                .uri(&url)
                .body(empty())
                .unwrap();
            let reply = client.request(req).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{method}");
            let backend = reply.backend().expect("x-backend").to_owned();
            if write {
                assert_eq!(backend, "primary-1", "{method}");
            } else {
                assert!(
                    backend.starts_with("replica-"),
                    "{method} went to {backend}"
                );
                *reads.entry(backend).or_default() += 1;
            }
        }
    }
    assert_eq!(primary.served(), 16);
    // Reads are balanced over the replicas.
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.values().all(|&n| n >= 4), "{reads:?}");
    fx.shutdown().await.unwrap();
}
