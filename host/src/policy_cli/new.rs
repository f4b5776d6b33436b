//! `wasmroute policy new NAME [--path DIR]`: writes a standalone policy
//! crate to `DIR/NAME` from the templates in `templates/`.
//!
//! The crate is its own workspace (so it builds even when created inside
//! another one), depends on this repository's SDK by path (the checkout
//! the binary was built from, fixed at build time), and carries this
//! repository's `Cargo.lock` (cargo prunes it to what the crate uses, so
//! the versions are the ones already fetched and tested here) and its
//! `rust-toolchain.toml` (the same channel, with the `wasm32-wasip2`
//! target).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("templates/lib.rs.tmpl");
const CASES_TOML: &str = include_str!("templates/cases.toml.tmpl");
const GITIGNORE: &str = include_str!("templates/gitignore.tmpl");
const CARGO_LOCK: &str = include_str!("../../../Cargo.lock");
const RUST_TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// Names cargo refuses for a package, or that would clash with the SDK.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "test",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "proc-macro",
    "wasmroute-policy",
    "wasmroute_policy",
];

/// The SDK this binary was built with: `<repository>/guest-sdk`.
fn sdk_path() -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    host.parent().unwrap_or(host).join("guest-sdk")
}

/// Refuses what cargo would refuse as a package name (and names that do
/// not make a plain file name for the module).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_well || !rest_ok || name.len() > 64 {
        bail!(
            "`{name}` is not a policy crate name: a lower-case letter, then lower-case letters, \
             digits, `-` or `_` (at most 64)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("`{name}` is not a policy crate name: cargo or Rust reserves it");
    }
    Ok(())
}

/// Writes the crate `name` to `parent/name` (default parent: the current
/// folder); refuses a bad name or a folder that exists. Returns the folder.
pub fn new(name: &str, parent: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let parent = parent.unwrap_or(Path::new("."));
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists: not overwriting it", dir.display());
    }
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // `create_dir`, not `_all`: a folder made meanwhile is refused too.
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sdk = toml::Value::String(sdk_path().display().to_string()).to_string();
    let lib = name.replace('-', "_");
    let fill = |template: &str| {
        (template.replace("{{name}}", name))
            .replace("{{lib}}", &lib)
            .replace("{{sdk}}", &sdk)
    };
    let files: [(&str, String); 6] = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("Cargo.lock", CARGO_LOCK.to_owned()),
        ("rust-toolchain.toml", RUST_TOOLCHAIN.to_owned()),
        (".gitignore", GITIGNORE.to_owned()),
        ("src/lib.rs", fill(LIB_RS)),
        ("cases.toml", CASES_TOML.to_owned()),
    ];
    std::fs::create_dir(dir.join("src"))
        .with_context(|| format!("creating {}/src", dir.display()))?;
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_follow_cargo() {
        for good in ["x", "my-policy", "edge_router2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "9lives",
            "My",
            "a b",
            "a/b",
            "../x",
            "fn",
            "test",
            "wasmroute-policy",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sdk_path_is_this_repository_s() {
        assert!(
            sdk_path().join("Cargo.toml").is_file(),
            "{}",
            sdk_path().display()
        );
    }
}
