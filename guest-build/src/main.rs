//! `cargo policies [OUT_DIR]`: builds every shipped policy (each workspace
//! member under `policies/`) to `OUT_DIR/<name>.wasm`, by default
//! `target/policies`, with the `policy` profile.

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| guest_build::target_root().join("policies"));
    let crates = guest_build::policy_crates(&guest_build::workspace_root(), "policies");
    for stray in &crates.strays {
        eprintln!("policies/{stray} is not a workspace member: not built");
    }
    match guest_build::build(&crates.members, &out) {
        Ok(built) => {
            for policy in built {
                println!("{}", policy.path.display());
            }
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}
