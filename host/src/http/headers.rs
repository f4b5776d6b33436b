//! Header rules of a reverse proxy, for both codecs: hop-by-hop headers
//! are removed in both directions (RFC 9110 section 7.6.1), the client's
//! identity is passed on in `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `Forwarded` (RFC 7239), and the request's target and `Host` are checked
//! before anything reads them ([`check_request`]): the policy routes on
//! the same host the backend receives.
//!
//! `Connection` may make any header hop-by-hop except the ones that frame
//! or address the message (`Host`, `Content-Length`,
//! `Transfer-Encoding`): `Connection: close, host` must not strip the
//! host the policy routed on.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{StatusCode, Uri, Version};

use crate::policy::HeaderEdit;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that only concern one connection and are never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
}

/// The hop-by-hop names, lower case.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// [`is_hop_by_hop`] for a name as received, in any case.
pub fn is_hop_by_hop_name(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The comma-separated tokens of a header value (`Connection`,
/// `Transfer-Encoding`), trimmed, empty ones skipped.
pub fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `Connection` header value names `name` as hop-by-hop, with
/// the protected names never counted (see the module docs).
pub fn connection_names(value: &[u8], name: &str) -> bool {
    !is_protected(name) && list_tokens(value).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Headers that `Connection` cannot remove.
fn is_protected(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// True when the request asks for a protocol upgrade the proxy tunnels
/// (WebSocket and the like; never `h2c`, which would take the connection
/// out of the proxy's hands).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let offers = headers.get_all(header::UPGRADE).iter();
    let tunnelled = offers
        .flat_map(|v| list_tokens(v.as_bytes()))
        .any(|t| !t.eq_ignore_ascii_case(b"h2c"));
    tunnelled
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| list_tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// Removes hop-by-hop headers and every header the `Connection` header
/// names (but the protected ones). With `upgrade`, keeps `Upgrade` and
/// sets `Connection: upgrade` so the upgrade handshake reaches the other
/// side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_tokens(v.as_bytes()))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|name| !is_protected(name.as_str()))
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    let upgrade_value = if upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    // Cheap when nothing matches: one pass over the names present.
    if headers.keys().any(is_hop_by_hop) {
        for name in [
            &header::CONNECTION,
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &header::TE,
            &header::TRAILER,
            &header::TRANSFER_ENCODING,
            &header::UPGRADE,
            &header::PROXY_AUTHENTICATE,
            &header::PROXY_AUTHORIZATION,
        ] {
            headers.remove(name);
        }
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Longest request method accepted.
pub const MAX_METHOD: usize = 32;

/// Why a request head is refused before the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status the client gets.
    pub status: StatusCode,
    /// What was wrong, the body of the response.
    pub reason: &'static str,
}

impl Refusal {
    fn bad(reason: &'static str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

/// Checks a request head and puts its target in one form, for either
/// codec, before the policy sees it:
/// - a method of at most [`MAX_METHOD`] bytes;
/// - at most one `Host`, and one in every HTTP/1.1 request (RFC 9112
///   3.2), made only of authority characters;
/// - an HTTP/1 request in absolute form: the URI's authority replaces
///   `Host` (RFC 9112 3.2.2) and the target becomes origin form, so the
///   policy, the forwarded `Host` and `Forwarded` agree;
/// - HTTP/2: `:authority` and a `host` header that disagree are refused
///   (RFC 9113 8.3.1).
pub fn check_request(head: &mut Parts) -> Result<(), Refusal> {
    if head.method.as_str().len() > MAX_METHOD {
        return Err(Refusal::bad("request method too long"));
    }
    let mut hosts = head.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::bad("more than one Host header"));
    }
    if host.is_some_and(|h| !h.as_bytes().iter().all(|&b| is_authority_char(b))) {
        return Err(Refusal::bad("invalid Host header"));
    }
    let authority = head.uri.authority().map(|a| a.as_str());
    match (head.version, authority) {
        (Version::HTTP_2 | Version::HTTP_3, Some(authority)) => match host {
            Some(host) if host.as_bytes() != authority.as_bytes() => {
                Err(Refusal::bad("Host and :authority disagree"))
            }
            _ => Ok(()),
        },
        (Version::HTTP_2 | Version::HTTP_3, None) => Ok(()),
        (_, Some(authority)) => {
            let value = HeaderValue::from_str(authority)
                .map_err(|_| Refusal::bad("invalid request target"))?;
            head.headers.insert(header::HOST, value);
            let path = std::mem::take(&mut head.uri).into_parts().path_and_query;
            head.uri = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
            Ok(())
        }
        (Version::HTTP_11, None) if host.is_none() => Err(Refusal::bad("missing Host header")),
        _ => Ok(()),
    }
}

/// A `Content-Length` value: 1 to 19 digits and nothing else (no sign, no
/// list, no blank inside), in either direction.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A byte of a URI authority (RFC 3986: unreserved, sub-delims, `:`, `@`,
/// `%` and IPv6 brackets).
fn is_authority_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%[]".contains(&b)
}

/// Adds the client's address and the original scheme and host. Values
/// are formatted on the stack: each header costs one allocation, its own.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let proto = if tls { "https" } else { "http" };
    append_list(headers, &X_FORWARDED_FOR, format_args!("{client_ip}"));
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let host = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(is_token_char));
    let (host_key, host) = match host {
        Some(host) => (";host=", host),
        None => ("", ""),
    };
    match client_ip {
        IpAddr::V4(ip) => append_list(
            headers,
            &FORWARDED,
            format_args!("for={ip};proto={proto}{host_key}{host}"),
        ),
        IpAddr::V6(ip) => append_list(
            headers,
            &FORWARDED,
            format_args!("for=\"[{ip}]\";proto={proto}{host_key}{host}"),
        ),
    }
}

/// A byte of an RFC 9110 token (or of a host with a port or IPv6
/// brackets): `Forwarded` carries such a host unquoted.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:[]".contains(&b)
}

/// Appends `item` to a comma-separated header, or sets it.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: std::fmt::Arguments<'_>) {
    let value = match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(existing) => header_value(format_args!("{existing}, {item}")),
        None => header_value(item),
    };
    if let Some(value) = value {
        headers.insert(name, value);
    }
}

/// A header value formatted in a stack buffer (a heap string only when it
/// is longer than 256 bytes); `None` when it is not a valid value.
fn header_value(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    use std::io::Write as _;
    let mut buffer = [0u8; 256];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    if cursor.write_fmt(args).is_ok() {
        let len = cursor.position() as usize;
        return HeaderValue::from_bytes(&buffer[..len]).ok();
    }
    HeaderValue::try_from(std::fmt::format(args)).ok()
}

/// Applies a policy's header edits. Hop-by-hop names and invalid names or
/// values are skipped (and reported in the returned count).
pub fn apply_edits(headers: &mut HeaderMap, edits: Vec<HeaderEdit>) -> usize {
    let mut skipped = 0;
    for edit in edits {
        let applied = match edit {
            HeaderEdit::Set((name, value)) => parse(&name, &value).map(|(n, v)| {
                headers.insert(n, v);
            }),
            HeaderEdit::Append((name, value)) => parse(&name, &value).map(|(n, v)| {
                headers.append(n, v);
            }),
            HeaderEdit::Remove(name) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .filter(|n| !is_hop_by_hop(n))
                .map(|n| {
                    headers.remove(n);
                }),
        };
        if applied.is_none() {
            skipped += 1;
        }
    }
    skipped
}

fn parse(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    if is_hop_by_hop(&name) {
        return None;
    }
    Some((name, HeaderValue::from_str(value).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upgrade_survives_when_upgrading() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_to_existing_chain() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("example.com");
        add_forwarded(&mut h, "::1".parse().unwrap(), false, Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http;host=example.com");
    }

    #[test]
    fn forwarded_values_longer_than_the_stack_buffer_are_kept_whole() {
        let chain = vec!["10.0.0.1"; 40].join(", ");
        let mut h = map(&[("x-forwarded-for", chain.as_str())]);
        let host = HeaderValue::from_static("a.example");
        add_forwarded(&mut h, "192.0.2.7".parse().unwrap(), true, Some(&host));
        assert_eq!(h["x-forwarded-for"], format!("{chain}, 192.0.2.7").as_str());
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=https;host=a.example");
    }

    #[test]
    fn edits_cannot_touch_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        let skipped = apply_edits(
            &mut h,
            vec![
                HeaderEdit::Set(("x-a".into(), "1".into())),
                HeaderEdit::Append(("x-a".into(), "2".into())),
                HeaderEdit::Set(("transfer-encoding".into(), "chunked".into())),
                HeaderEdit::Set(("bad name".into(), "v".into())),
            ],
        );
        assert_eq!(skipped, 2);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert!(!h.contains_key("transfer-encoding"));
    }
}
