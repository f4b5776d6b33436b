//! Shared counters: the host interface through which a listener's policy
//! instances (one per worker) share state. A fixed array of atomics per
//! listener, kept across policy and config reloads of the listener (by
//! name), so a shared round-robin cursor or a request count survives a
//! module swap. No lock, no allocation per call.

use std::sync::atomic::{AtomicI64, Ordering};

/// Counter slots per listener (`counter-slots` in the WIT).
pub const COUNTER_SLOTS: usize = 64;

/// The counters of one listener.
#[derive(Debug)]
pub struct SharedCounters {
    slots: [AtomicI64; COUNTER_SLOTS],
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            slots: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }
}

impl SharedCounters {
    /// Adds `delta` to `slot` (wrapping) and returns the previous value; 0
    /// and no change for a slot out of range.
    pub fn add(&self, slot: u32, delta: i64) -> i64 {
        match self.slots.get(slot as usize) {
            Some(counter) => counter.fetch_add(delta, Ordering::Relaxed),
            None => 0,
        }
    }

    /// The current value of `slot` (0 out of range).
    pub fn get(&self, slot: u32) -> i64 {
        self.slots
            .get(slot as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_returns_previous_and_ignores_bad_slots() {
        let c = SharedCounters::default();
        assert_eq!(c.add(3, 5), 0);
        assert_eq!(c.add(3, -2), 5);
        assert_eq!(c.get(3), 3);
        assert_eq!(c.add(COUNTER_SLOTS as u32, 1), 0);
        assert_eq!(c.get(COUNTER_SLOTS as u32), 0);
        c.add(0, i64::MAX);
        assert_eq!(c.add(0, 1), i64::MAX);
        assert_eq!(c.get(0), i64::MIN);
    }
}
