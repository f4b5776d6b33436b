//! The host calls of a policy component: thin wrappers of the imports
//! wit-bindgen generates (`bindings::host`).

use crate::bindings::host;

/// The request resource the host lends to `decide`.
pub(crate) use host::Request;

/// The connection resource the host lends to `decide-connection`.
pub(crate) use host::Connection;

/// The request handed to the exported `decide`, as the SDK's handle.
pub(crate) fn exported_request(request: &host::Request) -> &Request {
    request
}

/// The connection handed to the exported `decide-connection`.
pub(crate) fn exported_connection(connection: &host::Connection) -> &Connection {
    connection
}

/// `pool-size`, asked once per pool and instance, then remembered: an
/// instance's pools never change (see `init` in `wit/policy.wit`).
pub(crate) fn pool_size(pool: u32) -> u32 {
    /// Pools whose size is remembered (a listener has a handful).
    const REMEMBERED: usize = 64;
    const UNKNOWN: u32 = u32::MAX;
    thread_local! {
        static SIZES: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let index = pool as usize;
    if index >= REMEMBERED {
        return host::pool_size(pool);
    }
    SIZES.with_borrow_mut(|sizes| {
        if sizes.len() <= index {
            sizes.resize(index + 1, UNKNOWN);
        }
        if sizes[index] == UNKNOWN {
            sizes[index] = host::pool_size(pool);
        }
        sizes[index]
    })
}

/// `pool-stats-packed`.
pub(crate) fn pool_stats_packed(pool: u32) -> Vec<u64> {
    host::pool_stats_packed(pool)
}

/// `counter-slots`.
pub(crate) fn counter_slots() -> u32 {
    host::counter_slots()
}

/// `counter-add`.
pub(crate) fn counter_add(slot: u32, delta: i64) -> i64 {
    host::counter_add(slot, delta)
}

/// The guest-side generator behind [`random`](crate::random): seeded once
/// per instance from the host's `random`, then run in the guest.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = host::random() | 1;
        }
        let out = super::xorshift64_star(&mut x);
        state.set(x);
        out
    })
}
