//! The access log's view of a request ([`AccessEntry`]): its record begun
//! when the pipeline starts on it ([`start_line`]; the head's fields are
//! in the CPU's cache then, and the last attempt may give the head away),
//! and what the codec and the pipeline learned, which end the record when
//! the request's [`super::metrics::Outcome`] is recorded. Only made when the
//! listener's state has an access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, header, request};

use super::pipeline::{ConnInfo, Exchanged};
use super::state::ListenerState;
use crate::access_log::time::wall_time;
use crate::access_log::{AccessLog, Head, StartedLine, Tail};
use crate::config::LogFormat;

/// Begins the line of the request `head` from `client` on `listener`,
/// which the pipeline started on at `started`.
pub fn start_line(
    log: &AccessLog,
    listener: &str,
    head: &request::Parts,
    client: SocketAddr,
    started: Instant,
) -> StartedLine {
    let headers = &head.headers;
    let host = match headers.get(header::HOST) {
        Some(host) => Some(host.as_bytes()),
        None => head.uri.authority().map(|a| a.as_str().as_bytes()),
    };
    // Only `combined` writes them.
    let combined = log.config().format == LogFormat::Combined;
    let header = |name| {
        combined
            .then(|| headers.get(name).map(HeaderValue::as_bytes))
            .flatten()
    };
    log.start(&Head {
        time: wall_time(started),
        listener: listener.as_bytes(),
        client,
        method: head.method.as_str().as_bytes(),
        host,
        path: head
            .uri
            .path_and_query()
            .map_or("", PathAndQuery::as_str)
            .as_bytes(),
        protocol: head.version,
        referer: header(header::REFERER),
        user_agent: header(header::USER_AGENT),
    })
}

/// One request waiting to be logged.
#[derive(Debug)]
pub struct AccessEntry {
    /// Its line, begun.
    pub line: StartedLine,
    /// Whether the client spoke TLS, and the SNI name it sent.
    pub tls: (bool, Option<Arc<str>>),
    /// Bytes and upstream time, as the codec counted them.
    pub exchanged: Exchanged,
    /// Attempts made.
    pub attempts: u32,
    /// Time spent in the policy.
    pub decision_time: Duration,
    /// The body of an error response the proxy made itself.
    pub error: Option<Bytes>,
}

impl AccessEntry {
    /// An entry for a request served on `conn`, its line begun by
    /// [`start_line`].
    pub fn new(line: StartedLine, conn: &ConnInfo) -> AccessEntry {
        AccessEntry {
            line,
            tls: (conn.tls, conn.server_name.clone()),
            exchanged: Exchanged::default(),
            attempts: 0,
            decision_time: Duration::ZERO,
            error: None,
        }
    }

    /// Ends and queues the line of a request served with `state` (whose
    /// log began it) that went to `route` (pool id, backend index) and
    /// ended with `status` after `duration`.
    pub fn write(
        self,
        state: &ListenerState,
        route: Option<(u32, u32)>,
        status: u16,
        duration: Duration,
    ) {
        let AccessEntry {
            line,
            tls,
            exchanged,
            attempts,
            decision_time,
            error,
        } = self;
        let Some(log) = &state.access_log else {
            return;
        };
        let policy = &state.policy;
        let pool = route.and_then(|(pool, backend)| {
            let pool = policy.pools.get(pool as usize)?;
            Some((
                pool.name.as_bytes(),
                pool.backends
                    .get(backend as usize)?
                    .authority
                    .as_str()
                    .as_bytes(),
            ))
        });
        let tail = Tail {
            status,
            bytes_in: exchanged.bytes_in,
            bytes_out: exchanged.bytes_out,
            duration,
            upstream: exchanged.upstream_time,
            pool: pool.map(|(name, _)| name),
            backend: pool.map(|(_, address)| address),
            attempts,
            policy: policy.module.name.as_bytes(),
            policy_version: policy.module.version,
            decision: decision_time,
            tls: tls.0,
            sni: tls.1.as_deref().map(str::as_bytes),
            error: error.as_deref().map(<[u8]>::trim_ascii),
        };
        log.finish(line, &tail);
    }
}
