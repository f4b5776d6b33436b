//! Header rules of a reverse proxy: hop-by-hop headers are removed in both
//! directions (RFC 9110 section 7.6.1), the client's identity is passed on
//! in `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` (RFC 7239),
//! and the client's `Host` is preserved.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

/// True when the request asks for a protocol upgrade (WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and every header the `Connection` header
/// names. With `upgrade`, keeps `Upgrade` and sets `Connection: upgrade` so
/// the upgrade handshake reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
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
