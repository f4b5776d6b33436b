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
//! those are meant for the host, not for wasm. Guests are built without
//! debug info (function names stay): it made up most of each file.
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

/// The package names of the policy crates directly below `dir` (each a
/// folder holding a `Cargo.toml`; the folder name is the package name).
pub fn policy_crates(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Builds the named packages (release profile) and copies each component to
/// `out_dir/<name>.wasm`.
pub fn build(packages: &[String], out_dir: &Path) -> Result<Vec<BuiltPolicy>, String> {
    if packages.is_empty() {
        // `cargo build` without `-p` would build the default members.
        return Ok(Vec::new());
    }
    let guest_target = target_root().join("wasm-guests");
    ensure_target(&guest_target)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &guest_target)
        // The workspace's release profile keeps line tables for the host;
        // in a guest they (and std's debug info) are 80-90 % of the file.
        // Function names stay, so trap backtraces still name functions.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // Whole-program optimisation and no unwinding code (a panic traps
        // either way): round-robin shrinks from 116 to 103 KB, and every
        // hot swap compiles that much less.
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    for package in packages {
        cmd.args(["-p", package]);
    }
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
    let artifacts = guest_target.join(TARGET).join("release");
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

/// Makes sure the toolchain has the [`TARGET`] standard library: a
/// toolchain that rustup installed before `rust-toolchain.toml` listed the
/// target lacks it, and rustup adds listed targets only when it installs a
/// toolchain. When it is missing, `rustup target add` runs once (build
/// scripts that race for it take turns through a lock folder).
fn ensure_target(guest_target: &Path) -> Result<(), String> {
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
    match build(&policy_crates(&source), &out_dir) {
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
