//! `wasmroute policy test|build|new` through the real binary with real
//! modules: the bundled policies written to a temp folder, and a crate
//! made by `policy new` built for wasm32-wasip2 by a nested cargo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What a run of the binary said.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run_with(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmroute"));
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run wasmroute");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, &[])
}

/// A temp folder with the bundled `policies` as `<name>.wasm`.
fn modules(policies: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in policies {
        let bytes = wasmroute::bundled::get(name).expect("bundled policy");
        std::fs::write(dir.path().join(format!("{name}.wasm")), bytes).unwrap();
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `policy test MODULE --cases CASES [extra...]`.
fn policy_test(module: &Path, cases: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "policy",
        "test",
        module.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The case lines of a run (one per case, before the summary).
fn case_lines(run: &Run) -> Vec<&str> {
    (run.stdout.lines())
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL "))
        .collect()
}

const CONTENT_ROUTER_CASES: &str = r#"
policy_config = { header = "x-route-pool" }

[[pools]]
name = "web"
backends = [ { address = "10.0.0.1:80", healthy = false }, { address = "10.0.0.2:80", active = 5 } ]

[[pools]]
name = "video"
backends = [ { address = "10.0.1.1:80", active = 2, ewma_us = 900 }, { address = "10.0.1.2:80", load = { cpu = 0.5, memory = 0.2 } } ]

[[cases]]
name = "video by path"
request = { method = "GET", path = "/video/1", client_ip = "192.0.2.7" }
expect = { pool = "video", backend = "10.0.1.2:80" }

[[cases]]
name = "the header names the pool"
request = { path = "/", headers = { "x-route-pool" = "video", accept = ["a/b", "c/d"] }, cookies = { session = "1" } }
expect = { pool = "video" }

[[cases]]
name = "an unhealthy backend is skipped even when idle"
request = { path = "/index.html" }
expect = { pool = "web", backend = "10.0.0.2:80" }

[[cases]]
name = "every video backend down"
request = { path = "/video/2" }
pools = [
    { name = "web", backends = [ { address = "10.0.0.2:80" } ] },
    { name = "video", backends = [ { address = "10.0.1.1:80", healthy = false }, { address = "10.0.1.2:80", healthy = false } ] },
]
expect = { status = 503, headers = { "content-type" = "text/plain; charset=utf-8" }, body = "no healthy backend\n" }
"#;

const ROUND_ROBIN_CASES: &str = r#"
[[pools]]
name = "web"
backends = [ { address = "10.0.0.1:80" }, { address = "10.0.0.2:80", healthy = false }, { address = "10.0.0.3:80", weight = 3, error_rate = 0.25 } ]

[[cases]]
name = "first turn"
request = { path = "/" }
expect = { backend = "10.0.0.1:80" }

[[cases]]
name = "a retry avoids the tried backend and skips the unhealthy one"
request = { path = "/", tried = [ { pool = "web", backend = "10.0.0.1:80" } ] }
expect = { pool = "web", backend = "10.0.0.3:80" }

[[cases]]
name = "every backend down"
request = { method = "POST", path = "/form?x=1" }
pools = [ { name = "web", backends = [ { address = "10.0.0.1:80", healthy = false } ] } ]
expect = { status = 503 }

[[cases]]
name = "a connection takes the first turn"
connection = { client_ip = "10.9.9.9", client_port = 5000, local_port = 6379 }
expect = { backend = "10.0.0.1:80" }

[[cases]]
name = "a connection with every backend down is rejected"
connection = { client_ip = "10.9.9.9", server_name = "db.example", alpn = ["h2"] }
pools = [ { name = "web", backends = [ { address = "10.0.0.1:80", healthy = false } ] } ]
expect = { reject = true }
"#;

#[test]
fn passing_cases_exit_0_with_one_ok_line_each() {
    let dir = modules(&["content-router", "round-robin"]);
    for (policy, cases, count) in [
        ("content-router", CONTENT_ROUTER_CASES, 4),
        ("round-robin", ROUND_ROBIN_CASES, 5),
    ] {
        let cases = write(dir.path(), &format!("{policy}.toml"), cases);
        let module = dir.path().join(format!("{policy}.wasm"));
        let run = policy_test(&module, &cases, &[]);
        assert_eq!(run.code, Some(0), "{policy}: {run:?}");
        let lines = case_lines(&run);
        assert_eq!(lines.len(), count, "{policy}: {run:?}");
        assert!(
            lines.iter().all(|l| l.starts_with("ok ")),
            "{policy}: {run:?}"
        );
    }
}

#[test]
fn case_lines_show_the_request_and_the_decision() {
    let dir = modules(&["round-robin"]);
    let cases = write(dir.path(), "cases.toml", ROUND_ROBIN_CASES);
    let run = policy_test(&dir.path().join("round-robin.wasm"), &cases, &[]);
    let lines = case_lines(&run);
    assert_eq!(
        lines[1],
        "ok   a retry avoids the tried backend and skips the unhealthy one: GET / (retry after \
         web 10.0.0.1:80) -> pool web, backend 10.0.0.3:80 (expect pool web, backend 10.0.0.3:80)",
        "{run:?}"
    );
    assert!(lines[2].contains("POST /form?x=1 -> status 503"), "{run:?}");
    assert!(lines[4].contains("-> reject (expect reject)"), "{run:?}");
}

#[test]
fn a_failing_case_exits_1_showing_expected_and_got() {
    let dir = modules(&["content-router"]);
    let wrong = CONTENT_ROUTER_CASES.replace(
        "expect = { pool = \"web\", backend = \"10.0.0.2:80\" }",
        "expect = { pool = \"video\" }",
    );
    let cases = write(dir.path(), "cases.toml", &wrong);
    let run = policy_test(&dir.path().join("content-router.wasm"), &cases, &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines = case_lines(&run);
    assert_eq!(lines.len(), 4, "{run:?}");
    assert!(lines[2].starts_with("FAIL an unhealthy backend"), "{run:?}");
    assert!(
        lines[2].contains("-> pool web, backend 10.0.0.2:80 (expect pool video)"),
        "{run:?}"
    );
    let difference = "expected pool video, got pool web, backend 10.0.0.2:80";
    assert!(run.stdout.contains(difference), "{run:?}");
    for i in [0, 1, 3] {
        assert!(
            lines[i].starts_with("ok "),
            "case {i} still passes: {run:?}"
        );
    }
    assert!(run.stdout.contains("4 cases: 3 ok, 1 FAIL"), "{run:?}");
}

/// Asserts exit 2 and a `cases.toml: KEY: ...` line on stderr.
fn assert_invalid(label: &str, module: &Path, cases_text: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(dir.path(), "cases.toml", cases_text);
    let run = policy_test(module, &cases, &[]);
    assert_eq!(run.code, Some(2), "{label}: {run:?}");
    let prefix = format!("{}: {key}: ", cases.display());
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&prefix)),
        "{label}: no `{prefix}` line: {run:?}"
    );
    assert!(
        case_lines(&run).is_empty(),
        "{label}: no case is run: {run:?}"
    );
}

#[test]
fn invalid_cases_files_exit_2_naming_the_case_and_key() {
    let dir = modules(&["content-router", "round-robin"]);
    let router = dir.path().join("content-router.wasm");
    let base = CONTENT_ROUTER_CASES;
    let unknown_pool = base.replace(
        "expect = { pool = \"video\" }",
        "expect = { pool = \"audio\" }",
    );
    assert_invalid(
        "unknown pool",
        &router,
        &unknown_pool,
        "cases[1].expect.pool",
    );
    let bad_method = base.replace("method = \"GET\"", "method = \"G T\"");
    assert_invalid(
        "bad method",
        &router,
        &bad_method,
        "cases[0].request.method",
    );
    let bad_ip = base.replace("\"192.0.2.7\"", "\"192.0.2\"");
    assert_invalid(
        "bad client ip",
        &router,
        &bad_ip,
        "cases[0].request.client_ip",
    );
    let bad_expect = base.replace(
        "expect = { pool = \"video\" }",
        "expect = { pol = \"video\" }",
    );
    assert_invalid(
        "unknown expect key",
        &router,
        &bad_expect,
        "cases[1].expect.pol",
    );
    let no_expectation = base.replace("expect = { pool = \"video\" }", "expect = { }");
    assert_invalid(
        "no expectation",
        &router,
        &no_expectation,
        "cases[1].expect",
    );
    let top_level = format!("colour = \"blue\"\n{base}");
    assert_invalid("unknown top-level key", &router, &top_level, "colour");
    let tried = ROUND_ROBIN_CASES.replace(
        "backend = \"10.0.0.1:80\" } ]",
        "backend = \"10.0.0.9:80\" } ]",
    );
    let round_robin = dir.path().join("round-robin.wasm");
    assert_invalid(
        "unknown tried backend",
        &round_robin,
        &tried,
        "cases[1].request.tried[0].backend",
    );
    let config = base.replace("{ header = \"x-route-pool\" }", "{ header = \"\" }");
    assert_invalid("init refuses the config", &router, &config, "policy_config");
}

#[test]
fn a_module_that_is_not_wasm_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "broken.wasm", "not a component");
    let cases = write(dir.path(), "cases.toml", ROUND_ROBIN_CASES);
    let run = policy_test(&module, &cases, &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let prefix = format!(
        "{}: (module): not a valid policy component",
        module.display()
    );
    assert!(run.stderr.starts_with(&prefix), "{run:?}");
}

#[test]
fn a_connection_case_for_an_http_only_policy_exits_2() {
    let dir = modules(&["content-router"]);
    let cases = r#"
[[pools]]
name = "web"
backends = [ { address = "10.0.0.1:80" } ]
[[cases]]
name = "a request"
request = { path = "/" }
expect = { pool = "web" }
[[cases]]
name = "a connection"
connection = { client_ip = "10.9.9.9" }
expect = { pool = "web" }
"#;
    assert_invalid(
        "connection case",
        &dir.path().join("content-router.wasm"),
        cases,
        "cases[1].connection",
    );
}

const CONFIG: &str = r#"
[policies]
dir = "policies"
decision_timeout = "50ms"

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
policy = "round-robin"
pools = ["web"]

[[listeners]]
name = "media"
address = "127.0.0.1:0"
policy = "content-router"
pools = ["web", "video"]
[listeners.policy_config]
video_prefix = "/media"

[[pools]]
name = "web"
backends = [ { address = "10.0.0.1:80" } ]

[[pools]]
name = "video"
backends = [ { address = "10.0.1.1:80" }, { address = "10.0.1.2:80", weight = 2 } ]
"#;

#[test]
fn config_and_listener_give_pools_and_policy_config() {
    let dir = modules(&["content-router"]);
    let config = write(dir.path(), "wasmroute.toml", CONFIG);
    let cases = write(
        dir.path(),
        "cases.toml",
        r#"
[[cases]]
name = "the listener's prefix"
request = { path = "/media/1" }
expect = { pool = "video" }
[[cases]]
name = "the default prefix is not configured"
request = { path = "/video/1" }
expect = { pool = "web" }
"#,
    );
    let module = dir.path().join("content-router.wasm");
    let config = config.to_str().unwrap();
    let run = policy_test(
        &module,
        &cases,
        &["--config", config, "--listener", "media"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(case_lines(&run).len(), 2, "{run:?}");
    let run = policy_test(&module, &cases, &["--config", config, "--listener", "nope"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("no listener `nope` (listeners: edge, media)"),
        "{run:?}"
    );
    let run = policy_test(&module, &cases, &["--config", config]);
    assert_eq!(run.code, Some(2), "several listeners, none chosen: {run:?}");
    let run = policy_test(&module, &cases, &[]);
    assert_eq!(run.code, Some(2), "no pools without --config: {run:?}");
    assert!(run.stderr.contains("cases[0].pools: no pools"), "{run:?}");
}

/// The outer target folder (`<target>/debug/wasmroute` is the binary).
fn target_root() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_wasmroute"));
    binary.ancestors().nth(2).unwrap().to_path_buf()
}

#[test]
fn policy_new_tests_builds_and_its_cases_pass() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    let created = run(&["policy", "new", "x", "--path", parent]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let crate_dir = dir.path().join("x");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        ".gitignore",
        "src/lib.rs",
        "cases.toml",
    ] {
        assert!(
            crate_dir.join(file).is_file(),
            "{file} missing: {created:?}"
        );
    }
    // Its own target folder, kept between runs so that reruns are warm.
    let target = target_root().join("policy-new-test");
    // Its native tests (the SDK's test host) pass as generated.
    let native = guest_build::cargo_command()
        .args(["test", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let native_out = String::from_utf8_lossy(&native.stdout);
    assert!(
        native.status.success() && native_out.contains("test result: ok. 5 passed"),
        "cargo test in the new crate: {native_out}\n{}",
        String::from_utf8_lossy(&native.stderr)
    );
    let built = run_with(
        &["policy", "build", crate_dir.to_str().unwrap()],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert_eq!(built.code, Some(0), "{built:?}");
    let module = PathBuf::from(built.stdout.trim());
    assert_eq!(
        module,
        target.join("wasm32-wasip2/release/x.wasm"),
        "{built:?}"
    );
    let tested = policy_test(&module, &crate_dir.join("cases.toml"), &[]);
    assert_eq!(tested.code, Some(0), "{tested:?}");
    assert_eq!(case_lines(&tested).len(), 5, "{tested:?}");
    let again = run(&["policy", "new", "x", "--path", parent]);
    assert_eq!(
        again.code,
        Some(1),
        "an existing folder is refused: {again:?}"
    );
    assert!(again.stderr.contains("already exists"), "{again:?}");
}

#[test]
fn policy_new_refuses_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["Bad Name", "9x", "fn"] {
        let run = run(&[
            "policy",
            "new",
            name,
            "--path",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(1), "{name}: {run:?}");
        assert!(
            run.stderr.contains("is not a policy crate name"),
            "{name}: {run:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn policy_build_refuses_what_is_not_a_policy_crate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = run(&["policy", "build", dir.path().to_str().unwrap()]);
    assert_eq!(empty.code, Some(1), "{empty:?}");
    assert!(empty.stderr.contains("no policy crate here"), "{empty:?}");
    let manifest =
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n";
    write(dir.path(), "Cargo.toml", manifest);
    let plain = run(&["policy", "build", dir.path().to_str().unwrap()]);
    assert_eq!(plain.code, Some(1), "{plain:?}");
    assert!(plain.stderr.contains("not a cdylib"), "{plain:?}");
}

#[test]
fn a_failed_policy_build_shows_cargo_s_output() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
                    [workspace]\n[lib]\ncrate-type = [\"cdylib\"]\n";
    write(dir.path(), "Cargo.toml", manifest);
    let toolchain = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml");
    std::fs::copy(toolchain, dir.path().join("rust-toolchain.toml")).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    write(
        &dir.path().join("src"),
        "lib.rs",
        "pub fn broken() -> u32 { \"not a number\" }\n",
    );
    let target = target_root().join("policy-build-test");
    let run = run_with(
        &["policy", "build", dir.path().to_str().unwrap()],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("mismatched types"),
        "cargo's diagnostics: {run:?}"
    );
    assert!(run.stderr.contains("cargo build failed"), "{run:?}");
}
