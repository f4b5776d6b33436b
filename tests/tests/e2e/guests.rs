//! Misbehaving test guests (built by `build.rs`): a decision that loops, one
//! that traps, one that returns an invalid decision, an `init` that fails,
//! one probing what of WASI a policy gets, and one echoing what it saw of
//! the request (and, in `compat.rs`, a 0.2 module). Every guest in
//! `for_each_test_policy!` must have a test here, or this file does not
//! compile.

use http::StatusCode;
use wasmroute::ServerEvent;
use wasmroute_e2e::{Backend, Client, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, STEP};

/// Requests sent to each listener: the failing one plus five more, to show
/// the worker keeps serving.
const REQUESTS: usize = 6;

/// A listener running a failing policy with its own pool, so that
/// `on_error = "reject"` can be checked to reach no backend.
struct Case {
    listener: &'static str,
    on_error: &'static str,
    mode: Option<&'static str>,
}

const BOTH: &[Case] = &[
    Case {
        listener: "rejecting",
        on_error: "reject",
        mode: None,
    },
    Case {
        listener: "falling-back",
        on_error: "fallback",
        mode: None,
    },
];

/// Starts `policy` (bytes) on one listener per case, each with a pool of
/// one backend named after the listener, sends [`REQUESTS`] requests to
/// each, and checks the `on_error` behaviour, the backend counts and a
/// `DecisionFailed` event per listener.
async fn check_failing_policy(policy: &'static str, bytes: &[u8], cases: &[Case]) {
    let mut backends = Vec::new();
    let mut config = ConfigBuilder::new().decision_timeout("50ms");
    for case in cases {
        let backend = Backend::start(&format!("{}-1", case.listener))
            .await
            .unwrap();
        let mut listener =
            ListenerSpec::new(case.listener, policy, &[case.listener]).on_error(case.on_error);
        if let Some(mode) = case.mode {
            listener = listener.policy_config("mode", mode);
        }
        config = config
            .listener(listener)
            .pool(PoolSpec::new(case.listener, &[&backend]));
        backends.push(backend);
    }
    let mut fx = ProxyFixture::start(&config, &[(policy, bytes)])
        .await
        .unwrap();
    let client = Client::http1();
    for (case, backend) in cases.iter().zip(&backends) {
        let what = format!(
            "{policy} on {} (on_error = {})",
            case.listener, case.on_error
        );
        for i in 0..REQUESTS {
            let reply = client
                .get(&fx.url(case.listener, &format!("/r/{i}")))
                .await
                .unwrap_or_else(|e| panic!("{what}: request {i} got no response: {e:#}"));
            match case.on_error {
                "reject" => {
                    assert_eq!(
                        reply.status,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "{what} #{i}: {}",
                        reply.text()
                    );
                    assert!(
                        reply.body.len() <= 512,
                        "{what}: a short body, got {} bytes",
                        reply.body.len()
                    );
                }
                _ => {
                    assert_eq!(
                        reply.status,
                        StatusCode::OK,
                        "{what} #{i}: {}",
                        reply.text()
                    );
                    assert_eq!(
                        reply.backend(),
                        Some(backend.name()),
                        "{what}: fallback to pool 0"
                    );
                }
            }
        }
        let expected = if case.on_error == "reject" {
            0
        } else {
            REQUESTS as u64
        };
        assert_eq!(
            backend.served(),
            expected,
            "{what}: requests that reached the backend"
        );
        let listener = case.listener;
        fx.await_event(
            |e| matches!(e, ServerEvent::DecisionFailed { listener: l, policy: p, .. } if l == listener && p == policy),
            STEP,
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: no DecisionFailed event: {e:#}"));
    }
    fx.shutdown().await.unwrap();
}

/// A listener running `bad-decision` in `mode`.
fn case(listener: &'static str, on_error: &'static str, mode: &'static str) -> Case {
    Case {
        listener,
        on_error,
        mode: Some(mode),
    }
}

mod failing_guests {
    use super::*;
    use wasmroute_e2e::guests;
    use wasmroute_e2e::{FixtureDir, bundled};

    // The `tcp` listener tests of these guests.
    use crate::tcp::tcp_least_active;

    macro_rules! assert_test_exists {
        ($name:ident) => {
            #[allow(unused_imports)]
            use self::$name as _;
        };
    }
    wasmroute_e2e::for_each_test_policy!(assert_test_exists);
    /// Tested in `compat.rs`, with the interface versions.
    #[allow(unused_imports)]
    use crate::compat::v02_first_healthy;

    /// The message the `init-fails` guest returns from `init`.
    const INIT_MESSAGE: &str = "this policy always refuses to start";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn looping() {
        check_failing_policy("looping", guests::LOOPING, BOTH).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trapping() {
        check_failing_policy("trapping", guests::TRAPPING, BOTH).await;
    }

    /// Printing or reading the environment traps (WASI stdio and
    /// environment are not provided); the worker keeps serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wasi_probe() {
        let cases = [
            case("print-rejecting", "reject", "print"),
            case("print-falling-back", "fallback", "print"),
            case("env-rejecting", "reject", "env"),
            case("env-falling-back", "fallback", "env"),
        ];
        check_failing_policy("wasi-probe", guests::WASI_PROBE, &cases).await;
    }

    /// The request accessors over plain HTTP (TLS and SNI: `tls.rs`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_request() {
        let backend = Backend::start("web-1").await.unwrap();
        let config = ConfigBuilder::new()
            .listener(ListenerSpec::new("edge", "echo-request", &["web"]))
            .pool(PoolSpec::new("web", &[&backend]));
        let fx = ProxyFixture::start(&config, &[("echo-request", guests::ECHO_REQUEST)])
            .await
            .unwrap();
        let reply = Client::http1()
            .get(&fx.url("edge", "/seen/by?policy=1"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.text(),
            "tls=false\nsni=-\nmethod=GET\npath=/seen/by\nclient=127.0.0.1\nattempt=0\n"
        );
        assert_eq!(backend.served(), 0, "answered by the policy itself");
        fx.shutdown().await.unwrap();
    }

    /// The host-call probe of the `host_calls` bench makes every call it
    /// names, as often as configured, on the real host path: one
    /// listener per call kind, each answering with its call and count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_calls() {
        let backend = Backend::start("web-1").await.unwrap();
        let mut config = ConfigBuilder::new().pool(PoolSpec::new("web", &[&backend]));
        for kind in wasmroute_e2e::HOST_CALL_KINDS {
            config = config.listener(
                ListenerSpec::new(kind, "host-calls", &["web"])
                    .on_error("reject")
                    .policy_config("call", kind)
                    .policy_config_toml("times", "3"),
            );
        }
        let fx = ProxyFixture::start(&config, &[("host-calls", guests::HOST_CALLS)])
            .await
            .unwrap();
        for kind in wasmroute_e2e::HOST_CALL_KINDS {
            let reply = Client::http1().get(&fx.url(kind, "/")).await.unwrap();
            let header = |name: &str| reply.headers.get(name).map(|v| v.to_str().unwrap());
            assert_eq!(
                (reply.status, header("x-host-call"), header("x-host-calls")),
                (StatusCode::OK, Some(*kind), Some("3")),
                "{kind}: {}",
                reply.text()
            );
        }
        assert_eq!(backend.served(), 0, "answered by the policy itself");
        fx.shutdown().await.unwrap();
    }

    /// Clocks and std's randomly seeded `HashMap` work in a policy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wasi_probe_std() {
        let backend = Backend::start("web-1").await.unwrap();
        let config = ConfigBuilder::new()
            .listener(ListenerSpec::new("edge", "wasi-probe", &["web"]).on_error("reject"))
            .pool(PoolSpec::new("web", &[&backend]));
        let fx = ProxyFixture::start(&config, &[("wasi-probe", guests::WASI_PROBE)])
            .await
            .unwrap();
        for i in 0..5 {
            let reply = Client::http1()
                .get(&fx.url("edge", &format!("/p/{i}")))
                .await
                .unwrap();
            assert_eq!(
                (reply.status, reply.backend()),
                (StatusCode::OK, Some("web-1")),
                "{}",
                reply.text()
            );
        }
        assert_eq!(backend.served(), 5);
        fx.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_decision() {
        let cases = [
            case("pool-rejecting", "reject", "pool"),
            case("pool-falling-back", "fallback", "pool"),
            case("backend-rejecting", "reject", "backend"),
            case("backend-falling-back", "fallback", "backend"),
            case("status-rejecting", "reject", "status"),
            case("status-falling-back", "fallback", "status"),
        ];
        check_failing_policy("bad-decision", guests::BAD_DECISION, &cases).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_fails() {
        let backend = Backend::start("web-1").await.unwrap();
        let config = |policy: &str| {
            ConfigBuilder::new()
                .listener(ListenerSpec::new("edge", policy, &["web"]))
                .pool(PoolSpec::new("web", &[&backend]))
                .render()
        };

        // At startup there is no previous version: the start is refused.
        let dir = FixtureDir::new().unwrap();
        dir.write_policy("init-fails", guests::INIT_FAILS).unwrap();
        dir.write_config(&config("init-fails")).unwrap();
        let err = match dir.start().await {
            Ok(_) => panic!("the server started with a policy whose init fails"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(INIT_MESSAGE),
            "start error lacks the init message: {err}"
        );

        // On reload the new version is refused and the old one keeps serving.
        let mut fx =
            ProxyFixture::start_with_text(&config("active"), &[("active", bundled("round-robin"))])
                .await
                .unwrap();
        fx.clear_events();
        fx.write_policy("active", guests::INIT_FAILS).unwrap();
        let event = fx
            .await_event(
                |e| {
                    matches!(
                        e,
                        ServerEvent::PolicyRejected { .. } | ServerEvent::PolicyLoaded { .. }
                    )
                },
                STEP,
            )
            .await
            .unwrap();
        match &event {
            ServerEvent::PolicyRejected { file, reason } => {
                assert!(file.ends_with("active.wasm"), "{event:?}");
                assert!(
                    reason.contains(INIT_MESSAGE),
                    "reason lacks the init message: {event:?}"
                );
            }
            other => panic!("expected PolicyRejected, got {other:?}"),
        }
        for _ in 0..5 {
            let reply = Client::http1().get(&fx.url("edge", "/")).await.unwrap();
            assert_eq!(
                (reply.status, reply.backend()),
                (StatusCode::OK, Some("web-1"))
            );
        }
        fx.shutdown().await.unwrap();
    }
}
