//! Reading a TLS ClientHello off a TCP connection without consuming it:
//! the bytes stay in the socket for the backend, which does the TLS
//! handshake (the proxy never terminates TLS on a `tcp` listener).
//!
//! [`parse`] is a bounded parser over the bytes peeked so far: it walks
//! the TLS records (a hello may span several), then the handshake message,
//! and takes the `server_name` (lower-cased) and the ALPN list out of its
//! extensions. It never reads past [`PEEK_LIMIT`]: a hello that does not
//! fit, a malformed one, and a first byte that is not a TLS handshake
//! record all count as "not TLS". [`peek`] peeks until [`parse`] decides,
//! the client closes, or the listener's `peek_timeout` passes.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::policy::ClientHello;

/// The most bytes peeked for a ClientHello (records included): real ones
/// are 200 B to 2 KB (more with post-quantum key shares), far below it.
pub const PEEK_LIMIT: usize = 16 * 1024;

/// The TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// The handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The extensions the parser reads.
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
/// Record header: type, version, length.
const RECORD_HEADER: usize = 5;

/// What the bytes peeked so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// Not a (usable) ClientHello: another protocol, malformed, too large.
    NotTls,
    /// A ClientHello so far; more bytes are needed.
    Incomplete,
}

/// Parses the first bytes of a connection; see the module docs.
pub fn parse(bytes: &[u8]) -> Peeked {
    let bytes = &bytes[..bytes.len().min(PEEK_LIMIT)];
    let message = match handshake_bytes(bytes) {
        Ok(message) => message,
        Err(peeked) => return peeked,
    };
    let hello = match message.get(..4) {
        Some([CLIENT_HELLO, a, b, c]) => {
            let length = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            match message.get(4..4 + length) {
                Some(body) => body,
                None if bytes.len() >= PEEK_LIMIT => return Peeked::NotTls,
                None => return Peeked::Incomplete,
            }
        }
        Some(_) => return Peeked::NotTls,
        None => return Peeked::Incomplete,
    };
    match hello_fields(hello) {
        Some(hello) => Peeked::Hello(hello),
        None => Peeked::NotTls,
    }
}

/// The handshake bytes carried by the records in `bytes`, concatenated
/// (records are short: a copy of at most [`PEEK_LIMIT`]); `Err` when the
/// first byte already says it is not TLS, or no record is complete yet.
fn handshake_bytes(bytes: &[u8]) -> Result<Vec<u8>, Peeked> {
    if let Some(&version) = bytes.get(1)
        && version != 3
    {
        return Err(Peeked::NotTls);
    }
    let mut message = Vec::new();
    let mut rest = bytes;
    while let Some(header) = rest.get(..RECORD_HEADER) {
        if header[0] != HANDSHAKE || header[1] != 3 {
            // Early data may follow a whole hello; before one, not TLS.
            match message.is_empty() {
                true => return Err(Peeked::NotTls),
                false => break,
            }
        }
        let length = usize::from(header[3]) << 8 | usize::from(header[4]);
        if length == 0 {
            return Err(Peeked::NotTls);
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + length) else {
            break;
        };
        message.extend_from_slice(payload);
        rest = &rest[RECORD_HEADER + length..];
    }
    match (bytes.first(), message.is_empty()) {
        (Some(&first), _) if first != HANDSHAKE => Err(Peeked::NotTls),
        (_, true) if bytes.len() >= PEEK_LIMIT => Err(Peeked::NotTls),
        (_, true) => Err(Peeked::Incomplete),
        (_, false) => Ok(message),
    }
}

/// A cursor over a hello's bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
    }

    /// A block prefixed by its one- or two-byte length.
    fn block8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(n).map(Reader)
    }

    fn block16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(n).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The server name and ALPN list of a ClientHello body; `None` when it
/// is malformed.
fn hello_fields(body: &[u8]) -> Option<ClientHello> {
    let mut hello = Reader(body);
    hello.take(2 + 32)?; // legacy_version, random
    hello.block8()?; // legacy_session_id
    hello.block16()?; // cipher_suites
    hello.block8()?; // legacy_compression_methods
    let mut fields = ClientHello::default();
    if hello.is_empty() {
        return Some(fields); // no extensions (SSL 3 style)
    }
    let mut extensions = hello.block16()?;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.block16()?;
        match kind as u16 {
            SERVER_NAME => fields.server_name = server_name(&mut data)?,
            ALPN => fields.alpn = alpn(&mut data)?,
            _ => {}
        }
    }
    Some(fields)
}

/// The `host_name` entry of a `server_name` extension, lower-cased.
fn server_name(data: &mut Reader<'_>) -> Option<Option<Box<str>>> {
    let mut names = data.block16()?;
    while !names.is_empty() {
        let kind = names.u8()?;
        let name = names.block16()?.0;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            if name.is_empty() || !name.is_ascii() {
                return None;
            }
            return Some(Some(name.to_ascii_lowercase().into()));
        }
    }
    Some(None)
}

/// The protocols of an ALPN extension, in the client's order.
fn alpn(data: &mut Reader<'_>) -> Option<Vec<Box<str>>> {
    let mut list = data.block16()?;
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list.block8()?.0;
        protocols.push(String::from_utf8_lossy(protocol).into());
    }
    Some(protocols)
}

/// The ClientHello at the start of `stream`, peeked (never consumed):
/// `None` when the first bytes are not one, the client closed, or no
/// whole hello came within `timeout`.
pub async fn peek(stream: &TcpStream, timeout: Duration) -> Option<ClientHello> {
    let peeked = tokio::time::timeout(timeout, peek_until_decided(stream)).await;
    peeked.ok().flatten()
}

async fn peek_until_decided(stream: &TcpStream) -> Option<ClientHello> {
    let mut buffer = vec![0u8; PEEK_LIMIT];
    let mut seen = 0;
    // A peek returns at once while any byte is waiting, new or not: after
    // an incomplete hello, wait a little for the rest (its next TCP
    // segments, usually one round trip behind), longer each time.
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        match parse(&buffer[..n]) {
            Peeked::Hello(hello) => return Some(hello),
            Peeked::NotTls => return None,
            Peeked::Incomplete if n > seen => pause = Duration::from_millis(1),
            Peeked::Incomplete => pause = (pause * 2).min(Duration::from_millis(50)),
        }
        seen = n;
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
