//! Compiled components by the SHA-256 of their bytes, so that swapping
//! back to a module the server has compiled before (a rollback, a file
//! renamed away and back) costs a lookup instead of a compile (tens of
//! milliseconds). Bounded: at most [`CAPACITY`] entries, the oldest
//! dropped first. Written off the request path only (compiles run on
//! blocking tasks); readers take a snapshot without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use wasmtime::component::Component;

/// Most compiled components kept.
pub const CAPACITY: usize = 32;

/// Components and the digests of their bytes, oldest first.
type Entries = Vec<([u8; 32], Component)>;

/// The cache; clones share it.
#[derive(Clone, Default)]
pub struct ComponentCache {
    entries: Arc<ArcSwap<Entries>>,
}

impl ComponentCache {
    /// The component compiled from bytes with `digest`, if any.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Component> {
        let entries = self.entries.load();
        entries
            .iter()
            .find(|(known, _)| known == digest)
            .map(|(_, component)| component.clone())
    }

    /// Remembers `component` as compiled from bytes with `digest`.
    pub fn insert(&self, digest: [u8; 32], component: &Component) {
        self.entries.rcu(|entries| {
            let mut entries: Vec<_> = entries
                .iter()
                .filter(|(known, _)| *known != digest)
                .cloned()
                .collect();
            if entries.len() >= CAPACITY {
                entries.remove(0);
            }
            entries.push((digest, component.clone()));
            entries
        });
    }

    /// How many components are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.load().len()
    }
}
