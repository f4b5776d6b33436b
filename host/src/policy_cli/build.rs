//! `wasmroute policy build [DIR]`: builds the policy crate in `DIR` for
//! `wasm32-wasip2` and returns where the component is.
//!
//! The nested cargo is guest-build's ([`guest_build::cargo_command`]: the
//! host build's flags and wrappers removed), after making sure the
//! toolchain has the target ([`guest_build::ensure_target`], which says so
//! when it adds it). The profile is `release` (a crate made by `policy new`
//! sets it up for small modules), or `policy` when the crate's workspace
//! defines one (this repository's). The artifact's path is read from
//! cargo's own JSON messages, so any target folder works.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use guest_build::TARGET;

/// Builds the crate in `dir`; the `.wasm` file's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest_path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("{}: no policy crate here", manifest_path.display()))?;
    let manifest: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: not a valid manifest", manifest_path.display()))?;
    if !is_cdylib(&manifest) {
        bail!(
            "{}: not a cdylib: a policy crate needs `[lib] crate-type = [\"cdylib\"]`",
            manifest_path.display()
        );
    }
    let manifest_path = manifest_path
        .canonicalize()
        .with_context(|| format!("{}", manifest_path.display()))?;
    let profile = match workspace_has_policy_profile(&manifest_path) {
        true => guest_build::PROFILE,
        false => "release",
    };
    guest_build::ensure_target(&std::env::temp_dir().join("wasmroute-policy-build"))
        .map_err(anyhow::Error::msg)?;
    let output = guest_build::cargo_command()
        .current_dir(dir)
        .args(["build", "--profile", profile, "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed for {} (its output is above)",
            dir.display()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match wasm_artifact(&stdout, &manifest_path) {
        Some(path) => Ok(path),
        None => bail!("cargo built {} but named no .wasm file", dir.display()),
    }
}

fn is_cdylib(manifest: &toml::Table) -> bool {
    let types = manifest
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(toml::Value::as_array);
    types.is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")))
}

/// Whether the workspace `manifest` belongs to (the nearest manifest with
/// a `[workspace]` table, itself included) defines `[profile.policy]`.
fn workspace_has_policy_profile(manifest: &Path) -> bool {
    for dir in manifest.ancestors().skip(1) {
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let Ok(table) = toml::from_str::<toml::Table>(&text) else {
            continue;
        };
        if table.contains_key("workspace") {
            let profiles = table.get("profile").and_then(toml::Value::as_table);
            return profiles.is_some_and(|p| p.contains_key(guest_build::PROFILE));
        }
    }
    false
}

/// The `.wasm` file cargo's `compiler-artifact` message names for the
/// cdylib of `manifest`.
fn wasm_artifact(messages: &str, manifest: &Path) -> Option<PathBuf> {
    let artifacts = messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest));
    let files: Vec<PathBuf> = artifacts
        .filter_map(|m| m["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.into_iter().next_back()
}
