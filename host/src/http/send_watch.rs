//! The send watch of one client connection hyper serves
//! ([`ClientWatch`]): whether any response body on it has had a frame
//! taken by hyper for the listener's `send_timeout` while one was waiting
//! to be taken. A client that stops reading the whole connection (its
//! HTTP/2 connection window shut, or an HTTP/1 socket full) stops every
//! stream; [`ClientWatch::stalled`], selected with the connection, then
//! ends it, which drops every response body on it (and their upstream
//! connections, see `crate::upstream::SendStall`). A stream that stops
//! alone while others on the connection move is its upstream
//! connection's watch's to cut; the connection stays.
//!
//! One watch per connection (allocated when hyper takes the connection):
//! a body moves its state with one relaxed atomic add per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One frame taken, in [`ClientWatch`]'s state (the low half counts the
/// bodies with a frame waiting).
const TAKEN: u64 = 1 << 32;

/// The low half of the state: bodies with a frame waiting.
const WAITING: u64 = TAKEN - 1;

/// See the module docs.
#[derive(Debug)]
pub struct ClientWatch {
    /// The listener's `send_timeout` when the connection was accepted.
    pub timeout: Duration,
    /// `(frames taken << 32) + bodies with a frame waiting`.
    state: AtomicU64,
}

impl ClientWatch {
    /// A watch for a connection whose client must take frames within
    /// `timeout`.
    pub fn new(timeout: Duration) -> ClientWatch {
        ClientWatch {
            timeout,
            state: AtomicU64::new(0),
        }
    }

    /// A body on the connection was polled: it had a frame `waiting`
    /// before (now taken) and has one `now` (handed out).
    pub fn polled(&self, waiting: bool, now: bool) {
        let change = match (waiting, now) {
            (false, false) => return,
            (false, true) => 1,
            (true, false) => TAKEN - 1,
            (true, true) => TAKEN,
        };
        self.state.fetch_add(change, Ordering::Relaxed);
    }

    /// A body with a frame `waiting` is dropped.
    pub fn dropped(&self, waiting: bool) {
        if waiting {
            self.state.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Completes when no frame was taken for a whole timeout while one
    /// waited (between one and two timeouts after the client stopped).
    pub async fn stalled(&self) {
        let mut before = self.state.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(self.timeout).await;
            let after = self.state.load(Ordering::Relaxed);
            if after == before && after & WAITING != 0 {
                return;
            }
            before = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_frame_left_waiting_ends_the_connection() {
        let watch = ClientWatch::new(TIMEOUT);
        watch.polled(false, true);
        watch.polled(true, true);
        // Generous: the watch fires after one or two periods.
        let fired = tokio::time::timeout(Duration::from_secs(10), watch.stalled()).await;
        assert!(fired.is_ok());
    }

    #[tokio::test]
    async fn nothing_waiting_never_ends_it() {
        let watch = ClientWatch::new(TIMEOUT);
        watch.polled(false, true);
        watch.polled(true, false);
        watch.polled(false, true);
        watch.dropped(true);
        let fired = tokio::time::timeout(TIMEOUT * 5, watch.stalled()).await;
        assert!(fired.is_err(), "ended with no frame waiting");
    }
}
