//! The per-backend signal that tells whoever holds a connection to a
//! backend to close it: raised when the active check marks the backend
//! down in a pool with `on_down = "close-connections"`.
//!
//! It is a `tokio::sync::watch` of a counter (the *cut epoch*): raising it
//! bumps the counter and wakes every receiver. A long-lived exchange (a
//! proxied stream, a TCP session) takes a receiver once, when it starts
//! (a reference count, no allocation), and selects on
//! [`CutWatch::cut`] beside its I/O; idle pooled connections are closed by
//! the checker itself. The signal lives in `BackendStats`, which a reload
//! carries over by address, so connections opened under the previous
//! config are cut too.

use tokio::sync::watch;

/// The cut signal of one backend.
#[derive(Debug)]
pub struct CutSignal {
    epoch: watch::Sender<u64>,
}

impl Default for CutSignal {
    fn default() -> Self {
        CutSignal {
            epoch: watch::Sender::new(0),
        }
    }
}

impl CutSignal {
    /// Tells every current [`CutWatch`] to close its connection.
    pub fn raise(&self) {
        self.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// How many times the signal was raised.
    #[cfg(test)]
    pub fn epoch(&self) -> u64 {
        *self.epoch.borrow()
    }

    /// A watch that fires on the next [`raise`](Self::raise) (not on
    /// earlier ones).
    pub fn watch(&self) -> CutWatch {
        CutWatch {
            epoch: self.epoch.subscribe(),
        }
    }
}

/// One connection's view of its backend's [`CutSignal`].
#[derive(Debug)]
pub struct CutWatch {
    epoch: watch::Receiver<u64>,
}

impl CutWatch {
    /// Completes when the signal is raised after this watch was taken
    /// (never, if the signal is dropped first: the connection then
    /// outlives the backend's stats and is not cut).
    pub async fn cut(&mut self) {
        if self.epoch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the signal was raised since this watch was taken (or last
    /// completed [`cut`](Self::cut)).
    #[cfg(test)]
    pub fn is_cut(&self) -> bool {
        self.epoch.has_changed().unwrap_or(false)
    }
}

/// [`CutWatch::cut`] of `watch`, or never without one (a backend whose
/// pool keeps connections on down takes no watch).
pub async fn cut_or_never(watch: Option<&mut CutWatch>) {
    match watch {
        Some(watch) => watch.cut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_fires_on_raises_after_it_was_taken() {
        let signal = CutSignal::default();
        signal.raise();
        let mut watch = signal.watch();
        assert!(!watch.is_cut(), "an earlier raise does not count");
        let waiting = tokio::spawn(async move {
            watch.cut().await;
            watch
        });
        signal.raise();
        let watch = waiting.await.unwrap();
        assert!(!watch.is_cut(), "seen by cut()");
        assert_eq!(signal.epoch(), 2);
    }
}
