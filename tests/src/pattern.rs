//! Deterministic pseudo-random byte streams for the large upload and
//! download tests.
//!
//! The stream for a seed is a sequence of splitmix64 words in little-endian
//! order, so any chunking that cuts at multiples of 8 bytes yields the same
//! bytes. [`PatternBody`] streams it as an HTTP body without ever holding
//! more than one chunk; [`pattern_sha256`] computes the expected digest the
//! same way, so a 50 MB transfer never needs a 50 MB buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Size of one generated chunk (a multiple of 8).
pub const CHUNK: usize = 64 * 1024;

/// The generator: splitmix64.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
}

impl Pattern {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Pattern { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next `n` bytes. `n` must be a multiple of 8 unless this is the
    /// last chunk taken from the generator.
    pub fn take(&mut self, n: usize) -> Bytes {
        let mut out = Vec::with_capacity(n);
        while out.len() + 8 <= n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = n - out.len();
        if rest > 0 {
            out.extend_from_slice(&self.next_u64().to_le_bytes()[..rest]);
        }
        Bytes::from(out)
    }
}

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 (hex) of the first `len` bytes of the stream for `seed`.
pub fn pattern_sha256(seed: u64, len: u64) -> String {
    let mut pattern = Pattern::new(seed);
    let mut hasher = Sha256::new();
    let mut remaining = len;
    while remaining > 0 {
        let n = remaining.min(CHUNK as u64) as usize;
        hasher.update(pattern.take(n));
        remaining -= n as u64;
    }
    hex(&hasher.finalize())
}

/// An HTTP body streaming `len` bytes of the pattern for a seed, one
/// [`CHUNK`] per frame, with an exact size hint (so clients send a
/// `Content-Length`).
#[derive(Debug)]
pub struct PatternBody {
    pattern: Pattern,
    remaining: u64,
}

impl PatternBody {
    /// A body of `len` bytes for `seed`.
    pub fn new(seed: u64, len: u64) -> Self {
        PatternBody {
            pattern: Pattern::new(seed),
            remaining: len,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(CHUNK as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.pattern.take(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Streams a body into SHA-256, returning (hex digest, length). Never holds
/// more than one frame.
pub async fn sha256_of_body<B>(mut body: B) -> anyhow::Result<(String, u64)>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| anyhow::anyhow!("body error after {len} bytes: {}", e.into()))?;
        if let Ok(data) = frame.into_data() {
            use bytes::Buf;
            len += data.remaining() as u64;
            let mut data = data;
            while data.has_remaining() {
                let chunk = data.chunk();
                hasher.update(chunk);
                let n = chunk.len();
                data.advance(n);
            }
        }
    }
    Ok((hex(&hasher.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_the_stream() {
        let mut a = Pattern::new(3);
        let whole = a.take(1000);
        let mut b = Pattern::new(3);
        let mut parts = b.take(512).to_vec();
        parts.extend_from_slice(&b.take(488));
        assert_eq!(whole.as_ref(), parts.as_slice());
        assert_ne!(Pattern::new(4).take(16), Pattern::new(3).take(16));
    }

    #[test]
    fn digest_matches_a_direct_hash() {
        let len = CHUNK as u64 * 2 + 13;
        let bytes = Pattern::new(9).take(len as usize);
        assert_eq!(pattern_sha256(9, len), hex(&Sha256::digest(&bytes)));
    }
}
