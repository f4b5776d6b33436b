//! End-to-end tests of wasmroute over real sockets, one binary: linking
//! wasmtime into one test executable per file cost minutes of link time
//! and gigabytes of disk per build. Each module is one area.

mod access_log;
mod admin;
mod admin_peers;
mod balancing;
mod balancing_affinity;
mod balancing_health;
mod bodies;
mod breaker;
mod compat;
mod config_reload;
mod data_tier;
mod data_tier_health;
mod dns;
mod edge_safety;
mod fast_path;
mod guests;
mod harness;
mod health;
mod health_return;
mod health_steps;
mod hot_reload;
mod hyper_drain;
mod hyper_paths;
mod listener_burst;
mod protocol;
mod proxy_accept;
mod proxy_protocol;
mod retries;
mod routing;
mod shadow;
mod sni_routing;
mod streaming;
mod tcp;
mod tcp_health;
mod tcp_proxy;
mod tcp_sni;
mod three_tier;
mod tls;
