//! The client-side stall watch of one hyper upstream connection
//! ([`SendStall`]): whether the response it carries has a body frame
//! handed to the client's connection that nobody has taken for the
//! client's `send_timeout`.
//!
//! A client that stops reading a response (an HTTP/2 stream whose window
//! stays shut, an HTTP/1 socket that stays full) stops hyper polling the
//! response body, so the body itself cannot notice time passing. The
//! watch runs in the upstream connection's driver task instead, which
//! lives as long as the connection: the body writes its progress here (one
//! relaxed store per frame), the watch samples it once per timeout and,
//! when nothing moved for a whole period while a frame waited for the
//! client, ends the driver (closing the connection to the backend) and
//! marks the connection cut, so that the body ends with an error if it is
//! ever polled again rather than end as if complete.
//!
//! A response dropped before its end (its client went away) abandons the
//! connection ([`SendStall::abandon`]): the watch ends the driver at once.
//!
//! One watch per upstream connection (built when it is opened, pooled with
//! it), no allocation or timer per request: a response registers with
//! [`SendStall::watch`] and leaves with [`SendStall::unwatch`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug, Default)]
pub struct SendStall {
    /// `(sequence << 1) | waiting`: the sequence moves on at every poll of
    /// the body that changes anything; `waiting` is set while a frame the
    /// body handed out has not been taken.
    state: AtomicU64,
    /// The watched response's send timeout in milliseconds; 0 while no
    /// response is watched.
    timeout_ms: AtomicU64,
    /// The watch fired: the connection was closed under the response.
    cut: AtomicBool,
    /// Wakes the watch when a response starts.
    started: Notify,
}

impl SendStall {
    /// A response starts on this connection, to a client that must take
    /// each frame within `timeout`. Returns the sequence the response
    /// counts on from.
    pub fn watch(&self, timeout: Duration) -> u64 {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.timeout_ms.store(ms, Ordering::Relaxed);
        self.started.notify_one();
        self.state.load(Ordering::Relaxed) >> 1
    }

    /// The response's body moved to `sequence`; `waiting`: it has handed
    /// a frame out that is not taken yet.
    pub fn progress(&self, sequence: u64, waiting: bool) {
        let state = (sequence << 1) | u64::from(waiting);
        self.state.store(state, Ordering::Relaxed);
    }

    /// The response ended (its body is dropped) at `sequence`.
    pub fn unwatch(&self, sequence: u64) {
        self.timeout_ms.store(0, Ordering::Relaxed);
        self.progress(sequence, false);
    }

    /// The response was dropped before its end (the client went away):
    /// the connection cannot carry another, the watch closes it now.
    pub fn abandon(&self) {
        self.cut.store(true, Ordering::Release);
        self.started.notify_one();
    }

    /// Whether the watch closed the connection under its response (or its
    /// response was abandoned).
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Completes when a watched response has kept a frame waiting for
    /// its client for a whole send timeout (the connection is then marked
    /// cut) or was abandoned; pending otherwise, for as long as the
    /// connection lives.
    pub async fn stalled(&self) {
        loop {
            if self.is_cut() {
                return;
            }
            let ms = self.timeout_ms.load(Ordering::Relaxed);
            let before = self.state.load(Ordering::Relaxed);
            if ms == 0 {
                self.started.notified().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                // A new response, or an abandoned one: look again.
                () = self.started.notified() => continue,
            }
            let watched = self.timeout_ms.load(Ordering::Relaxed) != 0;
            let after = self.state.load(Ordering::Relaxed);
            if watched && after == before && after & 1 == 1 {
                self.cut.store(true, Ordering::Release);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_frame_left_waiting_for_a_whole_timeout_cuts() {
        let stall = SendStall::default();
        let sequence = stall.watch(TIMEOUT);
        stall.progress(sequence + 1, true);
        // Generous: the watch fires after one or two periods.
        tokio::time::timeout(Duration::from_secs(10), stall.stalled())
            .await
            .expect("the watch fires");
        assert!(stall.is_cut());
    }

    #[tokio::test]
    async fn waiting_on_the_backend_or_no_response_never_cuts() {
        let stall = SendStall::default();
        let sequence = stall.watch(TIMEOUT);
        // The body was polled and waits for the backend: nothing waits
        // for the client, however long that takes.
        stall.progress(sequence + 1, false);
        let watch = stall.stalled();
        tokio::pin!(watch);
        let fired = tokio::time::timeout(TIMEOUT * 5, &mut watch).await;
        assert!(
            fired.is_err() && !stall.is_cut(),
            "cut while the backend was slow"
        );
        // A frame waits, but the response ends: nothing is watched.
        stall.progress(sequence + 2, true);
        stall.unwatch(sequence + 3);
        let fired = tokio::time::timeout(TIMEOUT * 5, &mut watch).await;
        assert!(fired.is_err() && !stall.is_cut(), "cut with no response");
        // The next response counts on from where the last one stopped.
        assert_eq!(stall.watch(TIMEOUT), sequence + 3);
        stall.abandon();
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut watch).await;
        assert!(ended.is_ok(), "an abandoned response ends the connection");
    }
}
