//! Modules built against `wasmroute:policy@0.2` (`wit/history/`), served
//! side by side with 0.3 ones on HTTP listeners.
//!
//! 0.3 only added to 0.2's types and host functions, so the 0.2 bindings
//! reuse the 0.3 types (`with`): a 0.2 module's decision is the same Rust
//! value as a 0.3 module's, and its imports are the 0.3 functions under
//! the 0.2 interface name. Nothing is converted per call.

use wasmtime::component::Resource;

pub use super::host::RequestHandle;
use super::host::wasmroute::policy::host as v03;
use super::host::{BackendStats, HostState, Method, RequestKey};

wasmtime::component::bindgen!({
    world: "wasmroute:policy/policy@0.2.2",
    path: "../wit/history/policy-0.2.2.wit",
    with: {
        "wasmroute:policy/types": super::host::wasmroute::policy::types,
        "wasmroute:policy/host.request": RequestHandle,
    },
});

/// Names of generated items used elsewhere.
pub mod exports {
    pub use super::Policy as PolicyBindings;
    pub use super::PolicyPre as PolicyBindingsPre;
}

/// Links the 0.2 interface's imports into a linker, beside 0.3's.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    self::wasmroute::policy::host::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |state| state,
    )
}

type RequestRef = Resource<RequestHandle>;

impl self::wasmroute::policy::host::Host for HostState {
    fn pool_size(&mut self, pool: u32) -> u32 {
        v03::Host::pool_size(self, pool)
    }

    fn pool_stats(&mut self, pool: u32) -> Vec<BackendStats> {
        v03::Host::pool_stats(self, pool)
    }

    fn pool_stats_packed(&mut self, pool: u32) -> Vec<u64> {
        v03::Host::pool_stats_packed(self, pool)
    }

    fn random(&mut self) -> u64 {
        self.next_random()
    }

    fn counter_slots(&mut self) -> u32 {
        v03::Host::counter_slots(self)
    }

    fn counter_add(&mut self, slot: u32, delta: i64) -> i64 {
        self.counters.add(slot, delta)
    }
}

/// Every accessor is the 0.3 one (`super::host`).
impl self::wasmroute::policy::host::HostRequest for HostState {
    fn method(&mut self, r: RequestRef) -> Method {
        v03::HostRequest::method(self, r)
    }

    fn path(&mut self, r: RequestRef) -> String {
        v03::HostRequest::path(self, r)
    }

    fn query(&mut self, r: RequestRef) -> Option<String> {
        v03::HostRequest::query(self, r)
    }

    fn authority(&mut self, r: RequestRef) -> Option<String> {
        v03::HostRequest::authority(self, r)
    }

    fn header(&mut self, r: RequestRef, name: String) -> Option<String> {
        v03::HostRequest::header(self, r, name)
    }

    fn cookie(&mut self, r: RequestRef, name: String) -> Option<String> {
        v03::HostRequest::cookie(self, r, name)
    }

    fn client_ip(&mut self, r: RequestRef) -> String {
        v03::HostRequest::client_ip(self, r)
    }

    fn http_version(&mut self, r: RequestRef) -> u8 {
        v03::HostRequest::http_version(self, r)
    }

    fn is_tls(&mut self, r: RequestRef) -> bool {
        v03::HostRequest::is_tls(self, r)
    }

    fn server_name(&mut self, r: RequestRef) -> Option<String> {
        v03::HostRequest::server_name(self, r)
    }

    fn attempt(&mut self, r: RequestRef) -> u32 {
        v03::HostRequest::attempt(self, r)
    }

    fn tried(&mut self, r: RequestRef) -> Vec<(u32, u32)> {
        v03::HostRequest::tried(self, r)
    }

    fn key_hash(&mut self, r: RequestRef, key: RequestKey) -> Option<u64> {
        v03::HostRequest::key_hash(self, r, key)
    }

    fn candidates(&mut self, r: RequestRef, pool: u32, first: u32) -> u64 {
        v03::HostRequest::candidates(self, r, pool, first)
    }

    fn least_active(&mut self, r: RequestRef, pool: u32, tie_breaker: u64) -> Option<u32> {
        v03::HostRequest::least_active(self, r, pool, tie_breaker)
    }

    fn drop(&mut self, _: RequestRef) -> wasmtime::Result<()> {
        Ok(())
    }
}
