//! The host calls on native builds, answered by the test host that
//! [`testing`](crate::testing) installs in thread-local state for the
//! duration of each call into a policy (`init`, `decide`,
//! `decide-connection`). The answers follow the real host's rules
//! (`host/src/policy/host.rs`, `derived.rs`), and a host unit test
//! (`sdk_parity_tests.rs`) checks that they agree.

mod derived;
mod handles;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::ConfigValue;
use crate::testing::TestBackend;

use derived::pack;
pub(crate) use handles::{Connection, Request};

/// Shared counter slots per listener, as the host offers.
pub(crate) const COUNTER_SLOTS: usize = 64;

/// What the test host holds: the listener's pools, config and counters,
/// shared by every instance (worker) built from one `TestHost`.
#[derive(Debug, Clone)]
pub(crate) struct HostState {
    /// Pool names, index = pool id.
    pub names: Vec<String>,
    /// Each pool's backends, index = pool id.
    pub pools: Vec<Vec<TestBackend>>,
    /// The `policy_config` entries, in order.
    pub config: Vec<(String, ConfigValue)>,
    /// The shared counters.
    pub counters: [i64; COUNTER_SLOTS],
    /// The host-side generator behind the `random` import (never 0).
    pub rng: u64,
}

impl HostState {
    /// A host without pools or config; `seed` starts its generator.
    pub fn new(seed: u64) -> HostState {
        HostState {
            names: Vec::new(),
            pools: Vec::new(),
            config: Vec::new(),
            counters: [0; COUNTER_SLOTS],
            rng: seed | 1,
        }
    }
}

/// One policy instance as the native host calls it: the host it runs in
/// and its own guest-side generator state (0 until first drawn, as in a
/// fresh Wasm instance).
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    /// The host, shared with the other instances of the same `TestHost`.
    pub host: Rc<RefCell<HostState>>,
    /// The state of this instance's [`random`](crate::random) generator.
    pub rng: Rc<Cell<u64>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

/// While alive, host calls on this thread are answered by one instance's
/// host; dropping it restores what was installed before.
#[derive(Debug)]
#[must_use]
pub(crate) struct Installed {
    previous: Option<Instance>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with_borrow_mut(|current| *current = previous);
    }
}

/// Answers this thread's host calls from `instance` until the guard drops.
pub(crate) fn install(instance: Instance) -> Installed {
    let previous = CURRENT.with_borrow_mut(|current| current.replace(instance));
    Installed { previous }
}

/// Runs `f` on the installed instance.
fn with_instance<R>(f: impl FnOnce(&Instance) -> R) -> R {
    CURRENT.with_borrow(|current| {
        let instance = current.as_ref().expect(
            "wasmroute_policy: a host call outside a policy call; natively, \
             call a policy through wasmroute_policy::testing::TestHost",
        );
        f(instance)
    })
}

/// Runs `f` on the installed instance's host state.
pub(crate) fn with_host<R>(f: impl FnOnce(&mut HostState) -> R) -> R {
    with_instance(|instance| f(&mut instance.host.borrow_mut()))
}

/// The export glue is wasm only: natively, policies are called through
/// [`testing`](crate::testing).
pub(crate) fn exported_request(_: &crate::bindings::host::Request) -> &Request {
    unreachable!("wasmroute_policy: the exports run in wasm only; natively use testing::TestHost")
}

/// As [`exported_request`], for connections.
pub(crate) fn exported_connection(_: &crate::bindings::host::Connection) -> &Connection {
    unreachable!("wasmroute_policy: the exports run in wasm only; natively use testing::TestHost")
}

/// `pool-size`.
pub(crate) fn pool_size(pool: u32) -> u32 {
    with_host(|host| host.pools.get(pool as usize).map_or(0, |p| p.len() as u32))
}

/// `pool-stats-packed`.
pub(crate) fn pool_stats_packed(pool: u32) -> Vec<u64> {
    with_host(|host| match host.pools.get(pool as usize) {
        Some(backends) => backends.iter().flat_map(|b| pack(b, backends)).collect(),
        None => Vec::new(),
    })
}

/// `counter-slots`.
pub(crate) fn counter_slots() -> u32 {
    COUNTER_SLOTS as u32
}

/// `counter-add`: the value before, wrapping; 0 and no change out of range.
pub(crate) fn counter_add(slot: u32, delta: i64) -> i64 {
    with_host(|host| match host.counters.get_mut(slot as usize) {
        Some(counter) => {
            let before = *counter;
            *counter = before.wrapping_add(delta);
            before
        }
        None => 0,
    })
}

/// The guest-side generator behind [`random`](crate::random), per
/// instance, seeded on first use from the host's generator (the test
/// host's seed), as in a Wasm instance.
pub(crate) fn random() -> u64 {
    with_instance(|instance| {
        let mut x = instance.rng.get();
        if x == 0 {
            let mut host = instance.host.borrow_mut();
            x = super::xorshift64_star(&mut host.rng) | 1;
        }
        let out = super::xorshift64_star(&mut x);
        instance.rng.set(x);
        out
    })
}
