//! The access log's view of a request ([`AccessEntry`]): the parts of its
//! head taken when the pipeline starts on it (the last attempt may give
//! the head away), and what the codec and the pipeline learned, written
//! as one line when the request's [`super::metrics::Outcome`] is
//! recorded. Only made when the listener's state has an access log.
//!
//! Header values and the path are reference-counted copies of the parsed
//! request's, not new strings; the line itself is the one allocation
//! (`crate::access_log::AccessLog::write`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Version, header, request};

use super::pipeline::{ConnInfo, Exchanged};
use super::state::ListenerState;
use crate::access_log::Record;

/// The request head as the access log writes it.
#[derive(Debug)]
pub struct RequestLine {
    time: SystemTime,
    method: Method,
    path: Option<PathAndQuery>,
    host: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    version: Version,
}

impl RequestLine {
    /// Takes what the log needs of `head`, now.
    pub fn of(head: &request::Parts) -> RequestLine {
        let headers = &head.headers;
        let host = headers.get(header::HOST).cloned().or_else(|| {
            let authority = head.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        RequestLine {
            time: SystemTime::now(),
            method: head.method.clone(),
            path: head.uri.path_and_query().cloned(),
            host,
            referer: headers.get(header::REFERER).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            version: head.version,
        }
    }
}

/// One request waiting to be logged.
#[derive(Debug)]
pub struct AccessEntry {
    /// Its head.
    pub request: RequestLine,
    /// The listener state it was served with (holds the log).
    pub state: Arc<ListenerState>,
    /// The client.
    pub peer: SocketAddr,
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
    /// An entry for a request served on `conn` with `state`.
    pub fn new(request: RequestLine, state: &Arc<ListenerState>, conn: &ConnInfo) -> AccessEntry {
        AccessEntry {
            request,
            state: Arc::clone(state),
            peer: conn.peer,
            tls: (conn.tls, conn.server_name.clone()),
            exchanged: Exchanged::default(),
            attempts: 0,
            decision_time: Duration::ZERO,
            error: None,
        }
    }

    /// Writes the line of a request that went to `route` (pool id,
    /// backend index) and ended with `status` after `duration`.
    pub fn write(&self, route: Option<(u32, u32)>, status: u16, duration: Duration) {
        let Some(log) = &self.state.access_log else {
            return;
        };
        let policy = &self.state.policy;
        let pool = route.and_then(|(pool, backend)| {
            let pool = policy.pools.get(pool as usize)?;
            Some((
                pool.name.as_str(),
                pool.backends.get(backend as usize)?.address,
            ))
        });
        let request = &self.request;
        let path = request.path.as_ref().map_or("", PathAndQuery::as_str);
        log.write(&Record {
            time: request.time,
            listener: &self.state.name,
            client: self.peer,
            method: request.method.as_str(),
            host: request.host.as_ref().map(HeaderValue::as_bytes),
            path: path.as_bytes(),
            protocol: protocol(request.version),
            status,
            bytes_in: self.exchanged.bytes_in,
            bytes_out: self.exchanged.bytes_out,
            duration,
            upstream: self.exchanged.upstream_time,
            pool: pool.map(|(name, _)| name),
            backend: pool.map(|(_, address)| address),
            attempts: self.attempts,
            policy: &policy.module.name,
            policy_version: policy.module.version,
            decision: self.decision_time,
            tls: self.tls.0,
            sni: self.tls.1.as_deref(),
            error: self.error.as_deref().map(<[u8]>::trim_ascii),
            referer: request.referer.as_ref().map(HeaderValue::as_bytes),
            user_agent: request.user_agent.as_ref().map(HeaderValue::as_bytes),
        });
    }
}

/// `HTTP/1.1`, `HTTP/2`, ...
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}
