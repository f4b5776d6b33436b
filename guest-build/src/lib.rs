//! Builds wasmroute policy crates of this workspace into `wasm32-wasip2`
//! components.
//!
//! Used by build scripts (the host embeds the shipped policies; the
//! end-to-end tests get the shipped and the test-only policies as generated
//! constants, the pattern of wasmtime's test-programs) and by the
//! `cargo policies` alias, which writes every shipped policy to
//! `target/policies/<name>.wasm`.
//!
//! The nested cargo runs with its own target directory
//! (`<target>/wasm-guests`) so it never waits on the outer build's lock, and
//! with the outer build's flags and wrappers (clippy's among them) removed:
//! those are meant for the host, not for wasm. Guests are built with the
//! workspace's `policy` profile ([`PROFILE`]): no debug info (function
//! names stay, so trap backtraces name functions), fat LTO, one codegen
//! unit, no unwinding; the release profile's line tables would make up most
//! of each file.
//!
//! The set of policies is explicit ([`policy_crates`]): the workspace
//! members below a folder; another crate folder there is warned about and
//! left out.
//!
//! Target choice: `wasm32-wasip2`, where rustc links a component directly
//! (no extra componentize step). std then imports WASI interfaces, which the
//! host links with an empty WASI context (no files, network or
//! environment); `wasm32-unknown-unknown` plus wit-component would avoid
//! those imports at the cost of a wrapping step here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every policy is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// A policy built to a component file.
#[derive(Debug, Clone)]
pub struct BuiltPolicy {
    /// The package name, which is also the policy name (the file stem).
    pub name: String,
    /// Where the component is.
    pub path: PathBuf,
}

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guest-build lives one level below the workspace root")
        .to_path_buf()
}

/// The outer target directory: `CARGO_TARGET_DIR` when set, else
/// `<workspace>/target`.
pub fn target_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The policy crates of one folder (`policies`, `tests/policies`): the
/// workspace members directly below it, and the folders there that hold a
/// `Cargo.toml` without being members (left out of every build).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCrates {
    /// Package names of the members, sorted (the folder name is the
    /// package name).
    pub members: Vec<String>,
    /// Folders holding a crate that is not a workspace member, sorted.
    pub strays: Vec<String>,
}

/// The policy crates below `root/dir`: the bundled set is explicit, it is
/// the `members` of `root/Cargo.toml` of the form `<dir>/<name>`; any other
/// crate folder there (a scratch copy, a crate of its own workspace) is a
/// stray, reported but never built.
pub fn policy_crates(root: &Path, dir: &str) -> PolicyCrates {
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut members: Vec<String> = workspace_members(&text)
        .into_iter()
        .filter_map(|member| member.strip_prefix(&prefix).map(str::to_owned))
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .collect();
    members.sort();
    let folder = root.join(dir);
    let mut strays: Vec<String> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !members.contains(name))
        .collect();
    strays.sort();
    PolicyCrates { members, strays }
}

/// The `members` list of the `[workspace]` table of a `Cargo.toml` (the
/// plain form this repository writes: one quoted path per entry, comments
/// allowed).
fn workspace_members(manifest: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut in_members = false;
    let mut members = Vec::new();
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') && !in_members {
            in_workspace = line == "[workspace]";
            continue;
        }
        let mut rest = line;
        if !in_members {
            match rest.strip_prefix("members") {
                Some(tail) if in_workspace && tail.trim_start().starts_with('=') => {
                    rest = tail.trim_start()[1..].trim_start();
                    rest = rest.strip_prefix('[').unwrap_or(rest);
                    in_members = true;
                }
                _ => continue,
            }
        }
        let (items, closed) = match rest.split_once(']') {
            Some((items, _)) => (items, true),
            None => (rest, false),
        };
        members.extend(
            items
                .split(',')
                .map(|item| item.trim().trim_matches('"'))
                .filter(|item| !item.is_empty())
                .map(str::to_owned),
        );
        if closed {
            in_members = false;
            in_workspace = false;
        }
    }
    members
}

/// The workspace profile policies are built with (`[profile.policy]` in
/// the root `Cargo.toml`): release without debug info, fat LTO, one codegen
/// unit, `panic = "abort"`; artifacts land in `<target>/wasm32-wasip2/policy/`.
pub const PROFILE: &str = "policy";

/// Builds the named packages (the [`PROFILE`] profile) and copies each
/// component to `out_dir/<name>.wasm`.
pub fn build(packages: &[String], out_dir: &Path) -> Result<Vec<BuiltPolicy>, String> {
    if packages.is_empty() {
        // `cargo build` without `-p` would build the default members.
        return Ok(Vec::new());
    }
    let guest_target = target_root().join("wasm-guests");
    ensure_target(&guest_target)?;
    let mut cmd = cargo_command();
    cmd.current_dir(workspace_root())
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .env("CARGO_TARGET_DIR", &guest_target);
    for package in packages {
        cmd.args(["-p", package]);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("running cargo for {TARGET}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building policies {packages:?} for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let artifacts = guest_target.join(TARGET).join(PROFILE);
    packages
        .iter()
        .map(|name| {
            let from = artifacts.join(format!("{}.wasm", name.replace('-', "_")));
            let to = out_dir.join(format!("{name}.wasm"));
            std::fs::copy(&from, &to).map_err(|e| format!("copying {}: {e}", from.display()))?;
            check_component(&to)?;
            Ok(BuiltPolicy {
                name: name.clone(),
                path: to,
            })
        })
        .collect()
}

/// A `cargo` command for a nested guest build: the cargo running this
/// process (`$CARGO`, else `cargo` on the path), with the outer build's
/// flags and wrappers (clippy's among them) removed: those are meant for
/// the host, not for wasm.
pub fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CLIPPY_ARGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Makes sure the toolchain has the [`TARGET`] standard library: a
/// toolchain that rustup installed before `rust-toolchain.toml` listed the
/// target lacks it, and rustup adds listed targets only when it installs a
/// toolchain. When it is missing, `rustup target add` runs once (build
/// scripts that race for it take turns through a lock folder in
/// `guest_target`). Says so on stderr when it adds the target.
pub fn ensure_target(guest_target: &Path) -> Result<(), String> {
    if target_installed() {
        return Ok(());
    }
    std::fs::create_dir_all(guest_target)
        .map_err(|e| format!("{}: {e}", guest_target.display()))?;
    let lock = guest_target.join(".rustup-target-lock");
    let mut waited = 0;
    while std::fs::create_dir(&lock).is_err() {
        // Another build script is adding it (bounded: 10 minutes).
        std::thread::sleep(std::time::Duration::from_millis(250));
        waited += 1;
        if waited > 2400 {
            let _ = std::fs::remove_dir(&lock);
        }
    }
    let result = match target_installed() {
        true => Ok(()),
        false => add_target(),
    };
    let _ = std::fs::remove_dir(&lock);
    result
}

/// Whether the sysroot of the compiler cargo uses holds the target.
fn target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

fn add_target() -> Result<(), String> {
    eprintln!("the toolchain lacks {TARGET}: running `rustup target add {TARGET}`");
    let output = Command::new("rustup")
        .args(["target", "add", TARGET])
        .output()
        .map_err(|e| format!("the toolchain lacks {TARGET} and rustup could not run: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "the toolchain lacks {TARGET} and `rustup target add {TARGET}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// Fails unless the file is a WebAssembly component (not a core module).
fn check_component(path: &Path) -> Result<(), String> {
    // `\0asm`, then the component-model version and layer.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.starts_with(&COMPONENT_HEADER) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a WebAssembly component (built for {TARGET}?)",
            path.display()
        ))
    }
}

/// For build scripts: asks cargo to rerun the script when the policy
/// sources, the SDK or the interface change.
pub fn rerun_if_sources_change(policy_dirs: &[PathBuf]) {
    let root = workspace_root();
    for dir in [root.join("wit"), root.join("guest-sdk")]
        .iter()
        .chain(policy_dirs)
    {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for file in ["Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
}

/// The whole job of a build script that embeds policies: builds every
/// policy crate directly below `dir` (a workspace-relative folder such as
/// `policies`) into `$OUT_DIR/<dir>/<name>.wasm`, after asking cargo to
/// rerun the script when their sources change. On failure it prints the
/// nested cargo's error output and exits with status 1, which fails the
/// build with that output shown.
pub fn build_for_build_script(dir: &str) -> Vec<BuiltPolicy> {
    let source = workspace_root().join(dir);
    rerun_if_sources_change(std::slice::from_ref(&source));
    let out_dir = std::env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts");
    let out_dir = PathBuf::from(out_dir).join(dir);
    let crates = policy_crates(&workspace_root(), dir);
    for stray in &crates.strays {
        println!(
            "cargo:warning={dir}/{stray} is not a workspace member (root Cargo.toml `members`): \
             not built"
        );
    }
    match build(&crates.members, &out_dir) {
        Ok(built) => built,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}

/// A Rust string literal for a path, for generated `include_bytes!` calls.
pub fn path_literal(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Rust identifier for a policy name: `content-router` -> `CONTENT_ROUTER`.
pub fn const_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch workspace: `Cargo.toml` with `manifest`, and a crate
    /// folder (with a `Cargo.toml`) per name in `crates`.
    fn workspace(manifest: &str, crates: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("Cargo.toml"), manifest).unwrap();
        for name in crates {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("Cargo.toml"), "[package]\n").unwrap();
        }
        root
    }

    #[test]
    fn only_workspace_members_are_policies_and_other_crates_are_strays() {
        let manifest = "[package]\nmembers = [\"policies/not-this\"]\n\n\
            [workspace]\nresolver = \"3\"\nmembers = [\n    \"host\",\n    \
            \"policies/round-robin\", # shipped\n    \"policies/content-router\",\n    \
            # \"policies/commented-out\",\n    \"tests/policies/looping\",\n]\n\
            default-members = [\"host\"]\n";
        let root = workspace(
            manifest,
            &[
                "policies/round-robin",
                "policies/content-router",
                "policies/flip2",
                "policies/commented-out",
                "tests/policies/looping",
                "tests/policies/scratch",
            ],
        );
        std::fs::create_dir_all(root.path().join("policies/no-crate")).unwrap();
        let shipped = policy_crates(root.path(), "policies");
        assert_eq!(shipped.members, ["content-router", "round-robin"]);
        assert_eq!(shipped.strays, ["commented-out", "flip2"]);
        let tests = policy_crates(root.path(), "tests/policies");
        assert_eq!(tests.members, ["looping"]);
        assert_eq!(tests.strays, ["scratch"]);
    }

    #[test]
    fn members_on_one_line_are_read_too() {
        let manifest = "[workspace]\nmembers = [\"policies/a\", \"policies/b\"]\n";
        let root = workspace(manifest, &["policies/a", "policies/b"]);
        let crates = policy_crates(root.path(), "policies");
        assert_eq!(crates.members, ["a", "b"]);
        assert!(crates.strays.is_empty());
    }

    #[test]
    fn this_workspace_ships_its_policies_folder() {
        let crates = policy_crates(&workspace_root(), "policies");
        assert!(crates.members.iter().any(|m| m == "round-robin"));
        assert!(crates.members.iter().any(|m| m == "content-router"));
    }
}
