//! The SDK's calls into the host, in one place, per target.
//!
//! On `wasm32` (a policy component) every function here is a thin call
//! into the imports wit-bindgen generates for `wit/policy.wit`
//! (`wasm.rs`). On native builds those imports do not exist (wit-bindgen
//! leaves them `unreachable!()`), so `native/` answers the same calls
//! from a test host held in thread-local state, which
//! [`testing`](crate::testing) installs around every call it makes into a
//! policy. The rest of the SDK names only `sys::`, never the bindings'
//! host functions, and works the same on both.

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;

/// One step of xorshift64*, the generator of both the host's `random` and
/// the guest-side [`random`](crate::random): `state` must not be 0.
pub(crate) fn xorshift64_star(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
