//! wasmroute: an edge proxy and load balancer in which every backend choice
//! and content-routing decision is made by a WebAssembly policy module,
//! replaceable at run time by dropping a file into a folder.
//!
//! Follow one request through three modules: [`listener`] accepts it,
//! [`http::proxy`] asks the policy ([`policy::decide`]) and forwards it,
//! [`pool`] keeps the backend signals the policy reads. [`server`] owns
//! everything that changes at run time (config, modules, listeners).

pub mod access_log;
pub mod admin;
pub mod bundled;
pub mod config;
pub mod demo;
pub mod dns;
pub mod events;
pub mod health;
pub mod http;
pub mod ip_text;
pub mod l4;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod policy_cli;
pub mod pool;
pub mod random;
pub mod server;
pub mod tls;
pub mod upstream;

pub use server::{Server, ServerEvent};

#[cfg(test)]
mod layers {
    //! The layers, lowest first; a module may name (`crate::...`) only
    //! modules of its own layer or below. Doc comments may point anywhere.
    const LAYERS: &[&[&str]] = &[
        &[
            "config",
            "events",
            "ip_text",
            "random",
            "bundled",
            "lifecycle",
            "logging",
            "metrics",
            "access_log",
        ],
        &["dns", "tls"],
        &["upstream"],
        &["pool"],
        &["health"],
        &["policy"],
        &["http", "l4"],
        &["listener"],
        &["server", "demo", "admin"],
        &["policy_cli"],
    ];

    fn layer_of(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|layer| layer.contains(&module))
            .unwrap_or_else(|| panic!("module {module} has no layer"))
    }

    #[test]
    fn lower_layers_never_import_upper_ones() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut violations = Vec::new();
        for layer in LAYERS {
            for module in *layer {
                let dir = src.join(module);
                let files: Vec<std::path::PathBuf> = if dir.is_dir() {
                    walk(&dir)
                } else {
                    vec![src.join(format!("{module}.rs"))]
                };
                for file in files {
                    let text = std::fs::read_to_string(&file).unwrap();
                    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                        for (_, rest) in line
                            .match_indices("crate::")
                            .map(|(i, _)| ((), &line[i + 7..]))
                        {
                            let named: String = rest
                                .chars()
                                .take_while(|c| {
                                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'
                                })
                                .collect();
                            if !named.is_empty() && layer_of(&named) > layer_of(module) {
                                violations.push(format!("{}: {}", file.display(), line.trim()));
                            }
                        }
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "upward imports:\n{}",
            violations.join("\n")
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }
}
