//! A backend's response head, parsed and rewritten for the client in one
//! pass over the bytes: hop-by-hop headers (and those the backend's
//! `Connection` names) and the pool's load header are dropped, the body's
//! framing is worked out, the policy's response edits applied. Without
//! edits nothing is allocated: header lines are copied from the backend's
//! buffer into the client's output buffer.

use std::mem::MaybeUninit;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::upstream::HeadProgress;
use crate::http::headers::{
    apply_edits, connection_names, is_hop_by_hop_name, list_tokens, parse_content_length,
};
use crate::policy::HeaderEdit;

/// Most header lines in a response head.
const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, relayed as it is.
    Chunked,
    /// Until the backend closes the connection.
    Eof,
}

/// What the rest of the exchange needs from the response head.
#[derive(Debug)]
pub struct ResponseMeta {
    /// The status.
    pub status: StatusCode,
    /// The body's framing.
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    /// The backend's utilization report (the pool's load header).
    pub load: Option<HeaderValue>,
}

/// What the rewrite depends on besides the bytes.
pub struct Rewrite<'a> {
    /// The request's method (a HEAD response has no body).
    pub method: &'a Method,
    /// The pool's load header, removed from the response.
    pub load_header: &'a HeaderName,
    /// The policy's response edits.
    pub edits: &'a [HeaderEdit],
    /// The client connection closes after this response.
    pub close: bool,
}

/// Parses the response head at the start of `bytes` and, when it is the
/// final one, writes the client's head into `out`.
pub fn rewrite(bytes: &[u8], how: &Rewrite<'_>, out: &mut Vec<u8>) -> HeadProgress<ResponseMeta> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return HeadProgress::Partial,
        Err(error) => return HeadProgress::Invalid(format!("invalid response head: {error}")),
    };
    let code = response.code.unwrap_or(0);
    let Ok(status) = StatusCode::from_u16(code) else {
        return HeadProgress::Invalid(format!("invalid status {code}"));
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return HeadProgress::Invalid("101 to a request that asked for no upgrade".into());
    }
    if status.is_informational() {
        return HeadProgress::Skip(len);
    }
    let headers = response.headers;
    let scan = match Scan::of(headers) {
        Ok(scan) => scan,
        Err(reason) => return HeadProgress::Invalid(reason),
    };
    let framing = scan.framing(how.method, status);
    let reusable = response.version == Some(1) && !scan.close && framing != Framing::Eof;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut load = None;
    let kept = headers.iter().filter(|h| {
        if how.load_header.as_str().eq_ignore_ascii_case(h.name) {
            load = HeaderValue::from_bytes(h.value).ok();
            return false;
        }
        !(is_hop_by_hop_name(h.name)
            || scan.names_in_connection(h.name)
            || (scan.chunked_or_coded && h.name.eq_ignore_ascii_case("content-length")))
    });
    if how.edits.is_empty() {
        for header in kept {
            put_line(out, header.name.as_bytes(), header.value);
        }
    } else {
        write_edited(out, kept, how.edits);
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Eof => out.extend_from_slice(b"connection: close\r\n"),
        _ if how.close => out.extend_from_slice(b"connection: close\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    let value = ResponseMeta {
        status,
        framing,
        reusable,
        load,
    };
    HeadProgress::Done { len, value }
}

/// Header lines with the policy's edits applied (the rare path: a header
/// map is built for [`apply_edits`]' semantics).
fn write_edited<'h>(
    out: &mut Vec<u8>,
    kept: impl Iterator<Item = &'h httparse::Header<'h>>,
    edits: &[HeaderEdit],
) {
    let mut map = HeaderMap::new();
    for header in kept {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) {
            map.append(name, value);
        }
    }
    apply_edits(&mut map, edits.to_vec());
    for (name, value) in &map {
        put_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// One `name: value` line.
pub fn put_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the framing and connection headers of a response say.
struct Scan<'b> {
    content_length: Option<u64>,
    /// A `Transfer-Encoding` header is present.
    chunked_or_coded: bool,
    /// ... and its last coding is `chunked`.
    chunked: bool,
    close: bool,
    connection: Option<&'b [u8]>,
}

impl<'b> Scan<'b> {
    fn of(headers: &[httparse::Header<'b>]) -> Result<Scan<'b>, String> {
        let mut scan = Scan {
            content_length: None,
            chunked_or_coded: false,
            chunked: false,
            close: false,
            connection: None,
        };
        for header in headers {
            let value = header.value;
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(value).ok_or("invalid Content-Length")?;
                if scan.content_length.is_some_and(|l| l != length) {
                    return Err("conflicting Content-Length headers".into());
                }
                scan.content_length = Some(length);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                scan.chunked_or_coded = true;
                scan.chunked = list_tokens(value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if header.name.eq_ignore_ascii_case("connection") {
                scan.close |= list_tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"));
                scan.connection = Some(value);
            }
        }
        Ok(scan)
    }

    fn framing(&self, method: &Method, status: StatusCode) -> Framing {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if self.chunked {
            Framing::Chunked
        } else if self.chunked_or_coded {
            Framing::Eof
        } else {
            self.content_length.map_or(Framing::Eof, Framing::Length)
        }
    }

    /// Whether the backend's `Connection` header names `name`.
    fn names_in_connection(&self, name: &str) -> bool {
        self.connection.is_some_and(|v| connection_names(v, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        text: &str,
        method: Method,
        edits: &[HeaderEdit],
    ) -> (HeadProgress<ResponseMeta>, String) {
        let load = HeaderName::from_static("x-backend-load");
        let how = Rewrite {
            method: &method,
            load_header: &load,
            edits,
            close: false,
        };
        let mut out = Vec::new();
        let progress = rewrite(text.as_bytes(), &how, &mut out);
        (progress, String::from_utf8(out).unwrap())
    }

    fn done(progress: HeadProgress<ResponseMeta>) -> ResponseMeta {
        match progress {
            HeadProgress::Done { value, .. } => value,
            _ => panic!("not a complete head"),
        }
    }

    #[test]
    fn hop_by_hop_and_load_headers_are_dropped() {
        let (progress, out) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Backend-Load: cpu=0.5\r\nX-Kept: yes\r\n\r\nok",
            Method::GET,
            &[],
        );
        let meta = done(progress);
        assert_eq!(meta.framing, Framing::Length(2));
        assert!(meta.reusable);
        assert_eq!(meta.load.unwrap(), "cpu=0.5");
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: yes\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_the_method_status_and_headers() {
        let framing = |text: &str, method| done(run(text, method, &[]).0).framing;
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(framing(chunked, Method::GET), Framing::Chunked);
        let (_, out) = run(chunked, Method::GET, &[]);
        assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD),
            Framing::Empty
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET),
            Framing::Empty
        );
        let eof = run("HTTP/1.1 200 OK\r\n\r\n", Method::GET, &[]);
        let meta = done(eof.0);
        assert_eq!(meta.framing, Framing::Eof);
        assert!(!meta.reusable);
        assert!(eof.1.contains("connection: close"));
        assert!(
            !done(
                run(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    Method::GET,
                    &[]
                )
                .0
            )
            .reusable
        );
    }

    #[test]
    fn informational_heads_are_skipped_and_bad_ones_refused() {
        assert!(matches!(
            run(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                Method::GET,
                &[]
            )
            .0,
            HeadProgress::Skip(_)
        ));
        assert!(matches!(
            run("HTTP/1.1 200 OK\r\nX", Method::GET, &[]).0,
            HeadProgress::Partial
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                matches!(run(bad, Method::GET, &[]).0, HeadProgress::Invalid(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn response_edits_are_applied() {
        let edits = [
            HeaderEdit::Append(("set-cookie".into(), "a=1".into())),
            HeaderEdit::Set(("x-kept".into(), "changed".into())),
            HeaderEdit::Remove("x-gone".into()),
        ];
        let (progress, out) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Kept: yes\r\nX-Gone: 1\r\n\r\n",
            Method::GET,
            &edits,
        );
        done(progress);
        assert!(out.contains("set-cookie: a=1\r\n"), "{out}");
        assert!(out.contains("x-kept: changed\r\n"), "{out}");
        assert!(!out.contains("x-gone") && !out.contains("yes"), "{out}");
        assert!(out.contains("content-length: 0\r\n"), "{out}");
    }
}
