//! Answers the host computes for a policy so that nothing but a number
//! crosses into the guest: `request.key-hash` (a hash of a request part),
//! `request.candidates` (the backends a request may go to, as a bitmask)
//! and `request.least-active` (the least busy of them). See
//! `wit/policy.wit`. None allocates.

use std::net::IpAddr;

use super::host::{RequestKey, RequestView, find_cookie};
use crate::ip_text::IpText;
use crate::pool::{BackendPool, FNV1A64_OFFSET, fnv1a64_extend};

/// The authority the client addressed, as the `authority` accessor returns
/// it: the URI's (HTTP/2 `:authority`), else the `Host` header.
pub fn authority(head: &http::request::Parts) -> Option<&str> {
    match head.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => header_str(&head.headers, "host"),
    }
}

/// The first value of header `name`, when present and valid UTF-8.
pub fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// FNV-1a 64 of the bytes the string accessor matching `key` returns;
/// `None` exactly when that accessor returns none.
pub fn key_hash(view: &RequestView, key: &RequestKey) -> Option<u64> {
    let head = &view.head;
    let text = match key {
        RequestKey::ClientIp => return Some(ip_hash(view.client_ip)),
        RequestKey::Path => head.uri.path(),
        RequestKey::Host => authority(head)?,
        RequestKey::Header(name) => header_str(&head.headers, name)?,
        RequestKey::Cookie(name) => find_cookie(&head.headers, name)?,
    };
    Some(fnv1a64_extend(FNV1A64_OFFSET, text.as_bytes()))
}

/// FNV-1a 64 of the IP address's text (what the `client-ip` accessor
/// returns), without a buffer on the heap.
pub(super) fn ip_hash(ip: IpAddr) -> u64 {
    fnv1a64_extend(FNV1A64_OFFSET, IpText::new(ip).as_bytes())
}

/// The `candidates` bitmask of `pool` (the listener's pool `pool_id`) for a
/// request that tried `tried` (pool, backend) pairs: bit `i` for backend
/// `first + i` when it is healthy and untried, or healthy when every
/// healthy backend of the pool was tried.
pub fn candidates(pool: &BackendPool, pool_id: u32, tried: &[(u32, u32)], first: u32) -> u64 {
    let start = first as usize;
    if start >= pool.backends.len() {
        return 0;
    }
    let candidate = is_candidate(pool, pool_id, tried);
    let end = pool.backends.len().min(start + 64);
    (start..end)
        .filter(|&i| candidate(i))
        .fold(0, |mask, i| mask | 1 << (i - start))
}

/// `request.least-active`: the candidate (as [`candidates`] defines them)
/// with the fewest requests in flight, ties taken in pool order and
/// `tie_breaker % ties` selecting one. Allocates only for pools of more
/// than 64 backends.
pub fn least_active(
    pool: &BackendPool,
    pool_id: u32,
    tried: &[(u32, u32)],
    tie_breaker: u64,
) -> Option<u32> {
    // Other workers change the counts and health meanwhile: both passes
    // read one snapshot (on the stack up to 64 backends), or the tie
    // counted in the first could be gone in the second.
    const ON_STACK: usize = 64;
    const NOT_A_CANDIDATE: u64 = u64::MAX;
    let size = pool.backends.len();
    let (mut stack, mut heap) = ([0u64; ON_STACK], Vec::new());
    let loads: &mut [u64] = if size <= ON_STACK {
        &mut stack[..size]
    } else {
        heap.resize(size, 0);
        &mut heap
    };
    let candidate = is_candidate(pool, pool_id, tried);
    for (i, load) in loads.iter_mut().enumerate() {
        *load = match candidate(i) {
            true => u64::from(pool.backends[i].stats.active()),
            false => NOT_A_CANDIDATE,
        };
    }
    let fewest = loads
        .iter()
        .copied()
        .min()
        .filter(|&l| l != NOT_A_CANDIDATE)?;
    let ties = loads.iter().filter(|&&l| l == fewest).count() as u64;
    let nth = (tie_breaker % ties) as usize;
    let mut tied = loads.iter().enumerate().filter(|&(_, &l)| l == fewest);
    tied.nth(nth).map(|(i, _)| i as u32)
}

/// Whether backend `i` of `pool` is a candidate for a request that tried
/// `tried`: healthy and untried, or healthy when every healthy backend of
/// the pool was tried (the rule of the SDK's retry-aware `PoolId::stats`).
fn is_candidate<'a>(
    pool: &'a BackendPool,
    pool_id: u32,
    tried: &'a [(u32, u32)],
) -> impl Fn(usize) -> bool + 'a {
    let backends = &pool.backends;
    let healthy = move |i: usize| backends[i].stats.healthy();
    let tried_here = move |i: usize| tried.contains(&(pool_id, i as u32));
    // Only when this pool has tried backends and one healthy backend is
    // still fresh are the tried ones left out.
    let skip_tried = tried.iter().any(|&(p, _)| p == pool_id)
        && (0..backends.len()).any(|i| healthy(i) && !tried_here(i));
    move |i| healthy(i) && !(skip_tried && tried_here(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};
    use crate::pool::fnv1a64;

    fn pool(size: u16) -> BackendPool {
        let config = PoolConfig {
            name: "web".into(),
            backends: (0..size)
                .map(|i| BackendConfig {
                    address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            ..PoolConfig::default()
        };
        BackendPool::new(&config, None)
    }

    fn view(ip: &str, headers: &[(&str, &str)]) -> RequestView {
        let mut builder = http::Request::builder().uri("/a/b?q=1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (head, ()) = builder.body(()).unwrap().into_parts();
        RequestView::new(head, ip.parse().unwrap(), false, None)
    }

    #[test]
    fn key_hash_is_fnv_of_each_accessor_value() {
        let v = view(
            "10.1.2.3",
            &[
                ("host", "example.com"),
                ("x-user", "ann"),
                ("cookie", "a=1; s=\"x y\""),
            ],
        );
        let fnv = |s: &str| Some(fnv1a64(s.as_bytes()));
        assert_eq!(key_hash(&v, &RequestKey::ClientIp), fnv("10.1.2.3"));
        assert_eq!(key_hash(&v, &RequestKey::Path), fnv("/a/b"));
        assert_eq!(key_hash(&v, &RequestKey::Host), fnv("example.com"));
        let header = |name: &str| RequestKey::Header(name.into());
        assert_eq!(key_hash(&v, &header("X-User")), fnv("ann"));
        assert_eq!(key_hash(&v, &RequestKey::Cookie("s".into())), fnv("x y"));
        assert_eq!(key_hash(&v, &RequestKey::Cookie("a".into())), fnv("1"));
    }

    #[test]
    fn key_hash_is_none_when_the_value_is_absent() {
        let mut v = view("10.1.2.3", &[]);
        assert_eq!(key_hash(&v, &RequestKey::Host), None);
        assert_eq!(key_hash(&v, &RequestKey::Header("x-user".into())), None);
        assert_eq!(key_hash(&v, &RequestKey::Cookie("s".into())), None);
        // Not valid UTF-8: the `header` accessor says none, and so does this.
        v.head
            .headers
            .insert("x-bin", http::HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(key_hash(&v, &RequestKey::Header("x-bin".into())), None);
    }

    #[test]
    fn client_ip_hash_is_fnv_of_display() {
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, n.wrapping_mul(7), 99, n / 3]);
            assert_eq!(ip_hash(ip), fnv1a64(ip.to_string().as_bytes()), "{ip}");
        }
    }

    #[test]
    fn key_hash_of_ipv6_and_uri_authority() {
        let v = view("::ffff:10.0.0.1", &[]);
        assert_eq!(
            key_hash(&v, &RequestKey::ClientIp),
            Some(fnv1a64(v.client_ip.to_string().as_bytes()))
        );
        let v = view("2001:db8::1", &[]);
        assert_eq!(
            key_hash(&v, &RequestKey::ClientIp),
            Some(fnv1a64(b"2001:db8::1"))
        );
        let mut v = view("::1", &[("host", "header.example")]);
        v.head.uri = "http://uri.example:8080/x".parse().unwrap();
        assert_eq!(
            key_hash(&v, &RequestKey::Host),
            Some(fnv1a64(b"uri.example:8080"))
        );
        assert_eq!(authority(&v.head), Some("uri.example:8080"));
    }

    #[test]
    fn candidates_are_the_healthy_untried_backends() {
        let p = pool(5);
        assert_eq!(candidates(&p, 0, &[], 0), 0b11111);
        p.backends[1].stats.set_healthy(false);
        p.backends[3].stats.set_ejected(true);
        assert_eq!(candidates(&p, 0, &[], 0), 0b10101);
        assert_eq!(candidates(&p, 0, &[(0, 0)], 0), 0b10100);
        // Another pool's tries do not count.
        assert_eq!(candidates(&p, 0, &[(1, 0), (1, 2)], 0), 0b10101);
        // An unhealthy backend stays out even when tried.
        assert_eq!(candidates(&p, 0, &[(0, 1), (0, 4)], 0), 0b00101);
    }

    #[test]
    fn candidates_count_tried_again_when_all_healthy_were_tried() {
        let p = pool(3);
        p.backends[2].stats.set_healthy(false);
        assert_eq!(candidates(&p, 0, &[(0, 0), (0, 1)], 0), 0b011);
        assert_eq!(candidates(&p, 2, &[(2, 0), (2, 1)], 0), 0b011);
        p.backends[0].stats.set_healthy(false);
        p.backends[1].stats.set_healthy(false);
        assert_eq!(candidates(&p, 0, &[(0, 0)], 0), 0);
    }

    #[test]
    fn candidates_window_by_first() {
        let p = pool(130);
        p.backends[65].stats.set_healthy(false);
        assert_eq!(candidates(&p, 0, &[], 0), u64::MAX);
        assert_eq!(candidates(&p, 0, &[], 64), !0b10);
        assert_eq!(candidates(&p, 0, &[], 128), 0b11);
        assert_eq!(candidates(&p, 0, &[], 3), !(1 << 62));
        assert_eq!(candidates(&p, 0, &[], 127), 0b111);
        assert_eq!(candidates(&p, 0, &[], 130), 0);
        assert_eq!(candidates(&p, 0, &[], u32::MAX), 0);
        // A fresh backend beyond the window still makes tried ones skipped.
        assert_eq!(candidates(&p, 0, &[(0, 129)], 128), 0b01);
        assert_eq!(candidates(&pool(0), 0, &[], 0), 0);
    }

    /// Puts `counts[i]` requests in flight on backend `i`.
    fn in_flight(p: &BackendPool, counts: &[usize]) -> Vec<crate::pool::ActiveRequest> {
        let backends = p.backends.iter().zip(counts);
        let guards = backends.flat_map(|(b, &n)| (0..n).map(|_| b.start_request()));
        guards.collect()
    }

    #[test]
    fn least_active_picks_the_least_busy_candidate() {
        let p = pool(4);
        let _guards = in_flight(&p, &[3, 1, 0, 2]);
        for tie_breaker in 0..4 {
            assert_eq!(least_active(&p, 0, &[], tie_breaker), Some(2));
        }
        p.backends[2].stats.set_healthy(false);
        assert_eq!(least_active(&p, 0, &[], 0), Some(1));
        // A retry skips the tried backend while a fresh one is healthy...
        assert_eq!(least_active(&p, 0, &[(0, 1)], 0), Some(3));
        // ... and counts it again once every healthy one was tried.
        assert_eq!(least_active(&p, 0, &[(0, 0), (0, 1), (0, 3)], 0), Some(1));
        for b in &p.backends {
            b.stats.set_healthy(false);
        }
        assert_eq!(least_active(&p, 0, &[], 0), None);
        assert_eq!(least_active(&p, 7, &[], 0), None);
        assert_eq!(least_active(&pool(0), 0, &[], 0), None);
    }

    #[test]
    fn least_active_rotates_among_ties_in_pool_order() {
        let p = pool(5);
        let _guards = in_flight(&p, &[1, 4, 1, 0, 0]);
        let picks: Vec<_> = (0..4).map(|t| least_active(&p, 0, &[], t)).collect();
        assert_eq!(picks, [Some(3), Some(4), Some(3), Some(4)]);
        assert_eq!(least_active(&p, 0, &[], u64::MAX), Some(4));
        p.backends[3].stats.set_healthy(false);
        p.backends[4].stats.set_healthy(false);
        let picks: Vec<_> = (0..3).map(|t| least_active(&p, 0, &[], t)).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(0)]);
        let p = pool(130);
        assert_eq!(least_active(&p, 0, &[], 129), Some(129));
        assert_eq!(least_active(&p, 0, &[], 130), Some(0));
    }
}
