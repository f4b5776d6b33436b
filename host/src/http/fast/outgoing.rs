//! The request head the fast path sends to a backend, written straight
//! from the client's parsed head into a byte buffer: origin form,
//! HTTP/1.1, `Host` kept (the backend's authority when the client sent
//! none), hop-by-hop headers and those the client's `Connection` names
//! dropped, `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` appended
//! to (the same rules as `headers::add_forwarded`). A chunked body keeps
//! its coding (`Transfer-Encoding: chunked` is written again, the body is
//! relayed as it came); `Expect` is dropped, since the proxy answers
//! `100-continue` itself. The client's head is not modified, so a retry
//! writes it again for another backend without a copy. The policy's
//! request edits, when there are any, go through a header map
//! (`headers::apply_edits`).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use super::request::BodyFraming;
use super::response::put_line;
use crate::http::ConnInfo;
use crate::http::headers::{apply_edits, connection_names, is_hop_by_hop_name, is_token_char};
use crate::policy::HeaderEdit;
use crate::pool::Backend;

/// Writes the upstream head for `head` into `out` (cleared first).
pub fn write_head(
    out: &mut Vec<u8>,
    head: &Parts,
    conn: &ConnInfo,
    backend: &Backend,
    edits: &[HeaderEdit],
    body: BodyFraming,
) {
    out.clear();
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let edited;
    let headers = if edits.is_empty() {
        &head.headers
    } else {
        let mut copy = head.headers.clone();
        apply_edits(&mut copy, edits.to_vec());
        edited = copy;
        &edited
    };
    let connection = Connection::of(&head.headers);
    for (name, value) in headers {
        let name = name.as_str();
        let dropped = is_hop_by_hop_name(name)
            || connection.names(name)
            || is_forwarding(name)
            || name == "expect";
        if !dropped {
            put_line(out, name.as_bytes(), value.as_bytes());
        }
    }
    if body == BodyFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let host = headers.get(header::HOST);
    if host.is_none() {
        put_line(out, b"host", backend.authority.as_str().as_bytes());
    }
    let proto = if conn.tls { "https" } else { "http" };
    // Written per request (tens of nanoseconds) rather than kept: every
    // idle connection would carry the bytes.
    let ip_text = crate::ip_text::IpText::new(conn.peer.ip());
    let ip = ip_text.as_bytes();
    list_line(out, headers, "x-forwarded-for", |out| {
        out.extend_from_slice(ip)
    });
    put_line(out, b"x-forwarded-proto", proto.as_bytes());
    list_line(out, headers, "forwarded", |out| {
        forwarded_element(out, conn.peer.ip(), ip, proto, host)
    });
    out.extend_from_slice(b"\r\n");
}

/// The headers the proxy rewrites itself.
fn is_forwarding(name: &str) -> bool {
    name == "x-forwarded-for" || name == "x-forwarded-proto" || name == "forwarded"
}

/// `name: <existing values>, <item>`.
fn list_line(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    name: &'static str,
    item: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for value in headers.get_all(name) {
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b", ");
    }
    item(out);
    out.extend_from_slice(b"\r\n");
}

/// `for=...;proto=...[;host=...]` (RFC 7239; the host only when it is a
/// plain token).
fn forwarded_element(
    out: &mut Vec<u8>,
    ip: IpAddr,
    ip_text: &[u8],
    proto: &str,
    host: Option<&HeaderValue>,
) {
    let (open, close): (&[u8], &[u8]) = match ip {
        IpAddr::V4(_) => (b"for=", b";proto="),
        IpAddr::V6(_) => (b"for=\"[", b"]\";proto="),
    };
    out.extend_from_slice(open);
    out.extend_from_slice(ip_text);
    out.extend_from_slice(close);
    out.extend_from_slice(proto.as_bytes());
    let host = host.map(HeaderValue::as_bytes);
    if let Some(host) = host.filter(|h| h.iter().all(|&b| is_token_char(b))) {
        out.extend_from_slice(b";host=");
        out.extend_from_slice(host);
    }
}

/// The client's `Connection` header: the names it makes hop-by-hop.
struct Connection<'h> {
    values: Option<header::GetAll<'h, HeaderValue>>,
}

impl<'h> Connection<'h> {
    fn of(headers: &'h HeaderMap) -> Connection<'h> {
        let present = headers.contains_key(header::CONNECTION);
        Connection {
            values: present.then(|| headers.get_all(header::CONNECTION)),
        }
    }

    fn names(&self, name: &str) -> bool {
        let Some(values) = &self.values else {
            return false;
        };
        values
            .iter()
            .any(|value| connection_names(value.as_bytes(), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};
    use crate::pool::BackendPool;

    fn backend() -> std::sync::Arc<Backend> {
        let config = PoolConfig {
            name: "web".into(),
            backends: vec![BackendConfig {
                address: "127.0.0.1:9".parse().unwrap(),
                weight: 1,
            }],
            ..PoolConfig::default()
        };
        BackendPool::new(&config, None).backends[0].clone()
    }

    fn head(text: &str) -> Parts {
        let mut buffer = bytes::BytesMut::from(text);
        let scratch = &mut super::super::request::Scratch::default();
        match super::super::request::parse(&mut buffer, scratch) {
            super::super::request::Parsed::Ready(head) => head.parts,
            other => panic!("{other:?}"),
        }
    }

    fn written_from(peer: &str, parts: &Parts, tls: bool, edits: &[HeaderEdit]) -> String {
        let mut conn = ConnInfo::new(peer.parse().unwrap(), "127.0.0.1:80".parse().unwrap());
        conn.tls = tls;
        let mut out = Vec::new();
        write_head(&mut out, parts, &conn, &backend(), edits, BodyFraming::None);
        String::from_utf8(out).unwrap()
    }

    fn written(parts: &Parts, tls: bool, edits: &[HeaderEdit]) -> String {
        written_from("192.0.2.7:5000", parts, tls, edits)
    }

    #[test]
    fn connection_cannot_drop_host_or_framing_and_chunked_is_rewritten() {
        let parts = head(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: close, host, content-length, x-a\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        let mut conn = ConnInfo::new(
            "192.0.2.7:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        conn.tls = false;
        let mut out = Vec::new();
        write_head(
            &mut out,
            &parts,
            &conn,
            &backend(),
            &[],
            BodyFraming::Chunked,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("host: h\r\n"), "{text}");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("x-a") && !text.contains("expect"), "{text}");
        assert!(!text.contains("connection"), "{text}");
    }

    #[test]
    fn an_ipv6_client_is_quoted_in_forwarded() {
        let parts = head("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let text = written_from("[2001:db8::7]:5000", &parts, false, &[]);
        assert!(text.contains("x-forwarded-for: 2001:db8::7\r\n"), "{text}");
        assert!(
            text.contains("forwarded: for=\"[2001:db8::7]\";proto=http;host=h\r\n"),
            "{text}"
        );
    }

    #[test]
    fn proxy_headers_are_appended_and_hop_by_hop_dropped() {
        let parts = head(
            "GET /a?b HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, x-private\r\nX-Private: 1\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: spoofed\r\nX-Kept: yes\r\n\r\n",
        );
        assert_eq!(
            written(&parts, false, &[]),
            "GET /a?b HTTP/1.1\r\nhost: example.test\r\nx-kept: yes\r\n\
             x-forwarded-for: 10.0.0.1, 192.0.2.7\r\nx-forwarded-proto: http\r\n\
             forwarded: for=192.0.2.7;proto=http;host=example.test\r\n\r\n"
        );
    }

    #[test]
    fn a_missing_host_names_the_backend_and_edits_apply() {
        // The fast path refuses HTTP/1.1 without Host; the writer still
        // names the backend for a head that has none.
        let mut parts = head("GET / HTTP/1.1\r\nHost: h\r\nX-Old: 1\r\n\r\n");
        parts.headers.remove("host");
        let edits = [
            HeaderEdit::Set(("x-route".into(), "video".into())),
            HeaderEdit::Remove("x-old".into()),
        ];
        let text = written(&parts, true, &edits);
        assert!(text.contains("host: 127.0.0.1:9\r\n"), "{text}");
        assert!(text.contains("x-route: video\r\n"), "{text}");
        assert!(!text.contains("x-old"), "{text}");
        assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
        assert!(
            text.contains("forwarded: for=192.0.2.7;proto=https\r\n"),
            "{text}"
        );
    }
}
