//! Access log lines: one request written as one JSON object or as nginx's
//! `combined` format followed by the upstream address and time, each
//! ending in `\n`, from a request's [`Head`] (what the proxy knew when it
//! started on the request) and [`Tail`] (what it learned by the end), which
//! the writer thread reads back from the request's record ([`line`]).
//!
//! Both write into a caller's buffer with no allocation of their own
//! (bytes that are not UTF-8 are replaced, for JSON, without building a
//! string). Times are UTC ([`super::time`]): RFC 3339 with milliseconds
//! for JSON, `01/Dec/2026:13:18:36 +0000` for `combined`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::Version;

use super::time::{rfc3339_millis, time_local};
use crate::config::LogFormat;
use crate::ip_text::IpText;

/// What the log knows of a request when the proxy starts on it: copied
/// into its record then, while the request's bytes are still in the CPU's
/// cache (by its end they mostly are not); a line's first part
/// ([`json_head`], [`combined_head`]).
#[derive(Debug, Clone)]
pub struct Head<'a> {
    /// When the proxy started on the request.
    pub time: SystemTime,
    /// The listener's name.
    pub listener: &'a [u8],
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: &'a [u8],
    /// The `Host` header (or HTTP/2 authority), as received.
    pub host: Option<&'a [u8]>,
    /// Path and query, as received.
    pub path: &'a [u8],
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Version,
    /// The `Referer` header.
    pub referer: Option<&'a [u8]>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a [u8]>,
}

/// What the log learns of a request by its end ([`json_tail`],
/// [`combined_tail`]).
#[derive(Debug, Clone)]
pub struct Tail<'a> {
    /// The status the client got.
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// To the last byte of the response.
    pub duration: Duration,
    /// To the response head of the last attempt; `None` without one.
    pub upstream: Option<Duration>,
    /// The pool of the last attempt.
    pub pool: Option<&'a [u8]>,
    /// The address of the last attempt's backend, as text (as
    /// `SocketAddr`'s `Display` writes it; the pool keeps it so); `None`
    /// when answered locally.
    pub backend: Option<&'a [u8]>,
    /// Attempts made.
    pub attempts: u32,
    /// The listener's policy.
    pub policy: &'a [u8],
    /// Its module version.
    pub policy_version: u64,
    /// Time spent deciding, over every decision.
    pub decision: Duration,
    /// The client spoke TLS.
    pub tls: bool,
    /// The SNI name it sent.
    pub sni: Option<&'a [u8]>,
    /// Why the proxy answered with an error itself.
    pub error: Option<&'a [u8]>,
}

/// The protocols a line can name, and their names (a record holds a
/// protocol as its index here).
pub const PROTOCOLS: [(Version, &str); 5] = [
    (Version::HTTP_09, "HTTP/0.9"),
    (Version::HTTP_10, "HTTP/1.0"),
    (Version::HTTP_11, "HTTP/1.1"),
    (Version::HTTP_2, "HTTP/2"),
    (Version::HTTP_3, "HTTP/3"),
];

/// `HTTP/1.1`, `HTTP/2`, ...
fn protocol_name(version: Version) -> &'static str {
    PROTOCOLS
        .iter()
        .find(|(known, _)| *known == version)
        .map_or("HTTP", |(_, name)| name)
}

/// The line of a request in `format`, into `out`.
pub fn line(format: LogFormat, head: &Head<'_>, tail: &Tail<'_>, out: &mut Vec<u8>) {
    match format {
        LogFormat::Json => {
            json_head(head, out);
            json_tail(tail, out);
        }
        LogFormat::Combined => {
            let status_at = combined_head(head, out);
            combined_tail(tail, out, status_at);
        }
    }
}

/// A JSON line's first keys, from `ts` to `protocol` (the object is left
/// open for [`json_tail`]). Numbers and addresses are written digit by
/// digit into `out` (`core::fmt` cost a visible share of a line, one
/// small copy per piece).
pub fn json_head(head: &Head<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":\"");
    rfc3339_millis(head.time, out);
    out.extend_from_slice(b"\",\"listener\":");
    json_string(head.listener, out);
    out.extend_from_slice(b",\"client\":\"");
    push_socket_addr(out, head.client);
    out.extend_from_slice(b"\",\"method\":");
    json_string(head.method, out);
    out.extend_from_slice(b",\"host\":");
    json_opt(head.host, out);
    out.extend_from_slice(b",\"path\":");
    json_string(head.path, out);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol_name(head.protocol).as_bytes());
    out.push(b'"');
}

/// The rest of a JSON line [`json_head`] began, from `status` to `error`,
/// closing the object and the line.
pub fn json_tail(tail: &Tail<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(tail.status), 1);
    out.extend_from_slice(b",\"bytes_in\":");
    push_decimal(out, tail.bytes_in, 1);
    out.extend_from_slice(b",\"bytes_out\":");
    push_decimal(out, tail.bytes_out, 1);
    out.extend_from_slice(b",\"duration_ms\":");
    as_millis_3(tail.duration, out);
    out.extend_from_slice(b",\"upstream_ms\":");
    match tail.upstream {
        Some(upstream) => as_millis_3(upstream, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"pool\":");
    json_opt(tail.pool, out);
    match tail.backend {
        Some(backend) => {
            // An address's text needs no escapes.
            out.extend_from_slice(b",\"backend\":\"");
            out.extend_from_slice(backend);
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"backend\":null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    push_decimal(out, u64::from(tail.attempts), 1);
    out.extend_from_slice(b",\"policy\":");
    json_string(tail.policy, out);
    out.extend_from_slice(b",\"policy_version\":");
    push_decimal(out, tail.policy_version, 1);
    out.extend_from_slice(b",\"decision_us\":");
    push_decimal(out, whole_micros(tail.decision), 1);
    out.extend_from_slice(if tail.tls {
        b",\"tls\":true,\"sni\":"
    } else {
        b",\"tls\":false,\"sni\":"
    });
    json_opt(tail.sni, out);
    out.extend_from_slice(b",\"error\":");
    json_opt(tail.error, out);
    out.extend_from_slice(b"}\n");
}

/// `n` in decimal, zero-padded to at least `width` digits (at most 20),
/// two digits at a time. The usual numbers of a line (a status, a port,
/// a few bytes or milliseconds) take a short way: fixed-size copies, not
/// a `memmove` call per number.
pub(super) fn push_decimal(out: &mut Vec<u8>, n: u64, width: usize) {
    match n {
        0..10 if width <= 1 => return out.push(b'0' + n as u8),
        10..100 if width <= 2 => return out.extend_from_slice(digit_pair(n)),
        100..1000 if width <= 3 => {
            out.push(b'0' + (n / 100) as u8);
            return out.extend_from_slice(digit_pair(n % 100));
        }
        1000..10_000 if width <= 4 => {
            out.extend_from_slice(digit_pair(n / 100));
            return out.extend_from_slice(digit_pair(n % 100));
        }
        _ => {}
    }
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    while rest >= 100 {
        at -= 2;
        digits[at..at + 2].copy_from_slice(digit_pair(rest % 100));
        rest /= 100;
    }
    if rest >= 10 {
        at -= 2;
        digits[at..at + 2].copy_from_slice(digit_pair(rest));
    } else {
        at -= 1;
        digits[at] = b'0' + rest as u8;
    }
    let start = at.min(digits.len() - width.min(digits.len()));
    out.extend_from_slice(&digits[start..]);
}

/// The two digits of `n` (below 100).
fn digit_pair(n: u64) -> &'static [u8; 2] {
    let at = 2 * n as usize;
    DIGIT_PAIRS[at..at + 2].try_into().unwrap_or(b"00")
}

/// `00`, `01`, ... `99`, one after another.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// `duration` in whole microseconds (in `u64`: `as_micros` is a `u128`,
/// whose division by 1000 was a libgcc call per number).
fn whole_micros(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(duration.subsec_micros()))
}

/// `127.0.0.1:9001`, `[::1]:9001`: what `SocketAddr`'s `Display` writes
/// (which it still does for an IPv6 address with a scope id).
fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => out.extend_from_slice(IpText::new((*v4.ip()).into()).as_bytes()),
        SocketAddr::V6(v6) if v6.scope_id() == 0 => {
            out.push(b'[');
            out.extend_from_slice(IpText::new((*v6.ip()).into()).as_bytes());
            out.push(b']');
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
            return;
        }
    }
    out.push(b':');
    push_decimal(out, u64::from(addr.port()), 1);
}

/// A `combined` line's parts known at the start: nginx's fields up to the
/// request line, then the referer and user agent. Returns where
/// [`combined_tail`] puts the status and size, between the two.
pub fn combined_head(head: &Head<'_>, out: &mut Vec<u8>) -> usize {
    let _ = write!(out, "{} - - [", head.client.ip());
    time_local(head.time, out);
    out.extend_from_slice(b"] \"");
    combined_text(head.method, out);
    out.push(b' ');
    combined_text(head.path, out);
    let _ = write!(out, " {}\"", protocol_name(head.protocol));
    let status_at = out.len();
    out.extend_from_slice(b" \"");
    combined_text(head.referer.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" \"");
    combined_text(head.user_agent.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" ");
    status_at
}

/// Ends a `combined` line [`combined_head`] began: the status and size at
/// `status_at`, then the upstream address and the upstream time in
/// seconds (`-` for each when there is none).
pub fn combined_tail(tail: &Tail<'_>, out: &mut Vec<u8>, status_at: usize) {
    let mut status = [0; 32];
    let mut rest = &mut status[..];
    // Cannot fail: a u16 and a u64 take at most 27 bytes.
    let _ = write!(rest, " {} {}", tail.status, tail.bytes_out);
    let len = 32 - rest.len();
    out.splice(status_at..status_at, status[..len].iter().copied());
    match tail.backend {
        Some(backend) => out.extend_from_slice(backend),
        None => out.push(b'-'),
    }
    match tail.upstream {
        Some(upstream) => {
            out.push(b' ');
            decimal_3(upstream.as_secs(), upstream.subsec_millis(), out);
            out.push(b'\n');
        }
        None => out.extend_from_slice(b" -\n"),
    }
}

/// `duration` in milliseconds with three decimals.
fn as_millis_3(duration: Duration, out: &mut Vec<u8>) {
    let micros = whole_micros(duration);
    decimal_3(micros / 1000, (micros % 1000) as u32, out);
}

/// `whole.thousandths`, the latter with three digits, by integer
/// arithmetic: float formatting was a visible share of a line.
fn decimal_3(whole: u64, thousandths: u32, out: &mut Vec<u8>) {
    push_decimal(out, whole, 1);
    out.push(b'.');
    push_decimal(out, u64::from(thousandths), 3);
}

fn json_opt(value: Option<&[u8]>, out: &mut Vec<u8>) {
    match value {
        Some(value) => json_string(value, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// `bytes` as a JSON string: quotes, backslashes and control characters
/// escaped, bytes that are not UTF-8 replaced by U+FFFD.
pub fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    if !needs_care(bytes) {
        // The usual text: printable ASCII, nothing to escape.
        out.extend_from_slice(bytes);
    } else if bytes.is_ascii() {
        json_escape(bytes, out);
    } else {
        for chunk in bytes.utf8_chunks() {
            json_escape(chunk.valid().as_bytes(), out);
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Valid UTF-8 `text` with JSON's escapes; the runs between them are
/// copied whole.
fn json_escape(text: &[u8], out: &mut Vec<u8>) {
    let mut run = 0;
    for (at, &byte) in text.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[run..at]);
        run = at + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&text[run..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `bytes` holds a byte a JSON string cannot hold as it is
/// (quote, backslash, controls) or that needs a look as UTF-8 (non-ASCII).
/// No early exit, so that the compiler checks 16 bytes at a time.
fn needs_care(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |care, &byte| {
        care | !(0x20..0x7f).contains(&byte) | (byte == b'"') | (byte == b'\\')
    })
}

/// Text inside a `combined` field: `"` and `\` escaped with a backslash,
/// control and non-ASCII bytes as `\xHH` (as nginx writes them).
pub fn combined_text(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        match byte {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', byte]),
            0x20..0x7f => out.push(byte),
            _ => _ = write!(out, "\\x{byte:02X}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// 2026-12-01T13:18:36.123Z
    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_131_116_123)
    }

    fn record() -> (Head<'static>, Tail<'static>) {
        let head = Head {
            time: time(),
            listener: b"edge",
            client: "127.0.0.1:50000".parse().unwrap(),
            method: b"GET",
            host: Some(b"example.com"),
            path: b"/a?b=1",
            protocol: Version::HTTP_11,
            referer: None,
            user_agent: Some(b"curl/8"),
        };
        let tail = Tail {
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            upstream: Some(Duration::from_micros(1250)),
            pool: Some(b"web".as_slice()),
            backend: Some(b"127.0.0.1:9001".as_slice()),
            attempts: 1,
            policy: b"rr",
            policy_version: 3,
            decision: Duration::from_micros(7),
            tls: false,
            sni: None,
            error: None,
        };
        (head, tail)
    }

    fn json(head: &Head<'_>, tail: &Tail<'_>) -> String {
        let mut out = Vec::new();
        json_head(head, &mut out);
        json_tail(tail, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn combined(head: &Head<'_>, tail: &Tail<'_>) -> String {
        let mut out = Vec::new();
        let status_at = combined_head(head, &mut out);
        combined_tail(tail, &mut out, status_at);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_line_has_every_key_in_order() {
        let (head, tail) = record();
        assert_eq!(
            json(&head, &tail),
            "{\"ts\":\"2026-12-01T13:18:36.123Z\",\"listener\":\"edge\",\"client\":\"127.0.0.1:50000\",\
             \"method\":\"GET\",\"host\":\"example.com\",\"path\":\"/a?b=1\",\"protocol\":\"HTTP/1.1\",\
             \"status\":200,\"bytes_in\":0,\"bytes_out\":12,\"duration_ms\":1.500,\"upstream_ms\":1.250,\
             \"pool\":\"web\",\"backend\":\"127.0.0.1:9001\",\"attempts\":1,\"policy\":\"rr\",\
             \"policy_version\":3,\"decision_us\":7,\"tls\":false,\"sni\":null,\"error\":null}\n"
        );
    }

    /// Each way through `push_decimal` writes what `format!` does.
    #[test]
    fn decimals_match_format_at_every_width() {
        let numbers = [
            0, 7, 9, 10, 42, 99, 100, 505, 999, 1000, 4321, 9999, 10_000, 65_535,
        ];
        for n in numbers.into_iter().chain([u64::MAX / 3, u64::MAX]) {
            for width in [1, 2, 3, 4, 5, 20] {
                let mut out = b"x".to_vec();
                push_decimal(&mut out, n, width);
                assert_eq!(out, format!("x{n:0width$}").into_bytes(), "{n} at {width}");
            }
        }
    }

    /// Numbers and addresses written digit by digit read as `Display`
    /// writes them.
    #[test]
    fn json_numbers_and_addresses_match_display() {
        let client: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            80,
            0,
            2,
        ));
        let (head, tail) = record();
        let head = Head {
            time: UNIX_EPOCH + Duration::from_millis(1_000_000_000_007),
            client,
            ..head
        };
        let scoped_text = scoped.to_string();
        let tail = Tail {
            backend: Some(scoped_text.as_bytes()),
            status: 504,
            bytes_in: u64::MAX,
            duration: Duration::from_micros(12_345_678_901),
            upstream: Some(Duration::from_micros(5)),
            attempts: 10,
            policy_version: 1_234_567,
            decision: Duration::from_micros(1_000),
            ..tail
        };
        let line = json(&head, &tail);
        for part in [
            "\"ts\":\"2001-09-09T01:46:40.007Z\"".to_owned(),
            format!("\"client\":\"{client}\""),
            format!("\"backend\":\"{scoped}\""),
            format!("\"status\":504,\"bytes_in\":{},", u64::MAX),
            "\"duration_ms\":12345678.901,\"upstream_ms\":0.005,".to_owned(),
            "\"attempts\":10,".to_owned(),
            "\"policy_version\":1234567,\"decision_us\":1000,".to_owned(),
        ] {
            assert!(line.contains(&part), "{part} in {line}");
        }
    }

    #[test]
    fn json_local_answer_has_nulls_and_its_error() {
        let (head, tail) = record();
        let head = Head { host: None, ..head };
        let tail = Tail {
            upstream: None,
            pool: None,
            backend: None,
            attempts: 0,
            error: Some(b"no healthy backend"),
            tls: true,
            sni: Some(b"a.example".as_slice()),
            ..tail
        };
        let line = json(&head, &tail);
        for part in [
            "\"upstream_ms\":null,\"pool\":null,\"backend\":null,\"attempts\":0,",
            "\"host\":null,",
            "\"tls\":true,\"sni\":\"a.example\",\"error\":\"no healthy backend\"}",
        ] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }

    #[test]
    fn json_strings_escape_quotes_controls_and_bad_utf8() {
        let mut out = Vec::new();
        json_string(b"a\"b\\c\nd\re\tf\x01g\x7fh\xffi\xc3\xa9", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u007fh\u{FFFD}i\u{e9}\""
        );
    }

    #[test]
    fn combined_line_is_nginx_then_upstream() {
        let (head, tail) = record();
        assert_eq!(
            combined(&head, &tail),
            "127.0.0.1 - - [01/Dec/2026:13:18:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/8\" 127.0.0.1:9001 0.001\n"
        );
        let head = Head {
            referer: Some(b"http://x/\"q\""),
            user_agent: Some(b"\xe9\n"),
            ..head
        };
        let tail = Tail {
            upstream: None,
            backend: None,
            status: 65535,
            bytes_out: u64::MAX,
            ..tail
        };
        assert_eq!(
            combined(&head, &tail),
            format!(
                "127.0.0.1 - - [01/Dec/2026:13:18:36 +0000] \"GET /a?b=1 HTTP/1.1\" 65535 {} \"http://x/\\\"q\\\"\" \"\\xE9\\x0A\" - -\n",
                u64::MAX
            )
        );
    }
}
