//! Reading a client's request head on the fast path, and deciding whether
//! the fast path serves it.
//!
//! The fast path serves bodiless HTTP/1.1 requests in origin form (no
//! `Content-Length` other than 0, no `Transfer-Encoding`, no `Upgrade`, no
//! `Expect`, not `CONNECT`): the bulk of an edge's traffic. Anything else
//! is [`Parsed::Handoff`]: the connection goes to hyper with the bytes read
//! so far. A malformed head is [`Parsed::Invalid`]: 400 (431 when too
//! large) and the connection is closed, nothing forwarded.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version, request::Parts};

use crate::http::headers::list_tokens;

/// Most header lines in a request head (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Largest request head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// The HTTP/2 connection preface (prior knowledge / h2c, and h2 over TLS).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What the bytes read so far hold.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per request; boxing would allocate per request"
)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request the fast path serves; its head was taken off the buffer.
    Ready(RequestHead),
    /// A request (or protocol) left to hyper; the buffer is untouched.
    Handoff,
    /// Malformed: answer this status and close.
    Invalid(StatusCode),
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, origin-form URI, version and headers; header values are
    /// slices of the read buffer, not copies.
    pub parts: Parts,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// Where a header's name and value lie in the buffer.
#[derive(Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Where the header lines of the request being parsed lie; kept by the
/// connection so that parsing a head writes no more than its own lines.
#[derive(Default)]
pub struct Scratch {
    spans: Vec<Span>,
}

/// Parses the request head at the start of `buffer`; a served request's
/// head is split off the buffer (what follows it, a pipelined request,
/// stays).
pub fn parse(buffer: &mut BytesMut, scratch: &mut Scratch) -> Parsed {
    if starts_like_h2(buffer) {
        return match buffer.len() >= H2_PREFACE.len() {
            true => Parsed::Handoff,
            false => Parsed::Partial,
        };
    }
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buffer, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
            return Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Parsed::Invalid(StatusCode::BAD_REQUEST),
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Handoff;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Parsed::Handoff;
    }
    let mut close = false;
    let spans = &mut scratch.spans;
    spans.clear();
    let base = buffer.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    for header in request.headers.iter() {
        match served_header(header.name, header.value) {
            Some(closes) => close |= closes,
            None => return Parsed::Handoff,
        }
        spans.push(Span {
            name: offset(header.name.as_bytes()),
            value: offset(header.value),
        });
    }
    let method = offset(method.as_bytes());
    let path = offset(path.as_bytes());
    let head = buffer.split_to(len).freeze();
    let slice = |(start, len): (usize, usize)| head.slice(start..start + len);
    let Ok(method) = Method::from_bytes(&slice(method)) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST);
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(path)) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST);
    };
    let mut map = HeaderMap::with_capacity(spans.len());
    for span in spans.iter() {
        let Ok(name) = HeaderName::from_bytes(&slice(span.name)) else {
            return Parsed::Invalid(StatusCode::BAD_REQUEST);
        };
        // A slice of the buffer, not a copy (checked again: cheap).
        let Ok(value) = HeaderValue::from_maybe_shared(slice(span.value)) else {
            return Parsed::Invalid(StatusCode::BAD_REQUEST);
        };
        map.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    Parsed::Ready(RequestHead { parts, close })
}

/// `Some(closes)` for a header the fast path can serve (`closes`: it is a
/// `Connection` header naming `close`); `None` for one that hands the
/// request to hyper (a body, an upgrade, `Expect`).
fn served_header(name: &str, value: &[u8]) -> Option<bool> {
    if name.eq_ignore_ascii_case("content-length") {
        return (value.trim_ascii() == b"0").then_some(false);
    }
    if name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("upgrade")
        || name.eq_ignore_ascii_case("expect")
    {
        return None;
    }
    if name.eq_ignore_ascii_case("connection") {
        let mut close = false;
        for token in list_tokens(value) {
            if token.eq_ignore_ascii_case(b"upgrade") {
                return None;
            }
            close |= token.eq_ignore_ascii_case(b"close");
        }
        return Some(close);
    }
    Some(false)
}

fn starts_like_h2(buffer: &[u8]) -> bool {
    let n = buffer.len().min(H2_PREFACE.len());
    n > 0 && buffer[..n] == H2_PREFACE[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (Parsed, BytesMut) {
        let mut buffer = BytesMut::from(text);
        (parse(&mut buffer, &mut Scratch::default()), buffer)
    }

    #[test]
    fn a_bodiless_request_is_served_and_split_off() {
        let (parsed, rest) = parse_str(
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        let Parsed::Ready(head) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(head.parts.method, Method::GET);
        assert_eq!(head.parts.uri, "/a?b=1");
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.parts.headers.get_all("x-two").iter().count(), 2);
        assert!(!head.close);
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
    }

    #[test]
    fn connection_close_is_noticed() {
        let (parsed, _) = parse_str("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(
            parsed,
            Parsed::Ready(RequestHead { close: true, .. })
        ));
    }

    #[test]
    fn bodies_upgrades_and_other_forms_go_to_hyper() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (parsed, rest) = parse_str(text);
            assert!(matches!(parsed, Parsed::Handoff), "{text:?}: {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the buffer is untouched");
        }
        let (parsed, _) = parse_str("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(parsed, Parsed::Ready(_)));
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHo").0,
            Parsed::Partial
        ));
        assert!(matches!(parse_str("PRI * HT").0, Parsed::Partial));
        for text in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/1.1\r\nnot a header line\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: v\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(text).0, Parsed::Invalid(StatusCode::BAD_REQUEST)),
                "{text:?}"
            );
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse_str(&huge).0,
            Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
    }
}
