//! Write wasmroute routing and load-balancing policies in Rust.
//!
//! A policy is a type implementing [`Policy`], exported with
//! [`export_policy!`], in a `cdylib` crate built for `wasm32-wasip2`. The
//! proxy instantiates it once per worker thread, calls [`Policy::init`] once
//! with the listener's pools and `policy_config` table, and then
//! [`Policy::decide`] for every request on the same instance: the value
//! `init` returned lives in guest memory between calls, so a policy can keep
//! state (a round-robin cursor, a cache) in plain fields. It is lost when the
//! policy is reloaded or traps (a panic is a trap), and it is per worker:
//! two workers do not see each other's state.
//!
//! ```no_run
//! use wasmroute_policy::balance::RoundRobin;
//! use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};
//!
//! struct Simple {
//!     pool: PoolId,
//!     cursor: RoundRobin,
//! }
//!
//! impl Policy for Simple {
//!     fn init(ctx: &InitContext) -> Result<Self, String> {
//!         ctx.config().deny_unknown_keys(&["pool"])?;
//!         let pool = match ctx.config().get_str("pool")? {
//!             Some(name) => ctx.pool(name)?,
//!             None => PoolId::DEFAULT,
//!         };
//!         Ok(Simple { pool, cursor: RoundRobin::new() })
//!     }
//!
//!     fn decide(&mut self, req: &Request) -> Decision {
//!         if req.path().starts_with("/admin") {
//!             return Decision::respond(403).body("forbidden\n");
//!         }
//!         match self.cursor.pick(&self.pool.stats()) {
//!             Some(backend) => Decision::forward(self.pool, backend),
//!             None => Decision::no_backend(),
//!         }
//!     }
//! }
//!
//! export_policy!(Simple);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `.wasm` file in `target/wasm32-wasip2/release/` is the component to drop
//! into the proxy's policies folder.
//!
//! Cost model: every call into the host that returns a string or a list
//! allocates in the guest. Ask the [`Request`] only for what the decision
//! needs, read [`PoolId::stats`] at most once per decision, and resolve pool
//! names to [`PoolId`]s once, in `init`.

#![deny(missing_docs)]

pub mod balance;
mod config;
mod decision;
mod request;

pub use config::{Config, ConfigValue, InitContext};
pub use decision::Decision;
pub use request::{Method, Request};

/// The bindings wit-bindgen generates for `wit/policy.wit`. Not part of the
/// API: policy authors use the wrappers at the crate root, and
/// [`export_policy!`] wires them to these.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        // The export macro is used from the policy crates, which do not
        // depend on wit-bindgen: make it public and have it find the
        // generated types here.
        pub_export_macro: true,
        default_bindings_module: "wasmroute_policy::bindings",
        export_macro_name: "export",
    });

    pub use self::wasmroute::policy::host;
    pub use self::wasmroute::policy::types;
}

/// A live snapshot of one backend of a pool, as returned by
/// [`PoolId::stats`]. Every field is a plain number.
pub use bindings::types::BackendStats;

/// A routing policy.
///
/// One value of the implementing type lives in each worker's instance of
/// the policy: [`init`](Policy::init) creates it, and every
/// [`decide`](Policy::decide) on that worker gets it mutably.
pub trait Policy: Sized + 'static {
    /// Called once per instance, before any decision, with the listener's
    /// pools and `policy_config` table. An error rejects the policy for that
    /// listener (the previous version keeps serving); the message is shown
    /// to the operator, so name the config key at fault
    /// (`"video_prefix: must start with '/'"`).
    fn init(ctx: &InitContext) -> Result<Self, String>;

    /// Decides what to do with one request. Must be quick: the listener's
    /// decision timeout (a few milliseconds) aborts the instance. A panic
    /// traps the instance; the listener's `on_error` then handles the
    /// request and the instance is recreated (and re-initialised).
    fn decide(&mut self, req: &Request) -> Decision;
}

/// A pool of the listener: its index in the listener's `pools` list.
///
/// Resolve names to ids once, in [`Policy::init`], with
/// [`InitContext::pool`]; the host refers to pools by index only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId(pub u32);

impl PoolId {
    /// The listener's default pool (the first of its `pools`).
    pub const DEFAULT: PoolId = PoolId(0);

    /// The pool's index in the listener's `pools` list.
    pub fn index(self) -> u32 {
        self.0
    }

    /// Number of backends in the pool (0 for an unknown pool). Allocates
    /// nothing; use it when the stats are not needed.
    pub fn size(self) -> u32 {
        bindings::host::pool_size(self.0)
    }

    /// Live stats of every backend of the pool, in pool order (index `i` of
    /// the list is backend `i`). Empty for an unknown pool. Allocates one
    /// list: call it at most once per decision.
    pub fn stats(self) -> Vec<BackendStats> {
        bindings::host::pool_stats(self.0)
    }
}

/// A random number from the host's fast, non-cryptographic generator (for
/// random and power-of-two-choices balancing).
pub fn random() -> u64 {
    bindings::host::random()
}

/// Exports a [`Policy`] implementation as the policy component's `init` and
/// `decide`. Use it exactly once per policy crate, with the type's name:
/// `export_policy!(MyPolicy);`.
///
/// The instance created by `init` is kept in a thread-local slot in guest
/// memory (a Wasm instance is single-threaded) and handed to every
/// `decide`. A second `init` replaces it; a `decide` before a successful
/// `init` panics, which the host sees as a trap.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static POLICY: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct WasmroutePolicyExport;

            impl $crate::bindings::Guest for WasmroutePolicyExport {
                fn init(
                    pools: ::std::vec::Vec<::std::string::String>,
                    config: ::std::vec::Vec<(::std::string::String, $crate::ConfigValue)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init(&POLICY, pools, config)
                }

                fn decide(request: &$crate::bindings::Request) -> $crate::bindings::Decision {
                    $crate::__private::decide(&POLICY, request)
                }
            }

    $crate::bindings::export!(WasmroutePolicyExport with_types_in $crate::bindings);
        };
    };
}

/// The glue [`export_policy!`] expands to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::{InitContext, Policy, Request, bindings};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The slot one policy instance lives in between calls.
    pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

    /// The exported `init`: builds the policy and stores it.
    pub fn init<T: Policy>(
        slot: &'static Slot<T>,
        pools: Vec<String>,
        config: Vec<(String, crate::ConfigValue)>,
    ) -> Result<(), String> {
        // A panic is a trap either way; without the default hook it traps
        // at once instead of first writing its message to stderr, which a
        // policy does not have.
        std::panic::set_hook(Box::new(|_| {}));
        slot.set(None);
        let policy = T::init(&InitContext::new(pools, config))?;
        slot.set(Some(policy));
        Ok(())
    }

    /// The exported `decide`: runs the stored policy.
    pub fn decide<T: Policy>(
        slot: &'static Slot<T>,
        request: &bindings::Request,
    ) -> bindings::types::Decision {
        slot.with_borrow_mut(|policy| {
            let policy = policy
                .as_mut()
                .expect("wasmroute policy: decide called before a successful init");
            policy.decide(&Request::new(request)).into_raw()
        })
    }
}
