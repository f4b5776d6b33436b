//! Tests of the PROXY protocol encoder, parser and socket reader.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn addresses(source: &str, destination: &str) -> Addresses {
    Addresses {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

fn encoded(version: ProxyProtocol, client: Option<Addresses>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(version, client, &mut out);
    out
}

fn complete(bytes: &[u8]) -> (Header, usize) {
    match parse(bytes) {
        Ok(Parsed::Complete { header, length }) => (header, length),
        other => panic!("{other:?} for {bytes:?}"),
    }
}

#[test]
fn v1_is_the_text_line() {
    let v4 = addresses("192.0.2.7:5000", "10.0.0.1:80");
    let line = encoded(ProxyProtocol::V1, Some(v4));
    assert_eq!(line, b"PROXY TCP4 192.0.2.7 10.0.0.1 5000 80\r\n");
    let v6 = addresses("[2001:db8::7]:65535", "[::1]:443");
    let line = encoded(ProxyProtocol::V1, Some(v6));
    assert_eq!(line, b"PROXY TCP6 2001:db8::7 ::1 65535 443\r\n");
    assert_eq!(encoded(ProxyProtocol::V1, None), b"PROXY UNKNOWN\r\n");
}

#[test]
fn v2_is_the_binary_header() {
    let v4 = addresses("192.0.2.7:5000", "10.0.0.1:80");
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1]);
    expected.extend_from_slice(&[0x13, 0x88, 0, 80]);
    assert_eq!(encoded(ProxyProtocol::V2, Some(v4)), expected);

    let v6 = addresses("[2001:db8::7]:5000", "[::1]:443");
    let bytes = encoded(ProxyProtocol::V2, Some(v6));
    assert_eq!(bytes.len(), 16 + 36);
    assert_eq!(&bytes[12..16], &[0x21, 0x21, 0, 36]);
    assert_eq!(&bytes[16..18], &[0x20, 0x01]);
    assert_eq!(bytes[16 + 31], 1, "::1 ends in 1");
    assert_eq!(&bytes[48..], &[0x13, 0x88, 0x01, 0xbb]);

    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0, 0, 0]);
    assert_eq!(encoded(ProxyProtocol::V2, None), local);
}

#[test]
fn mixed_families_are_written_as_ipv6() {
    let mixed = addresses("192.0.2.7:5000", "[::1]:80");
    let line = encoded(ProxyProtocol::V1, Some(mixed));
    assert_eq!(line, b"PROXY TCP6 ::ffff:192.0.2.7 ::1 5000 80\r\n");
}

#[test]
fn what_is_encoded_parses_back() {
    let cases = [
        addresses("192.0.2.7:5000", "10.0.0.1:80"),
        addresses("[2001:db8::7]:1", "[fe80::1]:65535"),
    ];
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        for case in cases {
            let mut bytes = encoded(version, Some(case));
            let length = bytes.len();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(complete(&bytes), (Header::Proxied(case), length));
        }
        let local = encoded(version, None);
        assert_eq!(complete(&local), (Header::Local, local.len()));
    }
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let client = addresses("[2001:db8::7]:5000", "[::1]:443");
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let bytes = encoded(version, Some(client));
        for end in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..end]),
                Ok(Parsed::Incomplete),
                "{version:?} {end}"
            );
        }
    }
}

#[test]
fn v2_extensions_are_skipped() {
    let mut bytes = V2_SIGNATURE.to_vec();
    // 12 bytes of addresses, then a 5-byte ALPN TLV and a 4-byte NOOP.
    bytes.extend_from_slice(&[0x21, 0x11, 0, 12 + 5 + 4]);
    bytes.extend_from_slice(&[203, 0, 113, 9, 127, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90]);
    bytes.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 1, 0]);
    let length = bytes.len();
    bytes.extend_from_slice(b"\x16\x03\x01");
    let expected = addresses("203.0.113.9:12345", "127.0.0.1:8080");
    assert_eq!(complete(&bytes), (Header::Proxied(expected), length));
}

#[test]
fn v2_local_keeps_the_peer_and_ignores_its_addresses() {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.extend_from_slice(&[0x20, 0x11, 0, 12]);
    bytes.extend_from_slice(&[1; 12]);
    assert_eq!(complete(&bytes), (Header::Local, 28));
    // AF_UNSPEC with the PROXY command: no address to take either.
    let mut unspec = V2_SIGNATURE.to_vec();
    unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
    assert_eq!(complete(&unspec), (Header::Local, 16));
}

#[test]
fn malformed_headers_are_refused() {
    let malformed = |bytes: &[u8]| match parse(bytes) {
        Err(HeaderError::Malformed(_)) => {}
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    };
    malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
    malformed(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");
    malformed(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n");
    malformed(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n");
    malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n");
    malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n");
    malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");
    malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");
    let mut long = b"PROXY TCP6 ".to_vec();
    long.resize(V1_MAX, b'1');
    malformed(&long);
    let v2 = |tail: &[u8]| [&V2_SIGNATURE[..], tail].concat();
    malformed(&v2(&[0x11, 0x11, 0, 12]));
    malformed(&v2(&[0x22, 0x11, 0, 12]));
    malformed(&v2(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]));
    malformed(&v2(&[0x21, 0x51, 0, 0]));
    malformed(&v2(&[0x21, 0x11, 0xff, 0xff]));
}

#[test]
fn other_bytes_are_no_header() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /",
        b"\x16\x03\x01",
        b"\r\n\r\nX",
    ] {
        assert_eq!(parse(bytes), Err(HeaderError::Missing), "{bytes:?}");
        assert!(!looks_like_header(bytes), "{bytes:?}");
    }
    assert!(looks_like_header(b"PROXY TCP4"));
    assert!(looks_like_header(b"\r\n\r\n\0"));
    assert!(looks_like_header(&V2_SIGNATURE));
    assert!(!looks_like_header(b"PROX"));
}

/// A connected pair over a real socket.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sender = TcpStream::connect(listener.local_addr().unwrap());
    let (sender, accepted) = tokio::join!(sender, listener.accept());
    let sender = sender.unwrap();
    sender.set_nodelay(true).unwrap();
    (sender, accepted.unwrap().0)
}

/// Writes `bytes` one at a time, each flushed on its own segment once the
/// reader has taken the previous ones or is waiting.
async fn trickle(mut sender: TcpStream, bytes: Vec<u8>) -> TcpStream {
    for byte in bytes {
        sender.write_all(&[byte]).await.unwrap();
        tokio::task::yield_now().await;
    }
    sender
}

#[tokio::test]
async fn a_header_in_one_byte_writes_is_read_exactly() {
    let client = addresses("[2001:db8::7]:5000", "192.0.2.1:443");
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let (sender, mut receiver) = pair().await;
        let mut bytes = encoded(version, Some(client));
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let writer = tokio::spawn(trickle(sender, bytes));
        let header = read_from(&mut receiver, Duration::from_secs(30)).await;
        let mixed = same_family(client);
        let expected = Addresses {
            source: mixed.0,
            destination: mixed.1,
        };
        assert_eq!(header, Ok(Header::Proxied(expected)), "{version:?}");
        drop(writer.await.unwrap());
        let mut rest = Vec::new();
        receiver.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n", "{version:?}");
    }
}

#[tokio::test]
async fn a_connection_without_a_header_or_ending_in_one_fails() {
    let (mut sender, mut receiver) = pair().await;
    sender.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let read = read_from(&mut receiver, Duration::from_secs(30)).await;
    assert_eq!(read, Err(HeaderError::Missing));

    let (mut sender, mut receiver) = pair().await;
    sender.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    drop(sender);
    let read = read_from(&mut receiver, Duration::from_secs(30)).await;
    assert_eq!(read, Err(HeaderError::Ended));
}

#[tokio::test]
async fn a_header_that_does_not_come_times_out() {
    let (mut sender, mut receiver) = pair().await;
    sender.write_all(b"PROXY TCP4").await.unwrap();
    let read = read_from(&mut receiver, Duration::from_millis(50)).await;
    assert_eq!(read, Err(HeaderError::Timeout(Duration::from_millis(50))));
}
