//! The shipped policies (every workspace member under `policies/`:
//! `content-router`, `round-robin`...), compiled to components by
//! `build.rs` and embedded in the binary, for `wasmroute demo` and for
//! tests.
//!
//! They are built from source on every host build that touches them (the
//! wasmtime test-programs pattern); no `.wasm` file is committed. To get
//! them as files, run `cargo policies` (writes `target/policies/*.wasm`).
//! A host built without the `bundled-policies` feature (default on) has
//! none: [`POLICIES`] is empty and [`AVAILABLE`] false.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Whether this binary embeds the shipped policies (the
/// `bundled-policies` feature).
pub const AVAILABLE: bool = cfg!(feature = "bundled-policies");

/// A shipped policy's component bytes, by name (`"round-robin"`).
pub fn get(name: &str) -> Option<&'static [u8]> {
    POLICIES
        .iter()
        .find(|(policy, _)| *policy == name)
        .map(|(_, bytes)| *bytes)
}
