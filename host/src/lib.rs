//! wasmroute: an edge proxy and load balancer in which every backend choice
//! and content-routing decision is made by a WebAssembly policy module,
//! replaceable at run time by dropping a file into a folder.
//!
//! Follow one request through three modules: [`listener`] accepts it,
//! [`http::proxy`] asks the policy ([`policy::decide`]) and forwards it,
//! [`pool`] keeps the backend signals the policy reads. [`server`] owns
//! everything that changes at run time (config, modules, listeners).

pub mod bundled;
pub mod config;
pub mod demo;
pub mod health;
pub mod http;
pub mod listener;
pub mod policy;
pub mod pool;
pub mod server;
pub mod tls;

pub use server::{Server, ServerEvent};
