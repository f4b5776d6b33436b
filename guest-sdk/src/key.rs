//! What a request is hashed by, for consistent hashing: parsed from a
//! `policy_config` string, read from the request.

use crate::balance::{FNV1A64_EMPTY, finish_key_hash};
use crate::{Request, Subject};

/// The part of a request that names its "client" for consistent hashing
/// or rate limiting.
///
/// Written in config as `client-ip`, `header:<name>`, `cookie:<name>`,
/// `path` or `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The TCP peer's IP address (never a header).
    ClientIp,
    /// The first value of a request header (case-insensitive name).
    Header(String),
    /// A cookie's value (exact name).
    Cookie(String),
    /// The path, without the query.
    Path,
    /// The authority (`Host` header or HTTP/2 `:authority`).
    Host,
}

impl HashKey {
    /// The accepted forms, for error messages and docs.
    pub const FORMS: &'static str = "client-ip, header:<name>, cookie:<name>, path, host";

    /// Parses the config form; `key` (the config key) is named in the
    /// error.
    pub fn parse(key: &str, value: &str) -> Result<Self, String> {
        let named = |kind: &str, name: &str| {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ';') {
                Err(format!(
                    "{key}: {kind} name missing or invalid in {value:?}"
                ))
            } else {
                Ok(name.to_string())
            }
        };
        match value.split_once(':') {
            None if value == "client-ip" => Ok(HashKey::ClientIp),
            None if value == "path" => Ok(HashKey::Path),
            None if value == "host" => Ok(HashKey::Host),
            Some(("header", name)) => named("header", name).map(HashKey::Header),
            Some(("cookie", name)) => named("cookie", name).map(HashKey::Cookie),
            _ => Err(format!(
                "{key}: unknown key {value:?} (one of: {})",
                Self::FORMS
            )),
        }
    }

    /// The key's value in `req`; `None` when the header, cookie or host is
    /// absent.
    pub fn extract(&self, req: &Request) -> Option<String> {
        match self {
            HashKey::ClientIp => Some(req.client_ip()),
            HashKey::Header(name) => req.header(name),
            HashKey::Cookie(name) => req.cookie(name),
            HashKey::Path => Some(req.path()),
            HashKey::Host => req.authority(),
        }
    }

    /// The 64-bit hash of the key's value in `subject` (a [`Request`] or a
    /// [`Connection`](crate::Connection)), falling back to the client IP
    /// when the value is absent, so a request without the header still
    /// hashes consistently. A connection has no header, cookie, path or
    /// host: it is always hashed by its client IP, to the value a request
    /// from that IP gets with [`HashKey::ClientIp`]. Equal to
    /// [`hash_key`](crate::balance::hash_key) of that value, but the host
    /// hashes it ([`Request::key_hash`]): the value is never copied into
    /// the guest.
    pub fn hash<'a>(&self, subject: impl Into<Subject<'a>>) -> u64 {
        match subject.into() {
            Subject::Request(req) => {
                hash_or_client_ip(req.key_hash(self), || req.key_hash(&HashKey::ClientIp))
            }
            Subject::Connection(conn) => finish_key_hash(conn.client_ip_hash()),
        }
    }
}

/// [`HashKey::hash`] from the host's FNV-1a hashes: the key's, else the
/// client IP's (which the host always has).
fn hash_or_client_ip(key: Option<u64>, client_ip: impl FnOnce() -> Option<u64>) -> u64 {
    finish_key_hash(key.or_else(client_ip).unwrap_or(FNV1A64_EMPTY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{fnv1a64, hash_key};

    #[test]
    fn hash_is_hash_key_of_the_value_or_the_client_ip() {
        let fnv = |s: &str| Some(fnv1a64(s.as_bytes()));
        let ip = || fnv("10.0.0.7");
        assert_eq!(hash_or_client_ip(fnv("user-1"), ip), hash_key(b"user-1"));
        assert_eq!(hash_or_client_ip(fnv(""), ip), hash_key(b""));
        assert_eq!(hash_or_client_ip(None, ip), hash_key(b"10.0.0.7"));
        let unused = || -> Option<u64> { panic!("the key was present") };
        assert_eq!(hash_or_client_ip(fnv("/a"), unused), hash_key(b"/a"));
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(HashKey::parse("key", "client-ip"), Ok(HashKey::ClientIp));
        assert_eq!(HashKey::parse("key", "path"), Ok(HashKey::Path));
        assert_eq!(HashKey::parse("key", "host"), Ok(HashKey::Host));
        assert_eq!(
            HashKey::parse("key", "header:X-User"),
            Ok(HashKey::Header("X-User".into()))
        );
        assert_eq!(
            HashKey::parse("key", "cookie:session"),
            Ok(HashKey::Cookie("session".into()))
        );
    }

    #[test]
    fn bad_forms_name_the_key() {
        assert_eq!(
            HashKey::parse("key", "ip").unwrap_err(),
            format!("key: unknown key \"ip\" (one of: {})", HashKey::FORMS)
        );
        assert!(
            HashKey::parse("key", "header:")
                .unwrap_err()
                .starts_with("key: header name")
        );
        assert!(
            HashKey::parse("key", "cookie:a b")
                .unwrap_err()
                .starts_with("key: cookie name")
        );
        assert!(HashKey::parse("key", "query:x").is_err());
    }
}
