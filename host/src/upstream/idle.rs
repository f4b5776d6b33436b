//! The idle keep-alive connections of one backend: a lock-free queue
//! ([`IdleConnections`]) per connection kind. A request pops one, and
//! gives it back when its response has been read to the end; no lock, no
//! hashing and no lookup by address on the request path. A backend that a
//! new config replaces is retired ([`IdleConnections::retire`]): its idle
//! connections close, and so does each one its last requests give back.
//!
//! Idle connections live at most [`IDLE_TIMEOUT`]: a checkout skips older
//! ones and the pool's sweeper ([`IdleConnections::sweep`]) closes them
//! when there is no traffic. At most [`MAX_IDLE`] are kept per backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

/// How long a connection may stay idle in a backend's pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle connections kept per backend; more are closed.
pub const MAX_IDLE: usize = 1024;

/// A connection that can wait in an [`IdleConnections`] queue.
pub trait Reusable {
    /// Whether it is known to be unusable, checked without blocking or a
    /// system call (on every checkout and return).
    fn is_closed(&mut self) -> bool;

    /// [`is_closed`](Self::is_closed), and whether the peer closed it,
    /// at the cost of a system call (by the idle sweeper).
    fn probe_closed(&mut self) -> bool {
        self.is_closed()
    }
}

struct Idle<C> {
    connection: C,
    since: Instant,
}

/// The idle keep-alive connections of one backend, of one kind: hyper's
/// ([`Connection`]) or the fast path's (`super::fast::upstream`).
pub struct IdleConnections<C> {
    queue: SegQueue<Idle<C>>,
    len: AtomicUsize,
    /// The most kept: [`MAX_IDLE`], or 0 for connections that belong to
    /// one client connection (a PROXY header's) and are never kept, or
    /// once [retired](Self::retire).
    cap: AtomicUsize,
}

impl<C> Default for IdleConnections<C> {
    fn default() -> Self {
        IdleConnections::with_cap(MAX_IDLE)
    }
}

impl<C> IdleConnections<C> {
    /// Keeps at most `cap` connections (0: none, every one put is closed).
    pub fn with_cap(cap: usize) -> Self {
        IdleConnections {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
        }
    }
}

impl<C> std::fmt::Debug for IdleConnections<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

impl<C: Reusable> IdleConnections<C> {
    /// The oldest idle connection that is still open and fresh.
    pub fn take(&self) -> Option<C> {
        while let Some(mut idle) = self.pop() {
            if idle.usable() {
                return Some(idle.connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next request (closes it when the pool
    /// is full, keeps none, or the backend closed it). The cap is checked without a
    /// lock, so racing workers may overshoot it by a few.
    pub fn put(&self, mut connection: C) {
        if self.len() < self.cap.load(Ordering::Relaxed) && !connection.is_closed() {
            self.push(Idle {
                connection,
                since: Instant::now(),
            });
            // A retire that raced with this put left it in: close it.
            if self.cap.load(Ordering::SeqCst) == 0 {
                self.clear();
            }
        }
    }

    /// Moves the idle connections into `next` (the same backend's queue
    /// in the config that replaces this one), keeping their age; closes
    /// those that are stale or that `next` has no room for.
    pub fn hand_over(&self, next: &IdleConnections<C>) {
        while let Some(mut idle) = self.pop() {
            if idle.usable() && next.len() < next.cap.load(Ordering::Relaxed) {
                next.push(idle);
            }
        }
    }

    /// Keeps no connection from now on: closes the idle ones, and each
    /// one given back later (when its exchange is over). For a backend
    /// that a new config replaced.
    pub fn retire(&self) {
        self.cap.store(0, Ordering::SeqCst);
        self.clear();
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] or
    /// closed by the backend; keeps the others, in order.
    pub fn sweep(&self) {
        for _ in 0..self.len() {
            match self.pop() {
                Some(mut idle) => {
                    if idle.usable() && !idle.connection.probe_closed() {
                        self.push(idle);
                    }
                }
                None => return,
            }
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        while self.pop().is_some() {}
    }

    fn pop(&self) -> Option<Idle<C>> {
        let idle = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(idle)
    }

    fn push(&self, idle: Idle<C>) {
        self.len.fetch_add(1, Ordering::Relaxed);
        self.queue.push(idle);
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C: Reusable> Idle<C> {
    fn usable(&mut self) -> bool {
        !self.connection.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{IdleConnections, Reusable};

    /// A connection whose drop (close) the test can see.
    struct Probe(#[expect(dead_code, reason = "held for its strong count")] Arc<()>);

    impl Reusable for Probe {
        fn is_closed(&mut self) -> bool {
            false
        }
    }

    #[test]
    fn a_retired_queue_closes_its_idle_connections_and_keeps_none_given_back() {
        let alive = Arc::new(());
        let idle = IdleConnections::default();
        idle.put(Probe(Arc::clone(&alive)));
        idle.put(Probe(Arc::clone(&alive)));
        assert_eq!((idle.len(), Arc::strong_count(&alive)), (2, 3));
        idle.retire();
        assert_eq!((idle.len(), Arc::strong_count(&alive)), (0, 1));
        idle.put(Probe(Arc::clone(&alive)));
        assert_eq!((idle.len(), Arc::strong_count(&alive)), (0, 1));
        assert!(idle.take().is_none());
    }

    #[test]
    fn a_handover_moves_the_idle_connections_up_to_the_next_queue_cap() {
        let alive = Arc::new(());
        let (old, next) = (IdleConnections::default(), IdleConnections::with_cap(2));
        for _ in 0..3 {
            old.put(Probe(Arc::clone(&alive)));
        }
        old.hand_over(&next);
        assert_eq!((old.len(), next.len()), (0, 2));
        assert_eq!(Arc::strong_count(&alive), 3);
    }
}
