//! `cargo policies [OUT_DIR]`: builds every shipped policy (each crate under
//! `policies/`) to `OUT_DIR/<name>.wasm`, by default `target/policies`.

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| guest_build::target_root().join("policies"));
    let names = guest_build::policy_crates(&guest_build::workspace_root().join("policies"));
    match guest_build::build(&names, &out) {
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
