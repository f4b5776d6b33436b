//! A native test host: unit-test a policy's routing with `cargo test`,
//! without building it for Wasm or starting a proxy. Native builds only.
//!
//! A [`TestHost`] holds what the proxy would hand a policy: the listener's
//! pools of [`TestBackend`]s, its `policy_config` and its shared counters.
//! [`TestHost::init`] creates an instance of a policy in it (a
//! [`TestPolicy`]), which decides [`TestRequest`]s and
//! [`TestConnection`]s. While it runs, every host call the SDK makes
//! ([`PoolId::candidates`], [`PoolId::least_active`], [`PoolId::stats`],
//! the [`Request`] accessors, [`random`](crate::random),
//! [`shared`](crate::shared)) is answered by the test host, by the real
//! host's rules: candidates are the healthy backends not tried yet (all
//! healthy ones once every healthy one was tried), least-active breaks
//! ties in pool order by `tie_breaker % ties`, key hashes are FNV-1a of
//! the same bytes, stats go through the same packed layout. A unit test of
//! the proxy compares these answers with its own.
//!
//! ```
//! use wasmroute_policy::testing::{TestBackend, TestHost, TestRequest};
//! use wasmroute_policy::{Decision, InitContext, Policy, PoolId, Request};
//!
//! /// `/video...` to the `video` pool, the rest to the first; least busy.
//! struct Split {
//!     video: PoolId,
//! }
//!
//! impl Policy for Split {
//!     fn init(ctx: &InitContext) -> Result<Self, String> {
//!         Ok(Split { video: ctx.pool("video")? })
//!     }
//!     fn decide(&mut self, req: &Request) -> Decision {
//!         if req.path() == "/admin" {
//!             return Decision::respond(403).into();
//!         }
//!         let pool = if req.path().starts_with("/video") { self.video } else { PoolId::DEFAULT };
//!         Decision::forward_or_no_backend(pool, pool.least_active(req, 0))
//!     }
//! }
//!
//! let host = TestHost::new()
//!     .pool("web", [TestBackend::up().active(2), TestBackend::up().active(1)])
//!     .pool("video", [TestBackend::down(), TestBackend::up()]);
//! let mut policy = host.init::<Split>().expect("init succeeds");
//! assert_eq!(policy.decide(&TestRequest::get("/")).target(), Some((PoolId(0), 1)));
//! assert_eq!(policy.decide(&TestRequest::get("/video/1")).target(), Some((PoolId(1), 1)));
//! assert_eq!(policy.decide(&TestRequest::get("/admin")).status(), Some(403));
//! // A retry avoids the tried backend while another is healthy.
//! let retry = TestRequest::get("/").retry_after(&[(PoolId(0), 1)]);
//! assert_eq!(policy.decide(&retry).target(), Some((PoolId(0), 0)));
//! // Backend state changes between decisions.
//! policy.host().update(PoolId(1), 1, |b| b.healthy(false));
//! assert_eq!(policy.decide(&TestRequest::get("/video/1")).status(), Some(503));
//! // Without `video`, init fails as in the proxy.
//! let err = TestHost::new().pool("web", [TestBackend::up()]).init::<Split>().err();
//! assert!(err.unwrap().starts_with("unknown pool `video`"));
//! ```
//!
//! Randomness is deterministic: the host's generator starts from the
//! host's seed ([`TestHost::DEFAULT_SEED`], or [`TestHost::seed`]), and
//! each instance seeds its own [`random`](crate::random) from it on first
//! use, as a Wasm instance does; the same test draws the same numbers on
//! every run.

mod backend;
mod request;

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;

use crate::sys::{self, HostState, Instance};
use crate::{
    Connection, ConnectionDecision, ConnectionPolicy, Decision, InitContext, Policy, PoolId,
    Request,
};

pub use crate::ConfigValue;
pub use backend::TestBackend;
pub use request::{TestConnection, TestRequest};

/// The pools, config and shared counters of one listener, and the host
/// generator, for native tests of a policy. Every instance created from
/// one host ([`init`](Self::init) called again) shares its backends and
/// counters, like the workers of one listener; a clone is an independent
/// copy of the host as it is (to build variants of one setup).
#[derive(Debug)]
pub struct TestHost {
    state: Rc<RefCell<HostState>>,
}

impl Clone for TestHost {
    fn clone(&self) -> Self {
        let copy = self.state.borrow().clone();
        TestHost {
            state: Rc::new(RefCell::new(copy)),
        }
    }
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// The seed of a new host's generator.
    pub const DEFAULT_SEED: u64 = 0x5eed_7e57_0000_0001;

    /// A host without pools or config, seeded with
    /// [`DEFAULT_SEED`](Self::DEFAULT_SEED).
    pub fn new() -> TestHost {
        TestHost {
            state: Rc::new(RefCell::new(HostState::new(Self::DEFAULT_SEED))),
        }
    }

    /// Restarts the host's generator from `seed`.
    pub fn seed(self, seed: u64) -> Self {
        self.state.borrow_mut().rng = seed | 1;
        self
    }

    /// Adds a pool (the first added is the default pool, `PoolId(0)`).
    pub fn pool(self, name: &str, backends: impl IntoIterator<Item = TestBackend>) -> Self {
        {
            let mut state = self.state.borrow_mut();
            let index = state.pools.len();
            let backends = backends.into_iter().enumerate();
            let placed = backends.map(|(i, b)| b.place(index, i)).collect();
            state.names.push(name.to_owned());
            state.pools.push(placed);
        }
        self
    }

    /// Adds a `policy_config` entry (`"/video"`, `5`, `0.5`, `true`, or a
    /// `Vec<String>` for an array); dotted keys for nested tables.
    pub fn config(self, key: &str, value: impl Into<ConfigValue>) -> Self {
        let entry = (key.to_owned(), value.into());
        self.state.borrow_mut().config.push(entry);
        self
    }

    /// Creates an instance of `P` in this host: its `init`, with the pools
    /// and config added so far.
    pub fn init<P: Policy>(&self) -> Result<TestPolicy<P>, String> {
        let instance = Instance {
            host: Rc::clone(&self.state),
            rng: Rc::new(Cell::new(0)),
        };
        let ctx = {
            let state = self.state.borrow();
            InitContext::new(state.names.clone(), state.config.clone())
        };
        let policy = {
            let _installed = sys::install(instance.clone());
            P::init(&ctx)?
        };
        let host = TestHost {
            state: Rc::clone(&self.state),
        };
        Ok(TestPolicy {
            policy,
            instance,
            host,
        })
    }

    /// Backend `index` of `pool`; panics for an unknown backend.
    fn backend(&self, pool: PoolId, index: u32) -> RefMut<'_, TestBackend> {
        RefMut::map(self.state.borrow_mut(), |state| {
            state
                .pools
                .get_mut(pool.0 as usize)
                .and_then(|backends| backends.get_mut(index as usize))
                .unwrap_or_else(|| panic!("TestHost: no backend {index} in pool {}", pool.0))
        })
    }

    /// Changes backend `index` of `pool`:
    /// `host.update(PoolId(0), 1, |b| b.healthy(false).active(3))`.
    pub fn update(
        &self,
        pool: PoolId,
        index: u32,
        change: impl FnOnce(TestBackend) -> TestBackend,
    ) {
        let mut backend = self.backend(pool, index);
        *backend = change(backend.clone());
    }

    /// The stable id the host reports for backend `index` of `pool`.
    pub fn stable_id(&self, pool: PoolId, index: u32) -> u64 {
        self.backend(pool, index).id()
    }

    /// The value of shared counter `slot` (0 out of range).
    pub fn counter(&self, slot: u32) -> i64 {
        let state = self.state.borrow();
        state.counters.get(slot as usize).copied().unwrap_or(0)
    }

    /// Sets shared counter `slot` (as earlier decisions or another
    /// listener's policy would have left it). Panics out of range.
    pub fn set_counter(&self, slot: u32, value: i64) {
        let mut state = self.state.borrow_mut();
        let slots = state.counters.len();
        let counter = state.counters.get_mut(slot as usize);
        *counter.unwrap_or_else(|| panic!("TestHost: slot {slot} out of range 0..{slots}")) = value;
    }
}

/// One instance of policy `P` in a [`TestHost`], as a worker of the proxy
/// holds it: its `decide` calls see the host's current state.
#[derive(Debug)]
pub struct TestPolicy<P> {
    policy: P,
    instance: Instance,
    host: TestHost,
}

impl<P: Policy> TestPolicy<P> {
    /// The policy's decision for `req`.
    pub fn decide(&mut self, req: &TestRequest) -> Decision {
        let _installed = sys::install(self.instance.clone());
        self.policy.decide(&Request::new(&req.data))
    }

    /// The host the instance runs in, to change its backends or read its
    /// counters between decisions.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// The policy value `init` returned.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The policy value, mutably.
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }
}

impl<P: ConnectionPolicy> TestPolicy<P> {
    /// The policy's decision for `conn`. As on the host, a policy that
    /// does not read the ClientHello sees none.
    pub fn decide_connection(&mut self, conn: &TestConnection) -> ConnectionDecision {
        let _installed = sys::install(self.instance.clone());
        if P::READS_CLIENT_HELLO {
            self.policy.decide_connection(&Connection::new(&conn.data))
        } else {
            let mut data = conn.data.clone();
            data.hello = None;
            self.policy.decide_connection(&Connection::new(&data))
        }
    }
}

impl From<&str> for ConfigValue {
    fn from(text: &str) -> Self {
        ConfigValue::Text(text.to_owned())
    }
}

impl From<i64> for ConfigValue {
    fn from(n: i64) -> Self {
        ConfigValue::Integer(n)
    }
}

impl From<f64> for ConfigValue {
    fn from(x: f64) -> Self {
        ConfigValue::Float(x)
    }
}

impl From<bool> for ConfigValue {
    fn from(b: bool) -> Self {
        ConfigValue::Boolean(b)
    }
}

impl From<Vec<String>> for ConfigValue {
    fn from(items: Vec<String>) -> Self {
        ConfigValue::TextList(items)
    }
}

#[cfg(test)]
mod tests;
