//! How answers become backends, and what each lookup counts as.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Discovery, Outcome, Query, Resolution};
use crate::config::Config;

const CONFIG: &str = r#"
[policies]
dir = "p"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
policy = "rr"
pools = ["web"]
[[pools]]
name = "web"
backends = [
  { address = "127.0.0.1:9000" },
  { address = "Svc.Example:9000", weight = 3 },
  { address = "other.example:81" },
  { srv = "_http._tcp.Svc.Example", weight = 2 },
  { address = "svc.example:9001" },
]
[resolver]
refresh = "10s"
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new("/etc/wasmroute.toml")).expect("valid")
}

/// The A/AAAA query of `name`.
fn q(name: &str) -> Query {
    Query {
        name: name.into(),
        srv: false,
    }
}

/// Addresses as a lookup gives them: `IP` (port 0) or `IP:port`.
fn addresses(list: &[&str]) -> Vec<SocketAddr> {
    (list.iter())
        .map(|a| (a.parse()).unwrap_or_else(|_| SocketAddr::new(a.parse().unwrap(), 0)))
        .collect()
}

fn answer(list: &[&str], ttl: Duration) -> Outcome {
    Outcome::Addresses(addresses(list), Instant::now() + ttl)
}

fn backends(config: &Config) -> Vec<(String, u32)> {
    (config.pools[0].backends.iter())
        .map(|b| (b.address.to_string(), b.weight))
        .collect()
}

#[test]
fn queries_are_distinct_and_lower_case() {
    let srv = Query {
        name: "_http._tcp.svc.example".into(),
        srv: true,
    };
    assert_eq!(
        Discovery::queries(&config()),
        [srv, q("other.example"), q("svc.example")]
    );
}

#[test]
fn each_address_is_a_backend_with_the_entry_weight_after_the_static_ones() {
    let config = config();
    let mut discovery = Discovery::default();
    assert_eq!(
        backends(&discovery.resolve(&config)),
        [("127.0.0.1:9000".to_owned(), 1)]
    );
    let long = Duration::from_secs(60);
    let srv = Query::of(&config.pools[0].names[2]);
    let results = discovery.record(vec![
        (q("svc.example"), answer(&["127.0.0.1", "10.0.0.2"], long)),
        (q("other.example"), answer(&["10.0.0.9"], long)),
        (srv, answer(&["10.0.0.5:8080", "10.0.0.5:8081"], long)),
    ]);
    assert!(results.iter().all(|(_, r)| *r == Resolution::Changed));
    let resolved = discovery.resolve(&config);
    // 127.0.0.1:9000 is given twice (static and by name): kept once. One
    // answer serves both ports of svc.example; SRV ports are the records'.
    assert_eq!(
        backends(&resolved),
        [
            ("127.0.0.1:9000".to_owned(), 1),
            ("10.0.0.2:9000".to_owned(), 3),
            ("10.0.0.9:81".to_owned(), 1),
            ("10.0.0.5:8080".to_owned(), 2),
            ("10.0.0.5:8081".to_owned(), 2),
            ("127.0.0.1:9001".to_owned(), 1),
            ("10.0.0.2:9001".to_owned(), 1),
        ]
    );
    let names = discovery.resolved_names(&config);
    assert_eq!(names[0].name, "Svc.Example:9000");
    assert_eq!(names[0].addresses.len(), 2);
    assert_eq!(
        (names[2].name.as_str(), names[2].srv),
        ("_http._tcp.Svc.Example", true)
    );
    assert_eq!(
        names[2].addresses,
        addresses(&["10.0.0.5:8080", "10.0.0.5:8081"])
    );
}

#[test]
fn a_failed_or_empty_answer_keeps_the_last_good_set() {
    let config = config();
    let mut discovery = Discovery::default();
    let long = Duration::from_secs(60);
    discovery.record(vec![(q("svc.example"), answer(&["10.0.0.1"], long))]);
    let before = discovery.resolve(&config);
    let results = discovery.record(vec![
        (q("svc.example"), Outcome::Failed("timeout".into())),
        (q("other.example"), Outcome::Empty),
    ]);
    assert_eq!(results[0].1, Resolution::Failed);
    assert_eq!(results[1].1, Resolution::Empty);
    assert_eq!(discovery.resolve(&config), before);
    let same = discovery.record(vec![(q("svc.example"), answer(&["10.0.0.1"], long))]);
    assert_eq!(same[0].1, Resolution::Ok);
    let moved = discovery.record(vec![(q("svc.example"), answer(&["10.0.0.3"], long))]);
    assert_eq!(moved[0].1, Resolution::Changed);
}

#[test]
fn the_next_round_comes_at_the_refresh_or_the_shortest_ttl() {
    let config = config();
    let mut discovery = Discovery::default();
    let now = Instant::now();
    assert_eq!(
        discovery.next_round(&config, now),
        now + Duration::from_secs(10)
    );
    discovery.record(vec![(
        q("svc.example"),
        Outcome::Addresses(addresses(&["10.0.0.1"]), now + Duration::from_secs(3)),
    )]);
    assert_eq!(
        discovery.next_round(&config, now),
        now + Duration::from_secs(3)
    );
    // A TTL of 0 does not make the rounds back to back.
    discovery.record(vec![(
        q("other.example"),
        Outcome::Addresses(addresses(&["10.0.0.1"]), now),
    )]);
    assert_eq!(
        discovery.next_round(&config, now),
        now + super::MIN_TTL_REFRESH
    );
}
