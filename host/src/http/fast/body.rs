//! A request body on its way from the client to a backend, relayed as it
//! arrives with its framing untouched: `Content-Length` bytes, or chunked
//! coding checked by the strict [`ChunkScanner`] (nothing ambiguous is
//! forwarded). The body bytes that came with the head go out in the same
//! write as the upstream head ([`RequestBody::prefill`]).
//!
//! Whose fault a failure is decides what follows: invalid framing, a
//! client that closes before the body ends or pauses longer than
//! [`CLIENT_BODY_TIMEOUT`] is the client's ([`ClientFault`]: 400 or 408,
//! never counted against the backend); a backend that stops reading the
//! body for longer than its pool's `idle_timeout`, or breaks the
//! connection, is the backend's.
//!
//! `Expect: 100-continue`: the proxy answers `100 Continue` itself when it
//! is ready for the body (a backend was chosen and connected) and the
//! client has not started sending it; the backend does not see `Expect`.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::ChunkScanner;
use super::request::BodyFraming;
use super::upstream::RequestBody;
use crate::http::retry::{AttemptError, ClientFault};
use crate::upstream::RawConnection;

/// Longest pause of a client between two reads of its request body.
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Size a client read buffer grows by while a body streams through it.
const READ_CHUNK: usize = 16 * 1024;

/// Where a request body stands; kept across the attempts of one request.
#[derive(Debug)]
pub struct BodyState {
    progress: Progress,
    expect_continue: bool,
    /// Some of the body has been sent to a backend: it cannot go again.
    pub sent: bool,
    /// The body has been read to its end.
    pub done: bool,
    /// Body bytes taken from the client so far (chunk framing included).
    pub received: u64,
    /// A framing error found while prefilling, reported by the next send.
    error: Option<ClientFault>,
}

#[derive(Debug)]
enum Progress {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    Chunked(ChunkScanner),
}

impl BodyState {
    /// The state of a body with `framing` (`None` for no body).
    pub fn new(framing: BodyFraming, expect_continue: bool) -> Option<BodyState> {
        let progress = match framing {
            BodyFraming::None => return None,
            BodyFraming::Length(length) => Progress::Length(length),
            BodyFraming::Chunked => Progress::Chunked(ChunkScanner::default()),
        };
        Some(BodyState {
            progress,
            expect_continue,
            sent: false,
            done: false,
            received: 0,
            error: None,
        })
    }

    /// How the body is framed on the wire (a length's value is what is
    /// left of it).
    pub fn framing(&self) -> BodyFraming {
        match self.progress {
            Progress::Length(left) => BodyFraming::Length(left),
            Progress::Chunked(_) => BodyFraming::Chunked,
        }
    }

    /// How many of `bytes` belong to the body, and whether it ends there.
    fn advance(&mut self, bytes: &[u8]) -> Result<(usize, bool), ClientFault> {
        let advanced = self.take(bytes)?;
        self.received += advanced.0 as u64;
        Ok(advanced)
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(usize, bool), ClientFault> {
        match &mut self.progress {
            Progress::Length(left) => {
                let take = (*left).min(bytes.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            Progress::Chunked(scanner) => match scanner.scan(bytes) {
                Ok(Some(end)) => Ok((end, true)),
                Ok(None) => Ok((bytes.len(), false)),
                Err(reason) => Err(ClientFault::BadBody(reason)),
            },
        }
    }
}

/// One attempt's view of the body: the state, and the client it is read
/// from.
pub struct Upload<'a, IO> {
    /// The client connection.
    pub client: &'a mut IO,
    /// Bytes read from the client and not consumed yet.
    pub input: &'a mut BytesMut,
    /// The body's progress.
    pub state: &'a mut BodyState,
    /// The backend's pool's `idle_timeout`: the longest it may stop
    /// reading the body.
    pub idle: Duration,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> RequestBody for Upload<'_, IO> {
    fn replayable(&self) -> bool {
        false
    }

    fn prefill(&mut self, head: &mut Vec<u8>) {
        let state = &mut *self.state;
        if state.done || self.input.is_empty() {
            return;
        }
        match state.advance(self.input) {
            Ok((take, end)) => {
                head.extend_from_slice(&self.input[..take]);
                self.input.advance(take);
                state.sent |= take > 0;
                state.done = end;
            }
            Err(fault) => state.error = Some(fault),
        }
    }

    async fn send_rest(&mut self, connection: &mut RawConnection) -> Result<(), AttemptError> {
        loop {
            if let Some(fault) = self.state.error {
                return Err(AttemptError::Client(fault));
            }
            if self.state.done {
                return Ok(());
            }
            if !self.input.is_empty() {
                self.state.expect_continue = false;
                self.forward_buffered(connection).await?;
                continue;
            }
            if std::mem::take(&mut self.state.expect_continue) && !self.state.sent {
                let continued = self.client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                continued
                    .await
                    .map_err(|_| AttemptError::Client(ClientFault::Aborted))?;
            }
            self.read_client(connection).await?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Upload<'_, IO> {
    /// Sends the body bytes in the input buffer on to the backend.
    async fn forward_buffered(&mut self, upstream: &mut RawConnection) -> Result<(), AttemptError> {
        let stream = &mut upstream.stream;
        let (take, end) = self
            .state
            .advance(self.input)
            .map_err(AttemptError::Client)?;
        self.state.sent |= take > 0;
        let written = async {
            stream.write_all(&self.input[..take]).await?;
            if end {
                stream.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(self.idle, written).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(AttemptError::Broken(format!(
                    "sending the request body: {error}"
                )));
            }
            Err(_) => {
                return Err(AttemptError::Broken(format!(
                    "the backend stopped reading the request body for {:?}",
                    self.idle
                )));
            }
        }
        self.input.advance(take);
        self.state.done = end;
        Ok(())
    }

    /// Reads more of the body from the client, while watching the
    /// backend: bytes from it (an early response) or its close end the
    /// upload.
    async fn read_client(&mut self, upstream: &mut RawConnection) -> Result<(), AttemptError> {
        if self.input.capacity() - self.input.len() < 1024 {
            self.input.reserve(READ_CHUNK);
        }
        if upstream.buffer.capacity() - upstream.buffer.len() < 1024 {
            upstream.buffer.reserve(READ_CHUNK);
        }
        let read = async {
            tokio::select! {
                biased;
                read = self.client.read_buf(self.input) => Some(read),
                _ = upstream.stream.read_buf(&mut upstream.buffer) => None,
            }
        };
        match tokio::time::timeout(CLIENT_BODY_TIMEOUT, read).await {
            Err(_) => Err(AttemptError::Client(ClientFault::Timeout)),
            Ok(Some(Ok(0) | Err(_))) => Err(AttemptError::Client(ClientFault::Aborted)),
            Ok(Some(Ok(_))) => Ok(()),
            Ok(None) => Err(AttemptError::Broken(
                "the backend answered or closed before the request body ended".into(),
            )),
        }
    }
}
