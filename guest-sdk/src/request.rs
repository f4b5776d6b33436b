//! The request being decided: a view of the host's request head.

use crate::PoolId;
use crate::bindings::types;
use crate::key::HashKey;
use crate::sys;
use std::fmt;

/// The head of the request being decided, owned by the host.
///
/// Nothing is copied into the guest until asked for: every accessor is one
/// call into the host that copies just that part (and allocates when it
/// returns a string). Ask only for what the decision needs, and only once.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    inner: &'a sys::Request,
}

impl<'a> Request<'a> {
    pub(crate) fn new(inner: &'a sys::Request) -> Self {
        Request { inner }
    }

    /// The request method.
    pub fn method(&self) -> Method {
        match self.inner.method() {
            types::Method::Get => Method::Get,
            types::Method::Head => Method::Head,
            types::Method::Post => Method::Post,
            types::Method::Put => Method::Put,
            types::Method::Delete => Method::Delete,
            types::Method::Connect => Method::Connect,
            types::Method::Options => Method::Options,
            types::Method::Trace => Method::Trace,
            types::Method::Patch => Method::Patch,
            types::Method::Other(name) => Method::Other(name),
        }
    }

    /// The path of the request target, percent-encoding untouched, without
    /// the query (`/video/1.mp4`). Always starts with `/` (`*` for
    /// `OPTIONS *`).
    pub fn path(&self) -> String {
        self.inner.path()
    }

    /// The query string without the leading `?`, if there is one.
    pub fn query(&self) -> Option<String> {
        self.inner.query()
    }

    /// The authority the client addressed: the `:authority` of an HTTP/2
    /// request, else the `Host` header, else none.
    pub fn authority(&self) -> Option<String> {
        self.inner.authority()
    }

    /// The first value of a header, by case-insensitive name. None when
    /// absent or not valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// The value of a cookie from the `Cookie` header(s), by exact name.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.inner.cookie(name)
    }

    /// The client's IP address as text (`127.0.0.1`, `::1`): the peer of the
    /// TCP connection, never a header.
    pub fn client_ip(&self) -> String {
        self.inner.client_ip()
    }

    /// The HTTP version the client speaks: 10, 11 or 20.
    pub fn http_version(&self) -> u8 {
        self.inner.http_version()
    }

    /// True when the client connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }

    /// The TLS server name (SNI) the client sent, if any.
    pub fn server_name(&self) -> Option<String> {
        self.inner.server_name()
    }

    /// 0 for the first decision on this request; 1, 2, ... when the host
    /// asks again because the chosen backend could not be reached (a
    /// retry). Allocates nothing.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt()
    }

    /// The backends already tried for this request, in order, as (pool,
    /// backend index). Empty on the first attempt. The pool helpers
    /// ([`PoolId::stats`](crate::PoolId::stats),
    /// [`PoolId::candidates`](crate::PoolId::candidates), ...) already
    /// steer a retry away from them; this is for logging or custom rules.
    pub fn tried(&self) -> Vec<(PoolId, u32)> {
        self.inner
            .tried()
            .into_iter()
            .map(|(pool, backend)| (PoolId(pool), backend))
            .collect()
    }

    /// The 64-bit FNV-1a hash of the value of `key` in this request (the
    /// bytes [`HashKey::extract`] would return), computed by the host:
    /// nothing but the number crosses into the guest, so this is much
    /// cheaper than fetching the value. `None` when the header, cookie or
    /// host is absent. [`HashKey::hash`] builds on it.
    pub fn key_hash(&self, key: &HashKey) -> Option<u64> {
        let key = match key {
            HashKey::ClientIp => types::RequestKey::ClientIp,
            HashKey::Path => types::RequestKey::Path,
            HashKey::Host => types::RequestKey::Host,
            HashKey::Header(name) => types::RequestKey::Header(name),
            HashKey::Cookie(name) => types::RequestKey::Cookie(name),
        };
        self.inner.key_hash(key)
    }

    /// The host's `candidates` mask of `pool` for backends `first ..
    /// first + 64`; see [`PoolId::candidates`].
    pub(crate) fn candidate_mask(&self, pool: PoolId, first: u32) -> u64 {
        self.inner.candidates(pool.0, first)
    }

    /// The host's `least-active` answer; see [`PoolId::least_active`].
    pub(crate) fn least_active_in(&self, pool: PoolId, tie_breaker: u64) -> Option<u32> {
        self.inner.least_active(pool.0, tie_breaker)
    }

    /// The host's `tried` list, as (pool index, backend) pairs.
    pub(crate) fn tried_raw(&self) -> Vec<(u32, u32)> {
        self.inner.tried()
    }
}

/// An HTTP request method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`
    Connect,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// `PATCH`
    Patch,
    /// Any other (extension) method, as the client sent it.
    Other(String),
}

impl Method {
    /// The method as it appears on the wire (`GET`).
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(name) => name,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn method_names() {
        assert_eq!(Method::Get.as_str(), "GET");
        assert_eq!(Method::Patch.to_string(), "PATCH");
        assert_eq!(Method::Other("PURGE".into()).as_str(), "PURGE");
    }
}
