//! How answers become backends, and what each lookup counts as.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Discovery, Outcome, Resolution};
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
]
[resolver]
refresh = "10s"
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new("/etc/wasmroute.toml")).expect("valid")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn answer(list: &[&str], ttl: Duration) -> Outcome {
    Outcome::Addresses(ips(list), Instant::now() + ttl)
}

fn backends(config: &Config) -> Vec<(String, u32)> {
    (config.pools[0].backends.iter())
        .map(|b| (b.address.to_string(), b.weight))
        .collect()
}

#[test]
fn names_are_distinct_and_lower_case() {
    assert_eq!(
        Discovery::names(&config()),
        ["other.example", "svc.example"]
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
    let results = discovery.record(vec![
        (
            "svc.example".into(),
            answer(&["127.0.0.1", "10.0.0.2"], long),
        ),
        ("other.example".into(), answer(&["10.0.0.9"], long)),
    ]);
    assert!(results.iter().all(|(_, r)| *r == Resolution::Changed));
    let resolved = discovery.resolve(&config);
    // 127.0.0.1:9000 is given twice (static and by name): kept once.
    assert_eq!(
        backends(&resolved),
        [
            ("127.0.0.1:9000".to_owned(), 1),
            ("10.0.0.2:9000".to_owned(), 3),
            ("10.0.0.9:81".to_owned(), 1),
        ]
    );
    let names = discovery.resolved_names(&config);
    assert_eq!(names[0].name, "Svc.Example:9000");
    assert_eq!(names[0].addresses.len(), 2);
}

#[test]
fn a_failed_or_empty_answer_keeps_the_last_good_set() {
    let config = config();
    let mut discovery = Discovery::default();
    let long = Duration::from_secs(60);
    discovery.record(vec![("svc.example".into(), answer(&["10.0.0.1"], long))]);
    let before = discovery.resolve(&config);
    let results = discovery.record(vec![
        ("svc.example".into(), Outcome::Failed("timeout".into())),
        ("other.example".into(), Outcome::Empty),
    ]);
    assert_eq!(results[0].1, Resolution::Failed);
    assert_eq!(results[1].1, Resolution::Empty);
    assert_eq!(discovery.resolve(&config), before);
    let same = discovery.record(vec![("svc.example".into(), answer(&["10.0.0.1"], long))]);
    assert_eq!(same[0].1, Resolution::Ok);
    let moved = discovery.record(vec![("svc.example".into(), answer(&["10.0.0.3"], long))]);
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
        "svc.example".into(),
        Outcome::Addresses(ips(&["10.0.0.1"]), now + Duration::from_secs(3)),
    )]);
    assert_eq!(
        discovery.next_round(&config, now),
        now + Duration::from_secs(3)
    );
    // A TTL of 0 does not make the rounds back to back.
    discovery.record(vec![(
        "other.example".into(),
        Outcome::Addresses(ips(&["10.0.0.1"]), now),
    )]);
    assert_eq!(
        discovery.next_round(&config, now),
        now + super::MIN_TTL_REFRESH
    );
}
