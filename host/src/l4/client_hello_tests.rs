//! The ClientHello parser on hellos built byte by byte.

use super::*;

/// Where [`hello_body`]'s extensions length is: after the version (2),
/// random (32), session id (1 + 32), cipher suites (2 + 4), compression
/// (1 + 1).
const EXTENSIONS_AT: usize = 75;

/// A ClientHello body naming `sni` and offering `alpn` (and a few other
/// extensions around them, as real clients send).
fn hello_body(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]); // random
    body.push(32);
    body.extend([9u8; 32]); // session id
    body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two cipher suites
    body.extend([1, 0]); // null compression
    let mut extensions = Vec::new();
    push_extension(&mut extensions, 10, &[0, 2, 0, 29]); // supported groups
    if let Some(name) = sni {
        let mut list = vec![0];
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(name.as_bytes());
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        push_extension(&mut extensions, SERVER_NAME, &data);
    }
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for protocol in alpn {
            list.push(protocol.len() as u8);
            list.extend(protocol.as_bytes());
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        push_extension(&mut extensions, ALPN, &data);
    }
    push_extension(&mut extensions, 43, &[2, 3, 4]); // supported versions
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    body
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// The handshake message of `body`, in TLS records of at most `fragment`
/// bytes each.
fn records(body: &[u8], fragment: usize) -> Vec<u8> {
    let mut message = vec![CLIENT_HELLO];
    message.extend(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend([HANDSHAKE, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn hello(sni: Option<&str>, alpn: &[&str]) -> ClientHello {
    ClientHello {
        server_name: sni.map(Into::into),
        alpn: alpn.iter().map(|&p| p.into()).collect(),
    }
}

#[test]
fn the_server_name_is_lower_cased_and_alpn_kept_in_order() {
    let bytes = records(
        &hello_body(Some("Api.Example.COM"), &["h2", "http/1.1"]),
        16384,
    );
    assert_eq!(
        parse(&bytes),
        Peeked::Hello(hello(Some("api.example.com"), &["h2", "http/1.1"]))
    );
}

#[test]
fn a_hello_without_sni_or_alpn_is_still_tls() {
    assert_eq!(
        parse(&records(&hello_body(None, &[]), 16384)),
        Peeked::Hello(hello(None, &[]))
    );
}

#[test]
fn every_prefix_of_a_hello_is_incomplete() {
    let bytes = records(&hello_body(Some("db.internal"), &["postgresql"]), 16384);
    for end in 0..bytes.len() {
        assert_eq!(
            parse(&bytes[..end]),
            Peeked::Incomplete,
            "first {end} bytes"
        );
    }
    assert!(matches!(parse(&bytes), Peeked::Hello(_)));
}

#[test]
fn a_hello_split_over_several_records_is_joined() {
    let bytes = records(&hello_body(Some("split.example"), &["h2"]), 50);
    assert!(bytes.len() > 2 * 55, "three records");
    assert_eq!(
        parse(&bytes),
        Peeked::Hello(hello(Some("split.example"), &["h2"]))
    );
    // Cut inside the third record: still waiting.
    assert_eq!(parse(&bytes[..120]), Peeked::Incomplete);
}

#[test]
fn early_data_after_a_whole_hello_does_not_matter() {
    let mut bytes = records(&hello_body(Some("zero.rtt"), &[]), 16384);
    bytes.extend([23, 3, 3, 0, 2, 0xaa, 0xbb]);
    assert_eq!(parse(&bytes), Peeked::Hello(hello(Some("zero.rtt"), &[])));
}

#[test]
fn another_protocol_is_not_tls_from_its_first_byte() {
    for first in [&b"G"[..], b"*2\r\n", b"SSH-2.0-", &[0x16, 2]] {
        assert_eq!(parse(first), Peeked::NotTls, "{first:?}");
    }
    // A handshake record that is not a ClientHello.
    assert_eq!(parse(&[HANDSHAKE, 3, 3, 0, 4, 2, 0, 0, 0]), Peeked::NotTls);
}

#[test]
fn a_malformed_hello_is_not_tls() {
    let mut body = hello_body(Some("bad.example"), &["h2"]);
    // The extensions block claims more bytes than the hello holds.
    body[EXTENSIONS_AT] = 0xff;
    assert_eq!(parse(&records(&body, 16384)), Peeked::NotTls);
    // A server name that is not ASCII.
    let body = hello_body(Some("bad\u{e9}.example"), &[]);
    assert_eq!(parse(&records(&body, 16384)), Peeked::NotTls);
}

#[test]
fn a_hello_larger_than_the_limit_is_not_tls() {
    let mut body = hello_body(Some("big.example"), &[]);
    // Pad the extensions to 20 KB: legal TLS, past what the proxy peeks.
    let padding = vec![0u8; 20_000];
    let mut extensions = Vec::new();
    push_extension(&mut extensions, 21, &padding);
    let at = EXTENSIONS_AT;
    let old = u16::from_be_bytes([body[at], body[at + 1]]);
    let new = usize::from(old) + extensions.len();
    assert!(new > PEEK_LIMIT);
    body[at..at + 2].copy_from_slice(&(new as u16).to_be_bytes());
    body.extend(extensions);
    let bytes = records(&body, 16384);
    assert!(bytes.len() > PEEK_LIMIT);
    assert_eq!(parse(&bytes), Peeked::NotTls);
    assert_eq!(parse(&bytes[..PEEK_LIMIT]), Peeked::NotTls);
}
