//! The PROXY protocol (HAProxy's, versions 1 and 2): one header at the
//! start of a TCP connection that says whose connection it carries.
//!
//! [`encode`] writes the header the proxy sends first on a new connection
//! to a backend of a pool with `proxy_protocol = "v1" | "v2"`; [`parse`]
//! reads one at the start of a client connection on a listener with
//! `accept_proxy_protocol = true`, and [`read_from`] takes exactly its
//! bytes off a socket (peeking, so what follows stays in the socket for
//! the HTTP or TLS parser, however the bytes were segmented).
//!
//! v1 is a text line: `PROXY TCP4|TCP6 src dst sport dport\r\n` (or
//! `PROXY UNKNOWN ...\r\n`), at most [`V1_MAX`] bytes. v2 is binary: the
//! 12-byte [`V2_SIGNATURE`], a version/command byte (`0x21` PROXY, `0x20`
//! LOCAL), a family/transport byte, a big-endian length, then the
//! addresses and ports; type-length-value extensions may follow them
//! within the length and are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

/// The first 12 bytes of a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, its `\r\n` included.
pub const V1_MAX: usize = 107;

/// The longest v2 header accepted (its fixed 16 bytes and up to 4 KiB of
/// addresses and extensions: bounds what a client may make the proxy
/// read before HTTP).
pub const V2_MAX: usize = 16 + 4096;

/// The endpoints of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address and port the client connected to.
    pub destination: SocketAddr,
}

/// What a received header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is a client's, from `source` to `destination`.
    Proxied(Addresses),
    /// The sender's own connection (v2 LOCAL, v1 `UNKNOWN`, or a v2 family
    /// without IP addresses): the peer's address stands.
    Local,
}

/// How far [`parse`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header, `length` bytes long (what follows is not its).
    Complete {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        length: usize,
    },
    /// Every byte so far belongs to the header, which needs more.
    Incomplete,
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Neither `PROXY ` nor the v2 signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that breaks the protocol.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The connection ended (or failed) before the header did.
    #[error("connection ended in the PROXY protocol header")]
    Ended,
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(std::time::Duration),
}

/// Appends the `version` header for a connection relaying the client
/// connection `client`, or for the proxy's own connection (`None`: v2
/// LOCAL, v1 `PROXY UNKNOWN`). Mixed families are both written as IPv6
/// (an IPv4 address as `::ffff:a.b.c.d`).
pub fn encode(version: ProxyProtocol, client: Option<Addresses>, out: &mut Vec<u8>) {
    let Some(addresses) = client else {
        return match version {
            ProxyProtocol::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
            ProxyProtocol::V2 => {
                out.extend_from_slice(&V2_SIGNATURE);
                out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            }
        };
    };
    let (source, destination) = same_family(addresses);
    match version {
        ProxyProtocol::V1 => encode_v1(source, destination, out),
        ProxyProtocol::V2 => encode_v2(source, destination, out),
    }
}

fn same_family(addresses: Addresses) -> (SocketAddr, SocketAddr) {
    let Addresses {
        source,
        destination,
    } = addresses;
    if source.is_ipv4() == destination.is_ipv4() {
        return (source, destination);
    }
    let v6 = |address: SocketAddr| match address.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), address.port()),
        IpAddr::V6(_) => address,
    };
    (v6(source), v6(destination))
}

fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
}

fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&from.octets());
            out.extend_from_slice(&to.octets());
        }
        (from, to) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6_octets(from));
            out.extend_from_slice(&v6_octets(to));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

/// Whether `bytes` (the first ones a peer sent) begin a PROXY header:
/// `PROXY ` or the start of the v2 signature, at least 5 bytes of it
/// (`\r\n\r\n\0` is neither HTTP nor TLS). Fewer bytes say nothing.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    let v2 = bytes.len() >= 5 && V2_SIGNATURE.starts_with(&bytes[..bytes.len().min(12)]);
    v2 || bytes.starts_with(b"PROXY ")
}

/// Reads a header at the start of `bytes`. `Incomplete` only while every
/// byte given can still be part of a header, so a reader may consume them
/// all and wait for more.
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    match bytes.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(HeaderError::Missing),
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let prefix = &bytes[..bytes.len().min(6)];
    if !b"PROXY ".starts_with(prefix) {
        return Err(HeaderError::Missing);
    }
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return match bytes.len() >= V1_MAX {
            true => Err(HeaderError::Malformed("v1 line longer than 107 bytes")),
            false => Ok(Parsed::Incomplete),
        };
    };
    let line = window[..newline]
        .strip_suffix(b"\r")
        .ok_or(HeaderError::Malformed("v1 line not ended by CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::Malformed("v1 not ASCII"))?;
    let header = v1_fields(line)?;
    Ok(Parsed::Complete {
        header,
        length: newline + 1,
    })
}

fn v1_fields(line: &str) -> Result<Header, HeaderError> {
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Header::Local);
    }
    let ipv4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => {
            return Err(HeaderError::Malformed(
                "v1 family not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = || {
        fields
            .next()
            .ok_or(HeaderError::Malformed("v1 field missing"))
    };
    let (source, destination) = (v1_ip(next()?, ipv4)?, v1_ip(next()?, ipv4)?);
    let (source_port, destination_port) = (v1_port(next()?)?, v1_port(next()?)?);
    if fields.next().is_some() {
        return Err(HeaderError::Malformed("v1 fields after the ports"));
    }
    Ok(Header::Proxied(Addresses {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    }))
}

fn v1_ip(text: &str, ipv4: bool) -> Result<IpAddr, HeaderError> {
    let ip = match ipv4 {
        true => text.parse::<Ipv4Addr>().map(IpAddr::V4),
        false => text.parse::<Ipv6Addr>().map(IpAddr::V6),
    };
    ip.map_err(|_| HeaderError::Malformed("v1 address not of its family"))
}

fn v1_port(text: &str) -> Result<u16, HeaderError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let port = digits.then(|| text.parse::<u16>().ok()).flatten();
    port.ok_or(HeaderError::Malformed("v1 port not a number in 0..=65535"))
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let signed = &bytes[..bytes.len().min(12)];
    if !V2_SIGNATURE.starts_with(signed) {
        return Err(HeaderError::Missing);
    }
    if bytes.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (command, family) = (bytes[12], bytes[13]);
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if command >> 4 != 2 {
        return Err(HeaderError::Malformed("v2 version not 2"));
    }
    if command & 0x0f > 1 {
        return Err(HeaderError::Malformed("v2 command not LOCAL or PROXY"));
    }
    if 16 + body > V2_MAX {
        return Err(HeaderError::Malformed("v2 header longer than 4 KiB"));
    }
    if bytes.len() < 16 + body {
        return Ok(Parsed::Incomplete);
    }
    let header = match command & 0x0f {
        0 => Header::Local,
        _ => v2_addresses(family, &bytes[16..16 + body])?,
    };
    Ok(Parsed::Complete {
        header,
        length: 16 + body,
    })
}

/// The addresses of a v2 PROXY command (the extensions after them are
/// skipped).
fn v2_addresses(family: u8, body: &[u8]) -> Result<Header, HeaderError> {
    let short = HeaderError::Malformed("v2 length shorter than its addresses");
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family >> 4 {
        1 => {
            let block = body.get(..12).ok_or(short)?;
            let ip = |at: usize| {
                IpAddr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap_or_default())
            };
            Ok(proxied((ip(0), port(8)), (ip(4), port(10))))
        }
        2 => {
            let block = body.get(..36).ok_or(short)?;
            let ip = |at: usize| {
                IpAddr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap_or_default())
            };
            Ok(proxied((ip(0), port(32)), (ip(16), port(34))))
        }
        // AF_UNSPEC and AF_UNIX carry no IP address: the peer's stands.
        0 | 3 => Ok(Header::Local),
        _ => Err(HeaderError::Malformed("v2 address family unknown")),
    }
}

fn proxied(source: (IpAddr, u16), destination: (IpAddr, u16)) -> Header {
    Header::Proxied(Addresses {
        source: SocketAddr::from(source),
        destination: SocketAddr::from(destination),
    })
}

/// Takes a header off the start of `stream` within `timeout`, exactly its
/// bytes: it peeks, consumes only bytes [`parse`] says are the header's,
/// and waits for more while it is incomplete.
pub async fn read_from(
    stream: &mut TcpStream,
    timeout: std::time::Duration,
) -> Result<Header, HeaderError> {
    match tokio::time::timeout(timeout, read_header(stream)).await {
        Ok(read) => read,
        Err(_) => Err(HeaderError::Timeout(timeout)),
    }
}

async fn read_header(stream: &mut TcpStream) -> Result<Header, HeaderError> {
    let mut header = Vec::new();
    let mut peeked = [0u8; 256];
    loop {
        let n = stream
            .peek(&mut peeked)
            .await
            .map_err(|_| HeaderError::Ended)?;
        if n == 0 {
            return Err(HeaderError::Ended);
        }
        let before = header.len();
        header.extend_from_slice(&peeked[..n]);
        let take = match parse(&header)? {
            Parsed::Complete { header, length } => Ok((header, length - before)),
            Parsed::Incomplete => Err(n),
        };
        let consume = match take {
            Ok((_, length)) | Err(length) => length,
        };
        stream
            .read_exact(&mut peeked[..consume])
            .await
            .map_err(|_| HeaderError::Ended)?;
        if let Ok((parsed, _)) = take {
            return Ok(parsed);
        }
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
