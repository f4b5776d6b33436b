//! Waiting for a condition instead of sleeping: poll it every few
//! milliseconds until it holds or a deadline passes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(5);

/// Polls `condition` until it is true (returns true) or `within` has
/// passed (returns false).
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`eventually`] with an async condition (e.g. one that sends a
/// request); the condition itself is not time-bounded, bound it inside.
pub async fn eventually_async<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
