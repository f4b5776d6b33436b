//! `protocol = "tcp"` listeners: connections balanced per connection,
//! relayed both ways with half-close, big transfers intact, idle relays
//! closed, failed connects moved on, and a backend that never answers
//! costing its own connections only.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wasmroute_e2e::tcp::{closes, connect_greeted, read_line, read_to_end};
use wasmroute_e2e::{
    ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP, TcpBackend, bundled, eventually,
    guests,
};

/// A proxy with a `tcp` listener `edge` running `policy` over pool `db`
/// of `backends`, with `extra` listener keys and `pool_extra` pool keys.
pub async fn start(
    policy: (&str, &[u8]),
    backends: &[SocketAddr],
    extra: &str,
    pool_extra: &str,
) -> ProxyFixture {
    let mut pool = PoolSpec::new("db", &[]);
    for &address in backends {
        pool = pool.address(address);
    }
    let config = ConfigBuilder::new()
        .admin("")
        .listener(
            ListenerSpec::new("edge", policy.0, &["db"])
                .tcp()
                .extra(extra),
        )
        .pool(pool.extra(pool_extra));
    ProxyFixture::start(&config, &[policy])
        .await
        .expect("the proxy starts")
}

/// The value of the `edge` listener's sample `name` in `/metrics`.
pub async fn edge_metric(fx: &ProxyFixture, name: &str) -> u64 {
    let address = fx.server().admin_addr().expect("an admin endpoint");
    let reply = wasmroute_e2e::Client::http1()
        .get(&format!("http://{address}/metrics"))
        .await
        .unwrap();
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let prefix = format!("{name}{{listener=\"edge\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Waits until the proxy has no open connection on `edge` (the relays
/// ended and dropped their backends' active guards).
pub async fn no_open_relay(fx: &ProxyFixture) {
    let open = || edge_metric(fx, "wasmroute_connections_active");
    assert!(
        wasmroute_e2e::eventually_async(STEP, || async { open().await == 0 }).await,
        "relays still open"
    );
}

/// The shipped round-robin policy.
pub fn round_robin() -> (&'static str, &'static [u8]) {
    ("round-robin", bundled("round-robin"))
}

/// Sends `ping`, expects it echoed: the relay works both ways.
pub async fn ping(stream: &mut TcpStream) {
    stream.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(stream).await.unwrap(), "ping");
}

/// One thread: the shipped round-robin keeps one rotation per thread.
#[tokio::test(flavor = "current_thread")]
async fn connections_take_turns_across_the_backends() {
    let (a, b) = (
        TcpBackend::echo("a").await.unwrap(),
        TcpBackend::echo("b").await.unwrap(),
    );
    let fx = start(round_robin(), &[a.addr(), b.addr()], "", "").await;
    let mut names = Vec::new();
    for _ in 0..4 {
        let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
        ping(&mut stream).await;
        names.push(name);
    }
    assert_ne!(names[0], names[1], "{names:?}");
    assert_eq!(names[0], names[2], "{names:?}");
    assert_eq!(names[1], names[3], "{names:?}");
    assert_eq!((a.accepted(), b.accepted()), (2, 2));
}

/// Open relays count as active requests: while one connection is held
/// on a backend, every new one goes to the other (the test-only policy,
/// which also has a trap mode for `on_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub async fn tcp_least_active() {
    new_connections_avoid_the_held_backend(("tcp-least-active", guests::TCP_LEAST_ACTIVE)).await;
}

/// The same with the shipped `least-connections` policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_counts_open_relays() {
    new_connections_avoid_the_held_backend(("least-connections", bundled("least-connections")))
        .await;
}

async fn new_connections_avoid_the_held_backend(policy: (&'static str, &'static [u8])) {
    let (a, b) = (
        TcpBackend::echo("a").await.unwrap(),
        TcpBackend::echo("b").await.unwrap(),
    );
    let fx = start(policy, &[a.addr(), b.addr()], "", "").await;
    let (mut held, busy) = connect_greeted(fx.addr("edge")).await.unwrap();
    ping(&mut held).await;
    for round in 0..4 {
        let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
        assert_ne!(name, busy, "round {round}: went to the busy backend");
        ping(&mut stream).await;
        stream.shutdown().await.unwrap();
        let rest = read_to_end(&mut stream).await.unwrap();
        assert_eq!(rest, format!("bye {name}\n").as_bytes());
        // The proxy drops the backend's active guard when the relay ends.
        let open = || edge_metric(&fx, "wasmroute_connections_active");
        let only_held = || async { open().await == 1 };
        assert!(wasmroute_e2e::eventually_async(STEP, only_held).await);
    }
    ping(&mut held).await;
    assert_eq!(a.accepted() + b.accepted(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_the_reply_sent_after_its_end() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(round_robin(), &[backend.addr()], "", "").await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    stream.write_all(b"last words").await.unwrap();
    stream.shutdown().await.unwrap();
    let rest = read_to_end(&mut stream).await.unwrap();
    assert_eq!(rest, b"last wordsbye a\n");
    assert!(eventually(STEP, || backend.open() == 0).await);
    no_open_relay(&fx).await;
    assert_eq!(
        edge_metric(&fx, "wasmroute_tcp_received_bytes_total").await,
        10
    );
    assert_eq!(edge_metric(&fx, "wasmroute_tcp_sent_bytes_total").await, 18);
    assert_eq!(edge_metric(&fx, "wasmroute_connections_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_go_through_both_ways_intact() {
    const SIZE: usize = 50 << 20;
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(round_robin(), &[backend.addr()], "", "").await;
    let (stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..SIZE / chunk.len() {
            for byte in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            hash.update(&chunk);
            writer.write_all(&chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        hash.finalize()
    });
    let mut hash = Sha256::new();
    let mut received = 0usize;
    let mut buffer = vec![0u8; 256 * 1024];
    while received < SIZE {
        let n = tokio::time::timeout(STEP, reader.read(&mut buffer))
            .await
            .expect("bytes keep coming")
            .unwrap();
        assert!(n > 0, "ended after {received} bytes");
        let take = n.min(SIZE - received);
        hash.update(&buffer[..take]);
        received += take;
        if take < n {
            assert!(b"bye a\n".starts_with(&buffer[take..n]));
        }
    }
    assert_eq!(hash.finalize(), send.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_is_closed_on_both_sides() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let fx = start(
        round_robin(),
        &[backend.addr()],
        "idle_timeout = \"300ms\"",
        "",
    )
    .await;
    let (mut stream, _) = connect_greeted(fx.addr("edge")).await.unwrap();
    ping(&mut stream).await;
    assert!(closes(&mut stream).await, "the proxy closed the idle relay");
    assert!(
        eventually(STEP, || backend.open() == 0).await,
        "and the backend's side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_moves_to_another_backend() {
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let backend = TcpBackend::echo("up").await.unwrap();
    let fx = start(round_robin(), &[refusing, backend.addr()], "", "").await;
    for _ in 0..4 {
        let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
        assert_eq!(name, "up");
        ping(&mut stream).await;
    }
    assert_eq!(backend.accepted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_attempt_left_the_client_is_closed() {
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let fx = start(round_robin(), &[refusing], "", "retries = 0").await;
    let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
    assert!(closes(&mut stream).await);
}

/// A backend that accepts and never answers holds only the connections
/// sent to it (one thread, for round-robin's one rotation).
#[tokio::test(flavor = "current_thread")]
async fn a_backend_that_never_answers_costs_its_connections_only() {
    let silent = TcpBackend::silent("mute").await.unwrap();
    let echo = TcpBackend::echo("a").await.unwrap();
    let fx = start(round_robin(), &[silent.addr(), echo.addr()], "", "").await;
    let mut stuck = Vec::new();
    for _ in 0..3 {
        stuck.push(TcpStream::connect(fx.addr("edge")).await.unwrap());
        let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
        assert_eq!(name, "a");
        ping(&mut stream).await;
    }
    assert!(eventually(STEP, || silent.open() == 3).await);
    for stream in &mut stuck {
        stream.write_all(b"anyone?").await.unwrap();
    }
    stuck.push(TcpStream::connect(fx.addr("edge")).await.unwrap());
    let (mut stream, name) = connect_greeted(fx.addr("edge")).await.unwrap();
    assert_eq!(name, "a", "the healthy one's turn still works");
    ping(&mut stream).await;
    assert!(eventually(STEP, || silent.open() == 4).await);
}

/// A policy whose connection decisions trap: `on_error = "fallback"`
/// relays through the host's round robin over the first pool, `reject`
/// closes the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_decision_follows_on_error() {
    let backend = TcpBackend::echo("a").await.unwrap();
    let policy = ("tcp-least-active", guests::TCP_LEAST_ACTIVE);
    for (on_error, relayed) in [("fallback", true), ("reject", false)] {
        let extra = format!("on_error = \"{on_error}\"\n[listeners.policy_config]\ntrap = true");
        let fx = start(policy, &[backend.addr()], &extra, "").await;
        let mut stream = TcpStream::connect(fx.addr("edge")).await.unwrap();
        if relayed {
            assert_eq!(read_line(&mut stream).await.unwrap(), "a", "{on_error}");
            ping(&mut stream).await;
        } else {
            assert!(closes(&mut stream).await, "{on_error}");
        }
    }
    assert_eq!(backend.accepted(), 1, "only the fallback reached it");
}
