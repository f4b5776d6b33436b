//! Reading a client's request head on the fast path, and deciding whether
//! the fast path serves it.
//!
//! The fast path serves HTTP/1.1 requests in origin or absolute form, with
//! or without a body (`Content-Length`, or `Transfer-Encoding: chunked`;
//! `Expect: 100-continue` included): the bulk of an edge's traffic.
//! WebSocket upgrades, HTTP/1.0, `CONNECT`, `OPTIONS *` and HTTP/2 are
//! [`Parsed::Handoff`]: the connection goes to hyper with the bytes read
//! so far. A malformed or ambiguous head is [`Parsed::Invalid`]: a 4xx
//! saying why, and the connection is closed, nothing forwarded:
//! - a head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines is 431
//!   however its bytes arrive;
//! - a body's framing must be unambiguous: one `Content-Length` of digits
//!   only, or `Transfer-Encoding` of exactly `chunked`, never both;
//! - `Expect` other than `100-continue` is 417;
//! - the Host and target rules of [`headers::check_request`] (one Host,
//!   required in HTTP/1.1; absolute form replaces it; a method of at most
//!   32 bytes).
//!
//! `Upgrade: h2c` is not an upgrade the proxy makes: the request is served
//! as an ordinary one and the upgrade offer dropped with the other
//! hop-by-hop headers.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version, request::Parts};

use crate::http::headers::{self, Refusal, list_tokens};

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
    /// Malformed: answer this status (the reason is its body) and close.
    Invalid(StatusCode, &'static str),
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or 0).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, origin-form URI, version and headers; header values are
    /// slices of the read buffer, not copies.
    pub parts: Parts,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The body that follows the head.
    pub body: BodyFraming,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
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

/// What the framing, connection and expectation headers of a head say.
#[derive(Default)]
struct Scan {
    close: bool,
    length: Option<u64>,
    chunked: bool,
    expect_continue: bool,
    connection_upgrade: bool,
    /// `Upgrade` names something other than h2c.
    upgrade: bool,
}

/// Parses the request head at the start of `buffer`; a served request's
/// head is split off the buffer (what follows it, its body or a pipelined
/// request, stays).
pub fn parse(buffer: &mut BytesMut, scratch: &mut Scratch) -> Parsed {
    if starts_like_h2(buffer) {
        return match buffer.len() >= H2_PREFACE.len() {
            true => Parsed::Handoff,
            false => Parsed::Partial,
        };
    }
    let too_large = Parsed::Invalid(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request head too large",
    );
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buffer, &mut headers) {
        // The limit holds however the bytes arrived: a whole head in one
        // read is measured like one that came in pieces.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return too_large,
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => return too_large,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return too_large,
        Err(_) => return Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed request head"),
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Handoff;
    };
    if method == "CONNECT" || !(path.starts_with('/') || is_absolute_form(path)) {
        return Parsed::Handoff;
    }
    let mut scan = Scan::default();
    let spans = &mut scratch.spans;
    spans.clear();
    let base = buffer.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    for header in request.headers.iter() {
        if let Err(refusal) = scan.header(header.name, header.value) {
            return Parsed::Invalid(refusal.status, refusal.reason);
        }
        spans.push(Span {
            name: offset(header.name.as_bytes()),
            value: offset(header.value),
        });
    }
    if scan.connection_upgrade && scan.upgrade {
        return Parsed::Handoff;
    }
    let body = match scan.framing() {
        Ok(body) => body,
        Err(refusal) => return Parsed::Invalid(refusal.status, refusal.reason),
    };
    let method = offset(method.as_bytes());
    let path = offset(path.as_bytes());
    let head = buffer.split_to(len).freeze();
    let slice = |(start, len): (usize, usize)| head.slice(start..start + len);
    let bad = Parsed::Invalid(StatusCode::BAD_REQUEST, "malformed request head");
    let Ok(method) = Method::from_bytes(&slice(method)) else {
        return bad;
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(path)) else {
        return bad;
    };
    let mut map = HeaderMap::with_capacity(spans.len());
    for span in spans.iter() {
        let Ok(name) = HeaderName::from_bytes(&slice(span.name)) else {
            return bad;
        };
        // A slice of the buffer, not a copy (checked again: cheap).
        let Ok(value) = HeaderValue::from_maybe_shared(slice(span.value)) else {
            return bad;
        };
        map.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = map;
    if let Err(refusal) = headers::check_request(&mut parts) {
        return Parsed::Invalid(refusal.status, refusal.reason);
    }
    Parsed::Ready(RequestHead {
        parts,
        close: scan.close,
        body,
        expect_continue: scan.expect_continue,
    })
}

impl Scan {
    /// Takes note of one header line; refuses an ambiguous one.
    fn header(&mut self, name: &str, value: &[u8]) -> Result<(), Refusal> {
        let bad = |reason| Refusal {
            status: StatusCode::BAD_REQUEST,
            reason,
        };
        if name.eq_ignore_ascii_case("content-length") {
            if self.length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            self.length = Some(
                headers::parse_content_length(value)
                    .ok_or_else(|| bad("invalid Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let mut tokens = list_tokens(value);
            let only_chunked = tokens
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
                && tokens.next().is_none();
            if self.chunked || !only_chunked {
                return Err(bad("unsupported Transfer-Encoding"));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(Refusal {
                    status: StatusCode::EXPECTATION_FAILED,
                    reason: "unsupported expectation",
                });
            }
            self.expect_continue = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list_tokens(value) {
                self.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.close |= token.eq_ignore_ascii_case(b"close");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade |= list_tokens(value).any(|t| !t.eq_ignore_ascii_case(b"h2c"));
        }
        Ok(())
    }

    fn framing(&self) -> Result<BodyFraming, Refusal> {
        match (self.length, self.chunked) {
            (Some(_), true) => Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "both Content-Length and Transfer-Encoding",
            }),
            (None, true) => Ok(BodyFraming::Chunked),
            (Some(0) | None, false) => Ok(BodyFraming::None),
            (Some(length), false) => Ok(BodyFraming::Length(length)),
        }
    }
}

/// `http://...` or `https://...`, in any case.
fn is_absolute_form(target: &str) -> bool {
    let bytes = target.as_bytes();
    let prefix = |p: &[u8]| bytes.len() > p.len() && bytes[..p.len()].eq_ignore_ascii_case(p);
    prefix(b"http://") || prefix(b"https://")
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

    fn ready(text: &str) -> (RequestHead, BytesMut) {
        match parse_str(text) {
            (Parsed::Ready(head), rest) => (head, rest),
            (other, _) => panic!("{text:?}: {other:?}"),
        }
    }

    fn refusal(text: &str) -> (StatusCode, &'static str) {
        match parse_str(text).0 {
            Parsed::Invalid(status, reason) => (status, reason),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn connection_close_is_noticed() {
        let (head, _) = ready("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(head.close);
    }

    #[test]
    fn bodies_are_served_with_their_framing() {
        let (head, rest) = ready("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(head.body, BodyFraming::Length(3));
        assert_eq!(&rest[..], b"abc", "the body stays in the buffer");
        let (head, _) = ready("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(head.body, BodyFraming::Chunked);
        let (head, _) =
            ready("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n");
        assert!(head.expect_continue);
        let (head, _) = ready("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head.body, BodyFraming::None);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(refusal(text).0, StatusCode::BAD_REQUEST, "{text:?}");
        }
        let expect = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n";
        assert_eq!(refusal(expect).0, StatusCode::EXPECTATION_FAILED);
    }

    #[test]
    fn host_and_target_rules() {
        let two = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(
            refusal(two),
            (StatusCode::BAD_REQUEST, "more than one Host header")
        );
        let none = "GET / HTTP/1.1\r\nX: 1\r\n\r\n";
        assert_eq!(
            refusal(none),
            (StatusCode::BAD_REQUEST, "missing Host header")
        );
        let long = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(33));
        assert_eq!(refusal(&long).1, "request method too long");
        let (head, _) = ready("GET http://evil.test/p?q HTTP/1.1\r\nHost: good.test\r\n\r\n");
        assert_eq!(head.parts.uri, "/p?q");
        assert_eq!(head.parts.headers["host"], "evil.test");
        assert_eq!(head.parts.headers.get_all("host").iter().count(), 1);
    }

    #[test]
    fn h2c_is_not_an_upgrade_but_websocket_is() {
        let (head, _) = ready(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
        );
        assert_eq!(head.parts.uri, "/");
        let ws = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(parse_str(ws).0, Parsed::Handoff));
    }

    #[test]
    fn the_head_limit_holds_in_one_read() {
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let (status, _) = refusal(&huge);
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn other_forms_go_to_hyper() {
        for text in [
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (parsed, rest) = parse_str(text);
            assert!(matches!(parsed, Parsed::Handoff), "{text:?}: {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the buffer is untouched");
        }
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
            assert_eq!(refusal(text).0, StatusCode::BAD_REQUEST, "{text:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            refusal(&huge).0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
