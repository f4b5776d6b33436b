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
//! Round robin over one pool, with an admin path answered locally:
//!
//! ```no_run
//! use wasmroute_policy::balance::Rotation;
//! use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request, export_policy};
//!
//! struct Simple {
//!     pool: PoolId,
//!     rotation: Rotation,
//! }
//!
//! impl Policy for Simple {
//!     fn init(ctx: &InitContext) -> Result<Self, String> {
//!         ctx.config().deny_unknown_keys(&["pool"])?;
//!         Ok(Simple { pool: ctx.config_pool("pool")?, rotation: Rotation::new() })
//!     }
//!
//!     fn decide(&mut self, req: &Request) -> Decision {
//!         if req.path().starts_with("/admin") {
//!             return Decision::respond(403).body("forbidden\n").into();
//!         }
//!         let backend = self.rotation.pick(&mut self.pool.candidates(req));
//!         Decision::forward_or_no_backend(self.pool, backend)
//!     }
//! }
//!
//! export_policy!(Simple);
//! # fn main() {}
//! ```
//!
//! Start a crate with `wasmroute policy new NAME` and build it with
//! `wasmroute policy build`, which prints the path of the `.wasm` component
//! to drop into the proxy's policies folder (docs/policy-guide.md has the
//! whole workflow: native tests with [`testing`], replay, shadow). Inside
//! this repository's workspace: `cargo build --profile policy --target
//! wasm32-wasip2 -p NAME`.
//!
//! Beyond the trait: [`balance`] has the load-balancing algorithms
//! (round robin, random, least connections, power of two choices, Maglev
//! consistent hashing) as pure functions over [`PoolId::stats`], [`key`]
//! extracts a hash key from a request, [`sticky`] signs and verifies
//! sticky-session cookies, and [`shared`] gives access to the host's
//! counters shared by every worker. The shipped policies in `policies/`
//! are each a few lines over them.
//!
//! Cost model: every call into the host that returns a string or a list
//! allocates in the guest. Ask the [`Request`] only for what the decision
//! needs, read [`PoolId::stats`] at most once per decision, and resolve pool
//! names to [`PoolId`]s once, in `init`. Two questions have answers that
//! are plain numbers: which backends a request may go to
//! ([`PoolId::candidates`], enough for round robin and uniform random) and
//! the hash of a request key ([`Request::key_hash`], used by
//! [`key::HashKey::hash`]); prefer them over fetching stats or strings.

#![deny(missing_docs)]

pub mod balance;
mod candidates;
mod config;
mod connection;
mod decision;
pub mod key;
mod request;
pub mod shared;
pub mod sticky;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use candidates::Candidates;
pub use config::{Config, ConfigValue, InitContext};
pub use connection::{Connection, ConnectionDecision, Subject};
pub use decision::{Decision, Forward, Respond};
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
        // Import arguments borrow (`request-key` holds a `&str`), so
        // asking the host about a header allocates nothing.
        ownership: Borrowing { duplicate_if_necessary: false },
    });

    pub use self::wasmroute::policy::host;
    pub use self::wasmroute::policy::types;
}

/// A live snapshot of one backend of a pool, as returned by
/// [`PoolId::stats`]. Every field is a plain number (`load` is a plain
/// record of numbers when the backend reports its load).
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

/// A policy that also decides TCP connections, for TCP listeners: the one
/// method to add to a [`Policy`] (and [`export_policy!`] finds it by
/// itself). A policy without it serves HTTP listeners only; the proxy
/// refuses it for a TCP listener with that reason.
///
/// ```no_run
/// # use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request};
/// use wasmroute_policy::{Connection, ConnectionDecision, ConnectionPolicy, export_policy};
/// # struct First;
/// # impl Policy for First {
/// #     fn init(_: &InitContext) -> Result<Self, String> { Ok(First) }
/// #     fn decide(&mut self, _: &Request) -> Decision { Decision::no_backend() }
/// # }
/// impl ConnectionPolicy for First {
///     fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision {
///         let first = PoolId::DEFAULT.candidates(conn).next_after(None);
///         ConnectionDecision::forward_or_reject(PoolId::DEFAULT, first)
///     }
/// }
/// export_policy!(First);
/// # fn main() {}
/// ```
pub trait ConnectionPolicy: Policy {
    /// True when [`decide_connection`](Self::decide_connection) reads the
    /// client's TLS ClientHello ([`Connection::server_name`],
    /// [`Connection::alpn`], [`Connection::is_tls`]). Only then does the
    /// proxy wait for the client's first bytes (up to the listener's
    /// `peek_timeout`) before deciding; leave it false for protocols where
    /// the server speaks first.
    const READS_CLIENT_HELLO: bool = false;

    /// Decides which backend one TCP connection goes to, when it is
    /// accepted (and again, with [`Connection::attempt`] above 0, when the
    /// chosen backend cannot be connected to). The same rules as
    /// [`Policy::decide`]: quick, and a panic traps the instance.
    fn decide_connection(&mut self, conn: &Connection) -> ConnectionDecision;
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
    /// nothing; use it when the stats are not needed. Asked of the host
    /// once per pool and instance, then remembered: an instance's pools
    /// never change (see `init` in `wit/policy.wit`).
    pub fn size(self) -> u32 {
        sys::pool_size(self.0)
    }

    /// Live stats of every backend of the pool as the host reports them,
    /// whatever was tried, in pool order; see [`stats`](Self::stats).
    pub(crate) fn all_stats(self) -> Vec<BackendStats> {
        // The packed form crosses the boundary as one copy; decoding it
        // here is cheaper than the host storing records field by field.
        unpack_stats(&sys::pool_stats_packed(self.0))
    }

    /// The backends of the pool `req` may go to: healthy and, on a retry,
    /// not tried yet (all healthy ones when every one was tried). Computed
    /// by the host and returned as bitmasks: no list crosses into the
    /// guest, so this is the cheap way to balance by health alone (see
    /// [`balance::Rotation`], [`balance::random_candidate`]).
    pub fn candidates<'a>(self, req: impl Into<Subject<'a>>) -> Candidates<'a> {
        Candidates::fetch(self, req.into())
    }

    /// The backend with the fewest requests in flight among those `req`
    /// may go to (see [`candidates`](Self::candidates)), chosen by the
    /// host: the same answer as [`balance::least_active`] over
    /// [`stats`](Self::stats), without the pool's stats crossing
    /// into the guest (about 0.5 us less for 16 backends). Ties are broken
    /// by `tie_breaker` as there: pass a counter incremented per decision
    /// to rotate among equally loaded backends. `None` when no backend of
    /// the pool is healthy.
    pub fn least_active<'a>(self, req: impl Into<Subject<'a>>, tie_breaker: u64) -> Option<u32> {
        req.into().least_active_in(self, tie_breaker)
    }

    /// Live stats of every backend of the pool for deciding `subject` (a
    /// [`Request`] or a [`Connection`]), in pool order: index `i` of the
    /// list is backend `i`, and on a retry the backends `subject` already
    /// tried are marked unhealthy (as long as another healthy backend
    /// remains), so any [`balance`] helper picks a fresh one. Empty for an
    /// unknown pool. Allocates one list: call it at most once per decision.
    pub fn stats<'a>(self, subject: impl Into<Subject<'a>>) -> Vec<BackendStats> {
        let subject = subject.into();
        let mut stats = self.all_stats();
        if subject.attempt() > 0 {
            balance::avoid(&mut stats, &subject.tried_in(self));
        }
        stats
    }
}

/// Decodes `pool-stats-packed` (layout in `wit/policy.wit`).
fn unpack_stats(words: &[u64]) -> Vec<BackendStats> {
    let low = |w: u64| (w & 0xFFFF_FFFF) as u32;
    let high = |w: u64| (w >> 32) as u32;
    words
        .chunks_exact(5)
        .enumerate()
        .map(|(index, w)| {
            let flags = w[4];
            let load = (flags & 4 != 0).then(|| bindings::types::BackendLoad {
                cpu: ((flags >> 8) & 0xFFFF) as f32 / 10_000.0,
                memory: ((flags >> 24) & 0xFFFF) as f32 / 10_000.0,
                age_ms: (flags >> 40) as u32,
            });
            BackendStats {
                index: index as u32,
                stable_id: w[0],
                weight: low(w[1]),
                active_requests: high(w[1]),
                ewma_latency_us: low(w[2]),
                error_rate_permille: high(w[2]),
                total_requests: w[3],
                healthy: flags & 1 != 0,
                ejected: flags & 2 != 0,
                load,
            }
        })
        .collect()
}

/// A random number from a fast, non-cryptographic generator (for random
/// and power-of-two-choices balancing). The generator runs in the guest
/// (xorshift64*), seeded once per instance from the host's `random`, so a
/// draw costs no host call; instances (one per worker) draw independent
/// sequences.
pub fn random() -> u64 {
    sys::random()
}

/// Exports a [`Policy`] implementation as the policy component's `init` and
/// `decide` (and `decide-connection` when the type also implements
/// [`ConnectionPolicy`]). Use it exactly once per policy crate, with the
/// type's name: `export_policy!(MyPolicy);`.
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

                fn capabilities() -> $crate::bindings::types::Capabilities {
                    #[allow(unused_imports)]
                    use $crate::__private::{DecidesConnections as _, DecidesRequestsOnly as _};
                    (&$crate::__private::Probe::<$ty>::NEW).capabilities()
                }

                fn decide_connection(
                    connection: &$crate::bindings::host::Connection,
                ) -> $crate::bindings::types::ConnectionDecision {
                    #[allow(unused_imports)]
                    use $crate::__private::{DecidesConnections as _, DecidesRequestsOnly as _};
                    (&$crate::__private::Probe::<$ty>::NEW).decide_connection(&POLICY, connection)
                }
            }

    $crate::bindings::export!(WasmroutePolicyExport with_types_in $crate::bindings);
        };
    };
}

/// The glue [`export_policy!`] expands to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::{Connection, ConnectionPolicy, InitContext, Policy, Request, bindings};
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

    /// Chooses at the export macro's expansion whether the policy type
    /// implements [`ConnectionPolicy`]: method resolution prefers
    /// [`DecidesConnections`] (implemented on `Probe<T>` when it does) over
    /// [`DecidesRequestsOnly`] (on `&Probe<T>`, one auto-reference
    /// further), for the concrete type the macro names.
    pub struct Probe<T>(std::marker::PhantomData<T>);

    impl<T> Probe<T> {
        /// The probe of `T`.
        pub const NEW: Probe<T> = Probe(std::marker::PhantomData);
    }

    /// The exports of a policy that decides connections.
    pub trait DecidesConnections<T> {
        /// The `capabilities` export.
        fn capabilities(&self) -> bindings::types::Capabilities;
        /// The `decide-connection` export.
        fn decide_connection(
            &self,
            slot: &'static Slot<T>,
            connection: &bindings::host::Connection,
        ) -> bindings::types::ConnectionDecision;
    }

    impl<T: ConnectionPolicy> DecidesConnections<T> for Probe<T> {
        fn capabilities(&self) -> bindings::types::Capabilities {
            let both = bindings::types::Capabilities::REQUESTS
                | bindings::types::Capabilities::CONNECTIONS;
            if T::READS_CLIENT_HELLO {
                both | bindings::types::Capabilities::CLIENT_HELLO
            } else {
                both
            }
        }

        fn decide_connection(
            &self,
            slot: &'static Slot<T>,
            connection: &bindings::host::Connection,
        ) -> bindings::types::ConnectionDecision {
            slot.with_borrow_mut(|policy| {
                let policy = policy
                    .as_mut()
                    .expect("wasmroute policy: decide-connection called before a successful init");
                policy
                    .decide_connection(&Connection::new(crate::sys::exported_connection(
                        connection,
                    )))
                    .into_raw()
            })
        }
    }

    /// The exports of a policy that decides requests only.
    pub trait DecidesRequestsOnly<T> {
        /// The `capabilities` export.
        fn capabilities(&self) -> bindings::types::Capabilities;
        /// The `decide-connection` export, which the host never calls for
        /// such a policy (it refuses it for TCP listeners): a trap.
        fn decide_connection(
            &self,
            slot: &'static Slot<T>,
            connection: &bindings::host::Connection,
        ) -> bindings::types::ConnectionDecision;
    }

    impl<T: Policy> DecidesRequestsOnly<T> for &Probe<T> {
        fn capabilities(&self) -> bindings::types::Capabilities {
            bindings::types::Capabilities::REQUESTS
        }

        fn decide_connection(
            &self,
            _: &'static Slot<T>,
            _: &bindings::host::Connection,
        ) -> bindings::types::ConnectionDecision {
            panic!("wasmroute policy: this policy does not implement ConnectionPolicy")
        }
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
            policy
                .decide(&Request::new(crate::sys::exported_request(request)))
                .into_raw()
        })
    }
}

/// The Rust snippets of `docs/policies.md`, compiled as doc tests so that
/// they keep up with the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/policies.md")]
struct PoliciesMd;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field at the position `wit/policy.wit` documents for
    /// `pool-stats-packed`.
    #[test]
    fn packed_stats_decode_per_the_documented_layout() {
        let backend0 = [
            0xDEAD_BEEF_0000_0001,
            3 | 7 << 32,
            1500 | 250 << 32,
            99,
            1 | 4 | 4200 << 8 | 9500 << 24 | 1234 << 40,
        ];
        let backend1 = [42, 1, 0, 0, 2];
        let words: Vec<u64> = backend0.iter().chain(&backend1).copied().collect();
        let stats = unpack_stats(&words);
        assert_eq!(stats.len(), 2);
        let b = &stats[0];
        assert_eq!(
            (b.index, b.stable_id, b.weight, b.active_requests),
            (0, 0xDEAD_BEEF_0000_0001, 3, 7)
        );
        assert_eq!((b.ewma_latency_us, b.error_rate_permille), (1500, 250));
        assert_eq!((b.total_requests, b.healthy, b.ejected), (99, true, false));
        let load = b.load.expect("bit 2 says a load report is present");
        assert!((load.cpu - 0.42).abs() < 1e-6 && (load.memory - 0.95).abs() < 1e-6);
        assert_eq!(load.age_ms, 1234);
        let b = &stats[1];
        assert_eq!((b.index, b.stable_id, b.weight), (1, 42, 1));
        assert_eq!(
            (b.healthy, b.ejected, b.load.is_none()),
            (false, true, true)
        );
        assert!(
            unpack_stats(&[1, 2, 3]).is_empty(),
            "a partial record is dropped"
        );
    }
}
