//! One type over the interface versions the host serves: a module is a
//! 0.3 module (`host.rs`) or a 0.2 one (`v02.rs`), told apart once, when
//! it is compiled, by which world its exports fit.

use wasmtime::Store;
use wasmtime::component::{InstancePre, Resource};

use super::connection::ConnectionHandle;
use super::host::exports::{Decision, PolicyBindings, PolicyBindingsPre};
use super::host::{Capabilities, ConfigValue, ConnectionDecision, HostState, RequestHandle};
use super::v02::exports as v02;

/// A compiled module with its imports resolved, of either version.
#[derive(Clone)]
pub(super) enum BindingsPre {
    /// `wasmroute:policy@0.3`.
    V03(PolicyBindingsPre<HostState>),
    /// `wasmroute:policy@0.2`: HTTP decisions only.
    V02(v02::PolicyBindingsPre<HostState>),
}

/// The exports of one instance.
pub(super) enum Bindings {
    V03(PolicyBindings),
    V02(v02::PolicyBindings),
}

impl BindingsPre {
    /// The bindings of whichever world the component's exports fit; the
    /// 0.3 world's error when neither does.
    pub(super) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<BindingsPre> {
        match PolicyBindingsPre::new(pre.clone()) {
            Ok(current) => Ok(BindingsPre::V03(current)),
            Err(error) => match v02::PolicyBindingsPre::new(pre) {
                Ok(old) => Ok(BindingsPre::V02(old)),
                Err(_) => Err(error),
            },
        }
    }

    /// The interface version the module was built against.
    pub(super) fn interface(&self) -> &'static str {
        match self {
            BindingsPre::V03(_) => "0.3",
            BindingsPre::V02(_) => "0.2",
        }
    }

    pub(super) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            BindingsPre::V03(pre) => Bindings::V03(pre.instantiate(store)?),
            BindingsPre::V02(pre) => Bindings::V02(pre.instantiate(store)?),
        })
    }
}

impl Bindings {
    pub(super) fn call_init(
        &self,
        store: &mut Store<HostState>,
        pools: &[String],
        config: &[(String, ConfigValue)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Bindings::V03(b) => b.call_init(store, pools, config),
            Bindings::V02(b) => b.call_init(store, pools, config),
        }
    }

    /// What the module decides; a 0.2 module decides requests only.
    pub(super) fn call_capabilities(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Capabilities> {
        match self {
            Bindings::V03(b) => b.call_capabilities(store),
            Bindings::V02(_) => Ok(Capabilities::REQUESTS),
        }
    }

    pub(super) fn call_decide(
        &self,
        store: &mut Store<HostState>,
        request: Resource<RequestHandle>,
    ) -> wasmtime::Result<Decision> {
        match self {
            Bindings::V03(b) => b.call_decide(store, request),
            Bindings::V02(b) => b.call_decide(store, request),
        }
    }

    /// Never reached for a 0.2 module: a listener binds only modules whose
    /// capabilities include its decisions.
    pub(super) fn call_decide_connection(
        &self,
        store: &mut Store<HostState>,
        connection: Resource<ConnectionHandle>,
    ) -> wasmtime::Result<ConnectionDecision> {
        match self {
            Bindings::V03(b) => b.call_decide_connection(store, connection),
            Bindings::V02(_) => Err(wasmtime::format_err!(
                "a wasmroute:policy@0.2 module does not decide connections"
            )),
        }
    }
}
