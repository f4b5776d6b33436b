//! Counters shared by every worker's instance of a listener's policy.
//!
//! A policy's fields are per worker (each worker thread has its own
//! instance). State that must be global, such as a round-robin cursor that
//! alternates exactly across workers or a request count, lives in the
//! host: a fixed number of 64-bit atomic counters per listener
//! ([`slots`]), which survive policy and config reloads of the listener
//! and start at 0 when the proxy starts. Each costs one host call per
//! operation and no allocation.
//!
//! ```no_run
//! use wasmroute_policy::shared::SharedCounter;
//! # fn f() -> Result<(), String> {
//! let requests = SharedCounter::new(0)?;
//! let before = requests.fetch_add(1); // 0, 1, 2, ... across every worker
//! # let _ = before; Ok(()) }
//! ```

use crate::sys;

/// Number of counter slots the host offers per listener.
pub fn slots() -> u32 {
    sys::counter_slots()
}

/// One shared counter slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCounter {
    slot: u32,
}

impl SharedCounter {
    /// The counter in `slot`; an error when the host has fewer slots
    /// (`slot: ...`, ready for a config key prefix).
    pub fn new(slot: u32) -> Result<Self, String> {
        let slots = slots();
        if slot >= slots {
            return Err(format!(
                "slot {slot} out of range: the host offers slots 0..{slots}"
            ));
        }
        Ok(SharedCounter { slot })
    }

    /// The slot number.
    pub fn slot(self) -> u32 {
        self.slot
    }

    /// Atomically adds `delta` and returns the value before (wrapping on
    /// overflow).
    pub fn fetch_add(self, delta: i64) -> i64 {
        sys::counter_add(self.slot, delta)
    }

    /// The current value.
    pub fn get(self) -> i64 {
        sys::counter_add(self.slot, 0)
    }
}
