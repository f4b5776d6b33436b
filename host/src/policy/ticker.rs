//! The epoch ticker: the clock every guest deadline counts in.
//!
//! Wasmtime stops a store whose deadline epoch has passed, and the engine's
//! epoch moves only when something increments it. A thread that did so
//! every 1 ms ([`EPOCH_TICK`]) woke a thousand times a second, on an idle
//! proxy too, though nearly every decision (about 1 us) ends long before
//! any tick could matter to it.
//!
//! So the ticker ticks every 1 ms only while a guest call is in flight
//! (some worker thread is inside [`in_call`]), and every [`IDLE_TICK`]
//! otherwise. Whenever it wakes it moves the epoch by the whole ticks that
//! have passed since it started, so one epoch is still 1 ms of wall time
//! and every deadline counted in ticks stays what it was; only how soon a
//! passed deadline is seen changes. A call that is still running when the
//! ticker next looks (at most [`IDLE_TICK`] after it started) gets 1 ms
//! ticks from then on, so a looping guest is stopped at most
//! [`IDLE_TICK`] later than before, and a 1 us decision costs two
//! uncontended stores to its thread's own cache line.
//!
//! Each thread that calls guests owns one of [`SLOTS`] padded counters of
//! calls in flight while it lives; threads beyond those share one with
//! atomic increments.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::EPOCH_TICK;

/// How long the ticker sleeps while no guest call is in flight.
pub const IDLE_TICK: Duration = Duration::from_millis(10);

/// Threads that get a counter of their own.
const SLOTS: usize = 64;

/// The most ticks one wake-up catches up (a machine back from a suspend
/// need not spin through hours of them: deadlines are relative).
const MAX_CATCH_UP: u64 = 1_000;

/// A counter of guest calls in flight, alone on its cache line.
#[repr(align(128))]
struct Slot(AtomicU32);

/// The counters of calls in flight.
struct Registry {
    owned: [Slot; SLOTS],
    /// The counter of the threads that found every owned slot taken.
    shared: Slot,
    /// Bit `i`: `owned[i]` belongs to a live thread.
    taken: AtomicU64,
}

static REGISTRY: Registry = Registry::new();

impl Registry {
    const fn new() -> Registry {
        Registry {
            owned: [const { Slot(AtomicU32::new(0)) }; SLOTS],
            shared: Slot(AtomicU32::new(0)),
            taken: AtomicU64::new(0),
        }
    }

    /// A free owned slot, now taken (`None`: all are).
    fn claim(&self) -> Option<usize> {
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            let free = (!taken).trailing_zeros() as usize;
            if free >= SLOTS {
                return None;
            }
            let with = taken | (1 << free);
            match self.taken.compare_exchange_weak(
                taken,
                with,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(free),
                Err(now) => taken = now,
            }
        }
    }

    fn release(&self, index: usize) {
        self.taken.fetch_and(!(1 << index), Ordering::Release);
    }

    /// One more call in flight on `slot` (`Some`: owned by this thread, so
    /// no read-modify-write is needed; `None`: the shared one).
    fn enter(&self, slot: Option<usize>) {
        match slot {
            Some(index) => {
                let count = &self.owned[index].0;
                count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            None => {
                self.shared.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn leave(&self, slot: Option<usize>) {
        match slot {
            Some(index) => {
                let count = &self.owned[index].0;
                count.store(count.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            }
            None => {
                self.shared.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether some thread is inside a guest call.
    fn in_flight(&self) -> bool {
        let taken = self.taken.load(Ordering::Relaxed);
        let owned = (0..SLOTS)
            .filter(|&i| taken & (1 << i) != 0)
            .any(|i| self.owned[i].0.load(Ordering::Relaxed) != 0);
        owned || self.shared.0.load(Ordering::Relaxed) != 0
    }
}

/// A thread's claim on a slot of a registry; given back when the thread
/// ends.
struct Claim {
    registry: &'static Registry,
    /// `None`: not claimed yet; `Some(None)`: the shared slot.
    index: Cell<Option<Option<usize>>>,
}

impl Claim {
    const fn of(registry: &'static Registry) -> Claim {
        Claim {
            registry,
            index: Cell::new(None),
        }
    }

    /// The thread's slot, claimed on first use.
    fn index(&self) -> Option<usize> {
        if let Some(index) = self.index.get() {
            return index;
        }
        let index = self.registry.claim();
        self.index.set(Some(index));
        index
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(Some(index)) = self.index.get() {
            self.registry.release(index);
        }
    }
}

thread_local! {
    static CLAIM: Claim = const { Claim::of(&REGISTRY) };
}

/// A guest call in flight on this thread, from [`in_call`] until dropped.
pub struct InCall {
    slot: Option<usize>,
}

/// Marks a guest call in flight on this thread until the guard is dropped,
/// so that the ticker ticks every 1 ms meanwhile.
pub fn in_call() -> InCall {
    // A thread being torn down has no claim left: the shared slot.
    let slot = CLAIM.try_with(Claim::index).unwrap_or(None);
    REGISTRY.enter(slot);
    InCall { slot }
}

impl Drop for InCall {
    fn drop(&mut self) {
        REGISTRY.leave(self.slot);
    }
}

/// How long the ticker sleeps next.
fn pause() -> Duration {
    match REGISTRY.in_flight() {
        true => EPOCH_TICK,
        false => IDLE_TICK,
    }
}

/// Ticks to add when `due` whole ticks have passed since the start and
/// `ticked` were added: at least one per wake-up, at most
/// [`MAX_CATCH_UP`].
fn ticks_to_add(due: u64, ticked: u64) -> u64 {
    due.saturating_sub(ticked).clamp(1, MAX_CATCH_UP)
}

/// Starts the engine's ticker thread, which stops once the last clone of
/// the engine is gone.
pub fn spawn(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmroute-epoch".into())
        .spawn(move || {
            let start = Instant::now();
            let tick = EPOCH_TICK.as_nanos();
            let mut ticked = 0;
            loop {
                std::thread::sleep(pause());
                let Some(engine) = weak.upgrade() else { return };
                let due = u64::try_from(start.elapsed().as_nanos() / tick).unwrap_or(u64::MAX);
                let add = ticks_to_add(due, ticked);
                for _ in 0..add {
                    engine.increment_epoch();
                }
                ticked = due.max(ticked + add);
            }
        })
        .expect("spawning the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> &'static Registry {
        Box::leak(Box::new(Registry::new()))
    }

    #[test]
    fn a_call_in_flight_is_seen_until_it_ends() {
        let registry = registry();
        let claim = Claim::of(registry);
        let slot = claim.index();
        assert_eq!(slot, Some(0));
        assert!(!registry.in_flight());
        registry.enter(slot);
        assert!(registry.in_flight());
        registry.enter(slot);
        registry.leave(slot);
        assert!(registry.in_flight(), "the nested call is still in flight");
        registry.leave(slot);
        assert!(!registry.in_flight());
    }

    #[test]
    fn threads_beyond_the_owned_slots_share_one() {
        let registry = registry();
        let claims: Vec<Claim> = (0..SLOTS + 2).map(|_| Claim::of(registry)).collect();
        let slots: Vec<Option<usize>> = claims.iter().map(Claim::index).collect();
        assert_eq!(slots[..SLOTS], (0..SLOTS).map(Some).collect::<Vec<_>>()[..]);
        assert_eq!(slots[SLOTS..], [None, None]);
        registry.enter(None);
        registry.enter(None);
        registry.leave(None);
        assert!(registry.in_flight());
        registry.leave(None);
        assert!(!registry.in_flight());
    }

    #[test]
    fn a_claim_gives_its_slot_back_when_dropped() {
        let registry = registry();
        let first = Claim::of(registry);
        let second = Claim::of(registry);
        assert_eq!((first.index(), second.index()), (Some(0), Some(1)));
        drop(first);
        assert_eq!(Claim::of(registry).index(), Some(0), "the freed slot");
        // A slot whose thread ended is not counted, whatever it held.
        registry.owned[1].0.store(1, Ordering::Relaxed);
        assert!(registry.in_flight());
        drop(second);
        assert!(!registry.in_flight());
    }

    #[test]
    fn a_wake_up_catches_up_the_ticks_that_passed() {
        assert_eq!(ticks_to_add(10, 0), 10, "an idle sleep of 10 ticks");
        assert_eq!(ticks_to_add(11, 10), 1);
        assert_eq!(ticks_to_add(10, 10), 1, "at least one per wake-up");
        assert_eq!(ticks_to_add(10, 12), 1, "ahead of the clock: still one");
        assert_eq!(ticks_to_add(u64::MAX, 0), MAX_CATCH_UP);
    }

    /// `(module (func (export "spin") (loop br 0)))`, as bytes.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // one function of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
    ];

    /// The ticker moves the epoch while a call is in flight: a guest that
    /// loops with a deadline a few ticks away is interrupted.
    #[test]
    fn a_looping_guest_is_interrupted() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("an engine");
        spawn(&engine);
        let module = wasmtime::Module::new(&engine, SPIN).expect("the module compiles");
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(3);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .expect("the export");
        let _call = in_call();
        let error = spin
            .call(&mut store, ())
            .expect_err("the loop is interrupted");
        assert_eq!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
    }
}
