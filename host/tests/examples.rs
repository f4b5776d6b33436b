//! Every config in `examples/` and its folders (`examples/three-tier/`,
//! `examples/data-tier/`) passes `wasmroute check`, as its header says to
//! run it: with the shipped policies in the `policies.d/` it names and,
//! for TLS listeners, the certificate files it names (made here with
//! rcgen, as the header's `openssl` lines would).

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Copies `example` into a fresh folder laid out like `examples/` (a
/// config of a sub-folder in the same sub-folder, so `../policies.d`
/// stays inside): the config, its policies folder with every shipped
/// policy, and the certificates its listeners name.
fn lay_out(example: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example).unwrap();
    let relative = example.strip_prefix(examples_dir()).unwrap();
    let config = dir.path().join(relative);
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, &text).unwrap();
    let base = config.parent().unwrap().to_path_buf();
    let document: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let policies = document
        .get("policies")
        .and_then(|p| p.get("dir"))
        .and_then(toml::Value::as_str)
        .expect("[policies] dir");
    let policies = base.join(policies);
    std::fs::create_dir_all(&policies).unwrap();
    assert!(
        !wasmroute::bundled::POLICIES.is_empty(),
        "built with bundled policies"
    );
    for (name, bytes) in wasmroute::bundled::POLICIES {
        std::fs::write(policies.join(format!("{name}.wasm")), bytes).unwrap();
    }
    for (cert, key) in certificate_files(&document) {
        let pair = rcgen::generate_simple_self_signed(vec!["example.test".to_owned()]).unwrap();
        for (file, pem) in [
            (cert, pair.cert.pem()),
            (key, pair.signing_key.serialize_pem()),
        ] {
            let path = base.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, pem).unwrap();
        }
    }
    (dir, config)
}

/// The `cert` and `key` of every `[[listeners.certificates]]`.
fn certificate_files(document: &toml::Table) -> Vec<(String, String)> {
    let listeners = document.get("listeners").and_then(toml::Value::as_array);
    let certificates = listeners.into_iter().flatten().flat_map(|listener| {
        let list = listener.get("certificates").and_then(toml::Value::as_array);
        list.into_iter().flatten()
    });
    certificates
        .map(|c| {
            let file = |key: &str| c.get(key).and_then(toml::Value::as_str).unwrap().to_owned();
            (file("cert"), file("key"))
        })
        .collect()
}

#[test]
fn every_example_config_passes_check() {
    let mut examples = configs_in(&examples_dir());
    for folder in ["three-tier", "data-tier"] {
        let found = configs_in(&examples_dir().join(folder));
        assert!(!found.is_empty(), "no configs in examples/{folder}");
        examples.extend(found);
    }
    assert!(examples.len() >= 10, "examples: {examples:?}");
    for example in &examples {
        let header = std::fs::read_to_string(example).unwrap();
        assert!(
            header
                .lines()
                .take(20)
                .any(|l| l.contains("wasmroute serve --config examples/")),
            "{}: its header names the command that runs it",
            example.display()
        );
        let (_dir, config) = lay_out(example);
        let out = Command::new(env!("CARGO_BIN_EXE_wasmroute"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: check failed:\n{}",
            example.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `*.toml` files directly in `folder`, sorted.
fn configs_in(folder: &Path) -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    configs
}

/// The systemd unit reloads by SIGHUP, stops by SIGTERM and gives the
/// drain more time than the default `drain_timeout` (30s).
#[test]
fn the_systemd_unit_matches_the_signals() {
    let unit = std::fs::read_to_string(examples_dir().join("systemd/wasmroute.service")).unwrap();
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
    assert!(unit.contains("KillSignal=SIGTERM"), "{unit}");
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .expect("TimeoutStopSec=Ns");
    assert!(
        stop > 30,
        "TimeoutStopSec={stop}s is not above the 30s drain"
    );
}
