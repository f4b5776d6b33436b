//! Streaming a response body from the backend to the client as it
//! arrives, framing untouched: `Content-Length` bytes, chunked coding
//! relayed byte for byte (a [`ChunkScanner`] only finds where it ends), or
//! everything until the backend closes. The body bytes that arrived with
//! the head go out in the same write as the head. Between two reads the
//! backend may pause at most the pool's `idle_timeout`.

use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::response::Framing;
use super::upstream::RawConnection;

/// How a relay ended badly.
#[derive(Debug)]
pub enum RelayError {
    /// The client's side failed (it went away).
    Client,
    /// The backend failed or sent invalid framing mid-body.
    Backend(String),
    /// The backend paused longer than `idle_timeout`.
    Idle(Duration),
}

/// Writes `out` (the client's head) and the body to `client`. On success
/// the body has been relayed whole and the connection's buffer holds only
/// what followed it (nothing, from a well-behaved backend).
pub async fn relay<C: AsyncWrite + Unpin>(
    client: &mut C,
    out: &mut Vec<u8>,
    upstream: &mut RawConnection,
    framing: Framing,
    idle: Duration,
) -> Result<(), RelayError> {
    let mut body = Body::new(framing);
    let mut first = true;
    loop {
        let (take, done) = body
            .advance(&upstream.buffer)
            .map_err(RelayError::Backend)?;
        let chunk = &upstream.buffer[..take];
        if first {
            out.extend_from_slice(chunk);
            write(client, out).await?;
            first = false;
        } else if !chunk.is_empty() {
            write(client, chunk).await?;
        }
        let buffer = &mut upstream.buffer;
        buffer.advance(take);
        if done {
            return client.flush().await.map_err(|_| RelayError::Client);
        }
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(16 * 1024);
        }
        let read = tokio::time::timeout(idle, upstream.stream.read_buf(buffer)).await;
        match read {
            Err(_) => return Err(RelayError::Idle(idle)),
            Ok(Err(error)) => return Err(RelayError::Backend(error.to_string())),
            Ok(Ok(0)) if framing == Framing::Eof => body.eof = true,
            Ok(Ok(0)) => return Err(RelayError::Backend("closed mid-body".into())),
            Ok(Ok(_)) => {}
        }
    }
}

async fn write<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> Result<(), RelayError> {
    client
        .write_all(bytes)
        .await
        .map_err(|_| RelayError::Client)
}

/// Where the body stands.
struct Body {
    framing: Framing,
    /// Bytes left of a `Content-Length` body.
    left: u64,
    chunks: ChunkScanner,
    eof: bool,
}

impl Body {
    fn new(framing: Framing) -> Body {
        let left = match framing {
            Framing::Length(len) => len,
            _ => 0,
        };
        Body {
            framing,
            left,
            chunks: ChunkScanner::default(),
            eof: false,
        }
    }

    /// How many of `buffer`'s bytes belong to the body, and whether the
    /// body ends with them.
    fn advance(&mut self, buffer: &[u8]) -> Result<(usize, bool), String> {
        match self.framing {
            Framing::Empty => Ok((0, true)),
            Framing::Length(_) => {
                let take = self.left.min(buffer.len() as u64);
                self.left -= take;
                Ok((take as usize, self.left == 0))
            }
            Framing::Chunked => match self.chunks.scan(buffer)? {
                Some(end) => Ok((end, true)),
                None => Ok((buffer.len(), false)),
            },
            Framing::Eof => Ok((buffer.len(), self.eof)),
        }
    }
}

/// Finds the end of a chunked body (RFC 9112 section 7.1) in bytes fed in
/// order, without changing them.
#[derive(Debug, Default)]
pub struct ChunkScanner {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// After the size: extensions or whitespace until the line ends.
    SizeLine,
    /// `size` data bytes left.
    Data,
    /// The CRLF after the data.
    DataEnd,
    /// After the last chunk: at the start of a trailer line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The final CRLF: one `\n` away from the end.
    FinalLf,
}

impl ChunkScanner {
    /// Scans `bytes`, the next part of the body: `Some(n)` when the body
    /// ends after `n` of them.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, String> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == ChunkState::Data {
                let take = self.size.min((bytes.len() - i) as u64);
                self.size -= take;
                i += take as usize;
                if self.size == 0 {
                    self.state = ChunkState::DataEnd;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            if self.step(b)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// One framing byte; true at the end of the body.
    fn step(&mut self, b: u8) -> Result<bool, String> {
        use ChunkState::*;
        match (self.state, b) {
            (Size, b) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or("chunk size overflow")?;
            }
            (Size | SizeLine, b'\n') => {
                self.state = if self.size == 0 { TrailerStart } else { Data };
            }
            (Size | SizeLine, _) => self.state = SizeLine,
            (DataEnd, b'\r') => {}
            (DataEnd, b'\n') => self.state = Size,
            (DataEnd, _) => return Err("missing CRLF after chunk data".into()),
            (TrailerStart, b'\r') => self.state = FinalLf,
            (TrailerStart, b'\n') | (FinalLf, b'\n') => return Ok(true),
            (FinalLf, _) => return Err("invalid end of chunked body".into()),
            (Trailer, b'\n') => self.state = TrailerStart,
            (TrailerStart | Trailer, _) => self.state = Trailer,
            (Data, _) => unreachable!("data bytes are skipped in bulk"),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Option<usize> {
        let mut scanner = ChunkScanner::default();
        let mut offset = 0;
        for part in body.chunks(piece) {
            if let Some(end) = scanner.scan(part).unwrap() {
                return Some(offset + end);
            }
            offset += part.len();
        }
        None
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_in_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..body.len() {
            assert_eq!(scan_in_pieces(body, piece), Some(end), "pieces of {piece}");
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 64), Some(5));
        assert_eq!(scan_in_pieces(b"3\r\nabc\r\n", 64), None);
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        assert!(ChunkScanner::default().scan(b"3\r\nabcX\r\n").is_err());
        assert!(ChunkScanner::default().scan(b"0\r\n\rX").is_err());
        assert!(
            ChunkScanner::default()
                .scan(b"ffffffffffffffffff\r\n")
                .is_err()
        );
    }

    #[test]
    fn body_lengths() {
        let mut body = Body::new(Framing::Length(5));
        assert_eq!(body.advance(b"abc").unwrap(), (3, false));
        assert_eq!(body.advance(b"deXX").unwrap(), (2, true));
        assert_eq!(Body::new(Framing::Empty).advance(b"x").unwrap(), (0, true));
        let mut eof = Body::new(Framing::Eof);
        assert_eq!(eof.advance(b"ab").unwrap(), (2, false));
        eof.eof = true;
        assert_eq!(eof.advance(b"").unwrap(), (0, true));
    }
}
