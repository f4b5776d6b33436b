//! Streaming a response body from the backend to the client as it
//! arrives, framing untouched: `Content-Length` bytes, chunked coding
//! relayed byte for byte (the strict [`ChunkScanner`] only finds where it
//! ends, and refuses what two parsers could read differently), or
//! everything until the backend closes. The body bytes that arrived with
//! the head go out in the same write as the head, so framing found broken
//! in them is still a 502 ([`RelayError::Invalid`]). Between two reads the
//! backend may pause at most the pool's `idle_timeout`; the client must
//! take each write within the listener's `send_timeout`, or the response
//! is cut and both connections closed.

use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::ChunkScanner;
use super::response::Framing;
use crate::upstream::RawConnection;

/// How a relay ended badly.
#[derive(Debug)]
pub enum RelayError {
    /// The framing of the first body bytes is broken: nothing was sent to
    /// the client yet.
    Invalid(&'static str),
    /// The client's side failed (it went away, or stopped reading for the
    /// send timeout).
    Client,
    /// The backend failed or sent invalid framing mid-body.
    Backend(String),
    /// The backend paused longer than `idle_timeout`.
    Idle(Duration),
}

/// Writes `out` (the client's head) and the body to `client`, adding the
/// body bytes written to `sent` as they go. On success
/// the body has been relayed whole and the connection's buffer holds only
/// what followed it (nothing, from a well-behaved backend).
pub async fn relay<C: AsyncWrite + Unpin>(
    client: &mut C,
    out: &mut Vec<u8>,
    upstream: &mut RawConnection,
    framing: Framing,
    (idle, send): (Duration, Duration),
    sent: &mut u64,
) -> Result<(), RelayError> {
    let mut body = Body::new(framing);
    let mut first = true;
    loop {
        let (take, done) = match body.advance(&upstream.buffer) {
            Ok(advanced) => advanced,
            Err(reason) if first => return Err(RelayError::Invalid(reason)),
            Err(reason) => return Err(RelayError::Backend(reason.into())),
        };
        let chunk = &upstream.buffer[..take];
        if first {
            out.extend_from_slice(chunk);
            // Responses that became ready in the same tick go out back to
            // back (see `upstream::round_trip`).
            tokio::task::yield_now().await;
            write(client, out, send).await?;
            first = false;
        } else if !chunk.is_empty() {
            write(client, chunk, send).await?;
        }
        *sent += take as u64;
        let buffer = &mut upstream.buffer;
        buffer.advance(take);
        if done {
            return match tokio::time::timeout(send, client.flush()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(RelayError::Client),
            };
        }
        if buffer.capacity() - buffer.len() < 4096 {
            buffer.reserve(crate::upstream::raw::BUFFER);
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

/// Writes `bytes` to the client within `send`.
async fn write<C: AsyncWrite + Unpin>(
    client: &mut C,
    bytes: &[u8],
    send: Duration,
) -> Result<(), RelayError> {
    match tokio::time::timeout(send, client.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(RelayError::Client),
    }
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
    fn advance(&mut self, buffer: &[u8]) -> Result<(usize, bool), &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
