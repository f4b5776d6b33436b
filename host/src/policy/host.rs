//! The host side of `wit/policy.wit`: generated bindings and the functions a
//! policy may call while it decides.
//!
//! The request is never copied into the guest. During a decision the request
//! head is *moved* (not cloned) into the store's [`HostState`] and the guest
//! gets a borrow handle (`rep` 0, no resource-table entry, no allocation);
//! each accessor copies out just the part the guest asks for.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::pool::BackendPool;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit",
    with: {
        "wasmroute:policy/host.request": RequestHandle,
    },
});

pub use self::wasmroute::policy::types::{BackendStats, HeaderEdit, Method};

/// Names of generated items used elsewhere, kept in one place.
pub mod exports {
    pub use super::Decision;
    pub use super::Policy as PolicyBindings;
    pub use super::PolicyPre as PolicyBindingsPre;
}

/// Marker type of the `request` resource: the data lives in
/// [`HostState::request`] for the duration of one decision.
pub struct RequestHandle;

/// The request head a policy may look at, moved into the store for one call.
#[derive(Debug)]
pub struct RequestView {
    /// Method, URI, version and headers, as hyper parsed them.
    pub head: http::request::Parts,
    /// The peer of the client connection.
    pub client_ip: IpAddr,
    /// Whether the client connection is TLS.
    pub is_tls: bool,
    /// The SNI name of a TLS client connection.
    pub server_name: Option<Arc<str>>,
}

/// Per-instance state of a policy store.
pub struct HostState {
    /// The request being decided (`None` between calls).
    pub request: Option<RequestView>,
    /// The listener's pools, index = pool id.
    pub pools: Arc<[Arc<BackendPool>]>,
    /// Memory cap.
    pub limits: StoreLimits,
    rng: u64,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    /// State for one instance: no filesystem, network, environment or
    /// arguments (WASI is linked only because `wasm32-wasip2` std imports
    /// it; clocks and random work, everything else is denied).
    pub fn new(pools: Arc<[Arc<BackendPool>]>, memory_limit: usize, seed: u64) -> HostState {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        HostState {
            request: None,
            pools,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(32)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            rng: seed | 1,
            wasi,
            table: ResourceTable::new(),
        }
    }

    fn view(&self) -> &RequestView {
        // Only reachable through a borrow handle the host hands out during
        // `decide`, when the view is present.
        self.request
            .as_ref()
            .expect("request accessed outside of a decision")
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links the policy world's imports and WASI into a linker. WASI is there
/// because `wasm32-wasip2` std imports it; the context denies every
/// capability (no files, network, environment), and the guest SDK keeps
/// panics off stderr, whose blocking write would block on the runtime.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    self::wasmroute::policy::host::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |state| state,
    )
}

impl self::wasmroute::policy::types::Host for HostState {}

impl self::wasmroute::policy::host::Host for HostState {
    fn pool_size(&mut self, pool: u32) -> u32 {
        self.pools
            .get(pool as usize)
            .map_or(0, |p| p.backends.len() as u32)
    }

    fn pool_stats(&mut self, pool: u32) -> Vec<BackendStats> {
        let Some(pool) = self.pools.get(pool as usize) else {
            return Vec::new();
        };
        pool.backends
            .iter()
            .enumerate()
            .map(|(index, backend)| BackendStats {
                index: index as u32,
                weight: backend.weight,
                healthy: backend.stats.healthy(),
                active_requests: backend.stats.active(),
                ewma_latency_us: backend.stats.ewma_latency_us(),
                total_requests: backend.stats.total(),
            })
            .collect()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: fast, per-instance, seeded from the OS at instantiation.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl self::wasmroute::policy::host::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> Method {
        let method = &self.view().head.method;
        match *method {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            http::Method::CONNECT => Method::Connect,
            http::Method::OPTIONS => Method::Options,
            http::Method::TRACE => Method::Trace,
            http::Method::PATCH => Method::Patch,
            _ => Method::Other(method.as_str().to_owned()),
        }
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.view().head.uri.path().to_owned()
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.view().head.uri.query().map(str::to_owned)
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        let head = &self.view().head;
        match head.uri.authority() {
            Some(authority) => Some(authority.as_str().to_owned()),
            None => header_str(&head.headers, "host").map(str::to_owned),
        }
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        header_str(&self.view().head.headers, &name).map(str::to_owned)
    }

    fn cookie(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        find_cookie(&self.view().head.headers, &name).map(str::to_owned)
    }

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> String {
        self.view().client_ip.to_string()
    }

    fn http_version(&mut self, _: Resource<RequestHandle>) -> u8 {
        match self.view().head.version {
            http::Version::HTTP_09 => 9,
            http::Version::HTTP_10 => 10,
            http::Version::HTTP_2 => 20,
            http::Version::HTTP_3 => 30,
            _ => 11,
        }
    }

    fn is_tls(&mut self, _: Resource<RequestHandle>) -> bool {
        self.view().is_tls
    }

    fn server_name(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.view().server_name.as_deref().map(str::to_owned)
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Borrow handles are never owned by the guest; nothing to free.
        Ok(())
    }
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of cookie `name` across every `Cookie` header.
pub fn find_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_in_any_cookie_header() {
        let mut headers = http::HeaderMap::new();
        headers.append("cookie", "a=1; b=2".parse().unwrap());
        headers.append("cookie", "sticky=\"web-1\"".parse().unwrap());
        assert_eq!(find_cookie(&headers, "b"), Some("2"));
        assert_eq!(find_cookie(&headers, "sticky"), Some("web-1"));
        assert_eq!(find_cookie(&headers, "c"), None);
    }
}
