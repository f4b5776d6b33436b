//! The little of WASI a policy gets.
//!
//! Guests built for `wasm32-wasip2` import a dozen WASI interfaces through
//! std even when they do no I/O. A policy needs none of that I/O, and
//! wasmtime-wasi's synchronous bindings would block on the tokio runtime the
//! decision runs on (a `println!` would panic the connection task). So the
//! host implements only what is pure and cheap — the clocks (`now`,
//! `resolution`) and the random interfaces — and defines every other import
//! of the component as a function that traps. A policy that prints, reads a
//! file or sleeps therefore traps on that call: the listener's `on_error`
//! handles the request and the instance is recycled, like any other trap.
//!
//! The WASI interface versions differ between toolchains, so the imports
//! are matched by interface name without the `@version` suffix, per
//! component, at compile time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentType, Linker, LinkerInstance, Lower, ResourceType};
use wasmtime::{Engine, StoreContextMut};

use super::host::HostState;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Defines the pure WASI functions the component imports, then every
/// remaining import as a trap. `linker` must be a clone private to this
/// component (definitions depend on the component's WASI versions).
pub fn link(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance_ty) = item.ty else {
            continue;
        };
        if !name.starts_with("wasi:") {
            continue;
        }
        let mut instance = linker.instance(name)?;
        let provided: &[&str] = match name.split('@').next().unwrap_or(name) {
            "wasi:clocks/monotonic-clock" => {
                monotonic_clock(&mut instance)?;
                &["now", "resolution"]
            }
            "wasi:clocks/wall-clock" => {
                wall_clock(&mut instance)?;
                &["now", "resolution"]
            }
            "wasi:random/random" => {
                random(&mut instance, "get-random")?;
                &["get-random-bytes", "get-random-u64"]
            }
            "wasi:random/insecure" => {
                random(&mut instance, "get-insecure-random")?;
                &["get-insecure-random-bytes", "get-insecure-random-u64"]
            }
            "wasi:random/insecure-seed" => {
                insecure_seed(&mut instance)?;
                &["insecure-seed"]
            }
            _ => &[],
        };
        for (export, item) in instance_ty.exports(engine) {
            if !provided.contains(&export) {
                stub(&mut instance, name, export, &item.ty)?;
            }
        }
    }
    Ok(())
}

/// A WASI resource type no function of the host produces.
struct Unprovided;

/// Defines `export` of interface `interface` as a trap (functions) or an
/// unusable resource type.
fn stub(
    instance: &mut LinkerInstance<'_, HostState>,
    interface: &str,
    export: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let what = format!("{interface}#{export}");
            instance.func_new(export, move |_, _, _, _| {
                wasmtime::bail!("`{what}` is not available to policies")
            })
        }
        ComponentItem::Resource(_) => {
            instance.resource(export, ResourceType::host::<Unprovided>(), |_, _| Ok(()))
        }
        _ => Ok(()),
    }
}

fn monotonic_clock(instance: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    instance.func_wrap("now", |_: StoreContextMut<'_, HostState>, (): ()| {
        Ok((monotonic_ns(),))
    })?;
    instance.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| {
        Ok((1u64,))
    })
}

fn wall_clock(instance: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    instance.func_wrap("now", |_: StoreContextMut<'_, HostState>, (): ()| {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok((Datetime {
            seconds: since.as_secs(),
            nanoseconds: since.subsec_nanos(),
        },))
    })?;
    instance.func_wrap("resolution", |_: StoreContextMut<'_, HostState>, (): ()| {
        Ok((Datetime {
            seconds: 0,
            nanoseconds: 1,
        },))
    })
}

/// `<prefix>-bytes(len) -> list<u8>` and `<prefix>-u64() -> u64` from the
/// instance's generator (seeded from the OS per instance; fast, not meant
/// for key material).
fn random(instance: &mut LinkerInstance<'_, HostState>, prefix: &str) -> wasmtime::Result<()> {
    instance.func_wrap(
        &format!("{prefix}-bytes"),
        |mut store: StoreContextMut<'_, HostState>, (len,): (u64,)| {
            // Bounded: a guest asking for gigabytes traps instead.
            if len > 1 << 20 {
                wasmtime::bail!("random bytes request of {len} bytes refused");
            }
            let state = store.data_mut();
            let mut bytes = Vec::with_capacity(len as usize);
            while bytes.len() < len as usize {
                bytes.extend_from_slice(&state.next_random().to_le_bytes());
            }
            bytes.truncate(len as usize);
            Ok((bytes,))
        },
    )?;
    instance.func_wrap(
        &format!("{prefix}-u64"),
        |mut store: StoreContextMut<'_, HostState>, (): ()| Ok((store.data_mut().next_random(),)),
    )
}

fn insecure_seed(instance: &mut LinkerInstance<'_, HostState>) -> wasmtime::Result<()> {
    instance.func_wrap(
        "insecure-seed",
        |mut store: StoreContextMut<'_, HostState>, (): ()| {
            let state = store.data_mut();
            Ok(((state.next_random(), state.next_random()),))
        },
    )
}

fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
