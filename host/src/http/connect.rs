//! Per-pool connect timeouts with one shared upstream client.
//!
//! The upstream client (and its keep-alive pool) is shared by every pool,
//! but `connect_timeout` is a pool setting. [`ConnectTimeout`] wraps the
//! client's connector and bounds each *new* connection by the timeout
//! registered for the URI's authority, which is the backend's address.
//! The registry is an [`ArcSwap`] of a small map, replaced on every config
//! commit ([`register`]) and read once per new connection only (pooled
//! connections never look it up).
//!
//! The registry is process-wide (the client is built without access to a
//! server's state); entries are keyed by backend address, so two servers
//! in one process (tests) only interfere when they share a backend
//! address, and then the one committed last wins. An address in several
//! pools of one config gets the longest of their timeouts. An address not
//! registered gets [`DEFAULT_CONNECT_TIMEOUT`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use tower_service::Service;

use crate::pool::BackendPool;

/// The connect timeout of an address no pool registered.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

static REGISTRY: LazyLock<ArcSwap<HashMap<SocketAddr, Duration>>> = LazyLock::new(ArcSwap::default);

/// Registers the connect timeouts of `pools`' backends (called on commit).
/// Entries of addresses that are not in `pools` are kept (another server
/// may use them); they are a few bytes each.
pub fn register<'a>(pools: impl IntoIterator<Item = &'a Arc<BackendPool>>) {
    let mut fresh: HashMap<SocketAddr, Duration> = HashMap::new();
    for pool in pools {
        for backend in &pool.backends {
            let timeout = pool.upstream.connect_timeout;
            let entry = fresh.entry(backend.address).or_insert(timeout);
            *entry = (*entry).max(timeout);
        }
    }
    REGISTRY.rcu(|current| {
        let mut map = HashMap::clone(current);
        map.extend(fresh.iter().map(|(a, t)| (*a, *t)));
        map
    });
}

/// The connect timeout for `uri`'s authority.
pub fn timeout_for(uri: &Uri) -> Duration {
    let address = uri
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    address
        .and_then(|a| REGISTRY.load().get(&a).copied())
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}

/// A connector that bounds `inner`'s connect by the registered timeout.
#[derive(Debug, Clone)]
pub struct ConnectTimeout<C> {
    inner: C,
}

impl<C> ConnectTimeout<C> {
    /// Wraps a connector.
    pub fn new(inner: C) -> Self {
        ConnectTimeout { inner }
    }
}

/// Why a connection could not be made in time.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?}")]
pub struct ConnectTimedOut(pub Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = timeout_for(&uri);
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(ConnectTimedOut(timeout).into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;

    #[test]
    fn registry_takes_the_longest_timeout_of_an_address() {
        let toml_pool = |name: &str, ms: u64| {
            let mut config = PoolConfig {
                name: name.into(),
                backends: vec![crate::config::BackendConfig {
                    address: "127.0.0.1:47001".parse().unwrap(),
                    weight: 1,
                }],
                ..PoolConfig::default()
            };
            config.upstream.connect_timeout = Duration::from_millis(ms);
            Arc::new(BackendPool::new(&config, None))
        };
        register([&toml_pool("a", 100), &toml_pool("b", 300)]);
        let uri: Uri = "http://127.0.0.1:47001/x".parse().unwrap();
        assert_eq!(timeout_for(&uri), Duration::from_millis(300));
        let unknown: Uri = "http://127.0.0.1:47002/x".parse().unwrap();
        assert_eq!(timeout_for(&unknown), DEFAULT_CONNECT_TIMEOUT);
    }
}
