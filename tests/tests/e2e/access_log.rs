//! The access log over real sockets: JSON lines for known traffic on both
//! codecs (pool, backend, attempts, bytes), a locally answered request
//! (no backend, its error), one that failed on a backend (named, with its
//! error), the combined format, reopening after a move,
//! lines dropped and counted when the writer cannot keep up (a FIFO
//! nobody reads), invalid `[access_log]` keys, and an unwritable path
//! refused at start, by the planning `wasmroute check` runs, and at
//! reload (the old log keeps working).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use http::{Request, StatusCode};
use wasmroute::config::Config;
use wasmroute::policy::PolicyEngine;
use wasmroute::server::{Plan, Reusable};
use wasmroute_e2e::client::full;
use wasmroute_e2e::{
    Backend, Client, ConfigBuilder, Faulty, FixtureDir, ListenerSpec, PoolSpec, ProxyFixture, STEP,
    bundled, eventually, guests,
};

/// Every key of a JSON line, in order.
const KEYS: [&str; 21] = [
    "ts",
    "listener",
    "client",
    "method",
    "host",
    "path",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream_ms",
    "pool",
    "backend",
    "attempts",
    "policy",
    "policy_version",
    "decision_us",
    "tls",
    "sni",
    "error",
];

/// `[access_log]` with `keys`, then a round-robin listener `edge` over
/// pool `web` of `backends` (with an admin endpoint).
fn config_text(backends: &[&Backend], keys: &str) -> String {
    let config = ConfigBuilder::new()
        .admin("")
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", backends));
    format!("[access_log]\n{keys}\n\n{}", config.render())
}

async fn start(backends: &[&Backend], keys: &str) -> ProxyFixture {
    let text = config_text(backends, keys);
    ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts")
}

/// The lines of `path` once it has at least `count` (panics past [`STEP`]).
async fn lines(path: &Path, count: usize) -> Vec<String> {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let reached = eventually(STEP, || read().lines().count() >= count).await;
    assert!(
        reached,
        "{} never had {count} lines:\n{}",
        path.display(),
        read()
    );
    read().lines().map(str::to_owned).collect()
}

fn parse(line: &str) -> serde_json::Map<String, serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn json_lines_for_known_traffic_on_both_codecs() {
    let backends = Backend::start_many("log", 2).await.unwrap();
    let fx = start(&[&backends[0], &backends[1]], "path = \"access.log\"").await;
    let http1 = Client::http1();
    let mut bodies = HashMap::new();
    for i in 0..8 {
        let path = format!("/item?n={i}&q=%22x%22");
        let reply = http1.get(&fx.url("edge", &path)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        bodies.insert(path, reply.body.len());
    }
    let post = Request::post(fx.url("edge", "/upload"))
        .body(full(vec![b'x'; 1000]))
        .unwrap();
    let reply = http1.request(post).await.unwrap();
    bodies.insert("/upload".into(), reply.body.len());
    let reply = Client::http2().get(&fx.url("edge", "/two")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    bodies.insert("/two".into(), reply.body.len());

    let lines = lines(&fx.dir().path().join("access.log"), 10).await;
    assert_eq!(lines.len(), 10, "one line per request:\n{lines:#?}");
    let mut per_backend: HashMap<String, u32> = HashMap::new();
    for line in &lines {
        let entry = parse(line);
        let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        let mut sorted_keys = KEYS.to_vec();
        sorted_keys.sort_unstable();
        let mut found = keys.clone();
        found.sort_unstable();
        assert_eq!(found, sorted_keys, "{line}");
        let path = entry["path"].as_str().unwrap();
        assert_eq!(entry["status"], 200, "{line}");
        assert_eq!(entry["listener"], "edge");
        assert_eq!(entry["pool"], "web");
        assert_eq!(entry["attempts"], 1);
        assert_eq!(entry["policy"], "round-robin");
        assert_eq!(entry["tls"], false);
        assert!(entry["sni"].is_null() && entry["error"].is_null(), "{line}");
        assert!(entry["upstream_ms"].as_f64().unwrap() <= entry["duration_ms"].as_f64().unwrap());
        assert!(entry["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(entry["bytes_out"], bodies[path] as u64, "{line}");
        let (method, protocol, bytes_in) = match path {
            "/upload" => ("POST", "HTTP/1.1", 1000),
            "/two" => ("GET", "HTTP/2", 0),
            _ => ("GET", "HTTP/1.1", 0),
        };
        assert_eq!(
            (entry["method"].as_str(), entry["protocol"].as_str()),
            (Some(method), Some(protocol)),
            "{line}"
        );
        assert_eq!(entry["bytes_in"], bytes_in, "{line}");
        let backend = entry["backend"].as_str().unwrap().to_owned();
        *per_backend.entry(backend).or_default() += 1;
    }
    for backend in &backends {
        assert_eq!(
            per_backend[&backend.addr().to_string()],
            5,
            "{per_backend:?}"
        );
    }
}

#[tokio::test]
async fn a_locally_answered_request_has_no_backend_and_its_error() {
    let backend = Backend::start("unused").await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "failing", &["web"]).on_error("reject"))
        .pool(PoolSpec::new("web", &[&backend]));
    let text = format!("[access_log]\npath = \"access.log\"\n\n{}", config.render());
    let fx = ProxyFixture::start_with_text(&text, &[("failing", guests::TRAPPING)])
        .await
        .unwrap();
    let reply = Client::http1().get(&fx.url("edge", "/x")).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let lines = lines(&fx.dir().path().join("access.log"), 1).await;
    let entry = parse(&lines[0]);
    assert_eq!(entry["status"], 503);
    assert!(
        entry["backend"].is_null() && entry["pool"].is_null(),
        "{}",
        lines[0]
    );
    assert!(entry["upstream_ms"].is_null(), "{}", lines[0]);
    assert_eq!(entry["attempts"], 0);
    assert_eq!(entry["error"], "routing policy failed");
    assert_eq!(entry["bytes_out"], reply.body.len() as u64);
    assert_eq!(backend.served(), 0);
}

#[tokio::test]
async fn a_request_that_failed_on_a_backend_names_it_with_the_error() {
    let faulty = Faulty::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = ConfigBuilder::new()
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(
            PoolSpec::new("web", &[])
                .address(faulty.addr())
                .extra("retries = 0\n"),
        );
    let text = format!("[access_log]\npath = \"access.log\"\n\n{}", config.render());
    let fx = ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .unwrap();
    let reply = Client::http1().get(&fx.url("edge", "/f")).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let lines = lines(&fx.dir().path().join("access.log"), 1).await;
    let entry = parse(&lines[0]);
    assert_eq!(entry["status"], 502);
    assert_eq!(entry["backend"], faulty.addr().to_string().as_str());
    assert_eq!(
        (entry["pool"].as_str(), entry["attempts"].as_u64()),
        (Some("web"), Some(1))
    );
    assert!(
        entry["upstream_ms"].is_null(),
        "no response head: {}",
        lines[0]
    );
    let error = entry["error"].as_str().unwrap();
    assert!(
        error.starts_with("bad gateway: ") && !error.ends_with('\n'),
        "{error}"
    );
}

#[tokio::test]
async fn combined_format_line() {
    let backend = Backend::start("c").await.unwrap();
    let fx = start(&[&backend], "path = \"access.log\"\nformat = \"combined\"").await;
    let headers = [("user-agent", "e2e \"agent\""), ("referer", "http://ref/")];
    let reply = Client::http1()
        .get_with(&fx.url("edge", "/c?x=1"), &headers)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let lines = lines(&fx.dir().path().join("access.log"), 1).await;
    let line = &lines[0];
    let (start, rest) = line.split_once(" - - [").unwrap();
    assert_eq!(start, "127.0.0.1");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{line}");
    let expected = format!(
        "\"GET /c?x=1 HTTP/1.1\" 200 {} \"http://ref/\" \"e2e \\\"agent\\\"\" {} ",
        reply.body.len(),
        backend.addr()
    );
    let seconds = rest
        .strip_prefix(&expected)
        .unwrap_or_else(|| panic!("{line}"));
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| panic!("{line}"));
    assert!(seconds < 10.0, "{line}");
}

#[tokio::test]
async fn reopen_after_a_move_writes_a_new_file() {
    let backend = Backend::start("r").await.unwrap();
    let fx = start(&[&backend], "path = \"access.log\"").await;
    let path = fx.dir().path().join("access.log");
    let client = Client::http1();
    client.get(&fx.url("edge", "/before")).await.unwrap();
    lines(&path, 1).await;
    let moved = fx.dir().path().join("access.log.1");
    std::fs::rename(&path, &moved).unwrap();
    fx.server().reopen_logs();
    client.get(&fx.url("edge", "/after")).await.unwrap();
    let new = lines(&path, 1).await;
    assert_eq!(parse(&new[0])["path"], "/after");
    let old = lines(&moved, 1).await;
    assert_eq!(old.len(), 1);
    assert_eq!(parse(&old[0])["path"], "/before");
}

/// Opens `fifo` for reading on a thread of its own (the open waits for
/// the writer) and keeps it open, unread, until the returned sender is
/// dropped.
fn hold_fifo_unread(fifo: PathBuf) -> std::sync::mpsc::Sender<()> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let reader = std::fs::File::open(&fifo).unwrap();
        let _ = stopped.recv();
        drop(reader);
    });
    stop
}

#[tokio::test]
async fn a_writer_that_cannot_keep_up_drops_and_counts() {
    let backend = Backend::start("d").await.unwrap();
    let dir = FixtureDir::new().unwrap();
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = hold_fifo_unread(fifo);
    let text = config_text(&[&backend], "path = \"access.fifo\"\nqueue = 2");
    dir.write_policy("round-robin", bundled("round-robin"))
        .unwrap();
    dir.write_config(&text).unwrap();
    let fx = dir.start().await.unwrap();
    // Lines of about 6 KB: the pipe (64 KiB) is full after a dozen.
    let long = format!("/{}", "a".repeat(6000));
    let client = Client::http1();
    for _ in 0..100 {
        let reply = client.get(&fx.url("edge", &long)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let address = fx.server().admin_addr().unwrap();
    let scrape = Client::http1()
        .get(&format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text();
    let dropped: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("wasmroute_access_log_dropped_total "))
        .unwrap_or_else(|| panic!("{scrape}"))
        .parse()
        .unwrap();
    // At most the pipe's dozen and the ten the proxy's one thread's ring
    // holds (64 KiB, its least, for `queue = 2`) got through.
    assert!((70.0..=100.0).contains(&dropped), "{dropped} dropped");
    drop(reader);
}

#[tokio::test]
async fn invalid_access_log_keys_are_refused_with_their_key() {
    let backend = Backend::start("i").await.unwrap();
    for (keys, key, reason) in [
        (
            "path = \"a.log\"\nformat = \"xml\"",
            "access_log.format",
            "unknown format `xml`",
        ),
        ("path = \"\"", "access_log.path", "must not be empty"),
        ("format = \"json\"", "access_log.path", "missing"),
        (
            "path = \"-\"\nqueue = 0",
            "access_log.queue",
            "must be 1 to",
        ),
        (
            "path = \"-\"\nrotate = true",
            "access_log.rotate",
            "unknown field",
        ),
    ] {
        let text = config_text(&[&backend], keys);
        let error =
            ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
                .await
                .err()
                .unwrap_or_else(|| panic!("{keys} was accepted"));
        let shown = format!("{error:#}");
        let expected = format!("wasmroute.toml: {key}: ");
        assert!(
            shown.contains(&expected) && shown.contains(reason),
            "{keys}: {shown}"
        );
    }
}

#[tokio::test]
async fn an_unwritable_path_is_refused_at_start_check_and_reload() {
    let backend = Backend::start("u").await.unwrap();
    let unwritable = "path = \"missing/access.log\"";
    let text = config_text(&[&backend], unwritable);
    let policies = [("round-robin", bundled("round-robin"))];
    let error = ProxyFixture::start_with_text(&text, &policies)
        .await
        .err()
        .unwrap();
    let shown = format!("{error:#}");
    assert!(
        shown.contains("wasmroute.toml: access_log.path: cannot open "),
        "{shown}"
    );

    // What `wasmroute check` runs.
    let dir = FixtureDir::new().unwrap();
    dir.write_policy("round-robin", bundled("round-robin"))
        .unwrap();
    dir.write_config(&text).unwrap();
    let config = Config::load(&dir.config_path()).unwrap();
    let engine = PolicyEngine::new().unwrap();
    let errors = Plan::build(config, &engine, Reusable::default())
        .err()
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "access_log.path", "{errors:?}");

    let fx = start(&[&backend], "path = \"access.log\"").await;
    let client = Client::http1();
    let first = fx.dir().path().join("access.log");
    client.get(&fx.url("edge", "/one")).await.unwrap();
    lines(&first, 1).await;
    fx.rewrite_config(&config_text(&[&backend], unwritable))
        .unwrap();
    let refused = fx.reload().await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("access_log.path: cannot open "),
        "{refused:#}"
    );
    client.get(&fx.url("edge", "/two")).await.unwrap();
    assert_eq!(parse(&lines(&first, 2).await[1])["path"], "/two");

    let switched = "path = \"second.log\"\nformat = \"combined\"";
    fx.rewrite_config(&config_text(&[&backend], switched))
        .unwrap();
    fx.reload().await.unwrap();
    client.get(&fx.url("edge", "/three")).await.unwrap();
    let second = lines(&fx.dir().path().join("second.log"), 1).await;
    assert!(
        second[0].contains("\"GET /three HTTP/1.1\" 200 "),
        "{second:?}"
    );
    assert_eq!(
        lines(&first, 2).await.len(),
        2,
        "the first log got no more lines"
    );
}
