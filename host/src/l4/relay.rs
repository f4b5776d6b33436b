//! The byte relay between a client and its backend: both directions in
//! one task, each through one fixed buffer ([`RELAY_BUFFER`]), bytes
//! copied once (socket to buffer to socket) and never held beyond it.
//!
//! An end of stream from one side is passed on as a shutdown of writing
//! to the other (half-close): the other direction goes on until its own
//! end. The relay is over when both directions are; or at once when one
//! side fails, when no byte moved either way for the listener's
//! `idle_timeout`, when the backend's active check marks it down in a
//! pool with `on_down = "close-connections"`, or when the listener's
//! drain period is over. Dropping both streams then closes them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Session;
use super::connect::Upstream;
use crate::metrics::Counter;

/// The buffer of each direction. 64 KiB moved a 50 MB stream through
/// loopback about as fast as 256 KiB and clearly faster than 16 KiB
/// (docs/architecture.md, "walk of one TCP connection"); two of them are
/// what an open relay costs.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// How a relay ended, for the log.
#[derive(Debug)]
enum Ended {
    /// Both directions reached their end.
    Done,
    /// One side failed.
    Failed(io::Error),
    /// No byte either way for `idle_timeout`.
    Idle,
}

/// Relays `client` and `upstream` until the relay is over; see the
/// module docs.
pub(super) async fn run(
    mut client: TcpStream,
    mut upstream: Upstream,
    session: &Session,
    closed: impl Future<Output = ()>,
) {
    let backend = std::sync::Arc::clone(upstream.backend());
    let mut cut = backend.close_on_down.then(|| backend.stats.cut.watch());
    let metrics = &session.metrics;
    let relay = Relay {
        up: Pump::new(&metrics.received_bytes),
        down: Pump::new(&metrics.sent_bytes),
        idle: session.timeouts.idle,
        last: Instant::now(),
        timer: Box::pin(tokio::time::sleep(session.timeouts.idle)),
    };
    let relayed = relay.run(&mut client, &mut upstream.stream);
    tokio::select! {
        ended = relayed => match ended {
            Ended::Done => tracing::debug!("relay done"),
            Ended::Failed(error) => tracing::debug!(%error, "relay failed"),
            Ended::Idle => tracing::debug!(idle_timeout = ?session.timeouts.idle, "relay idle: closed"),
        },
        () = crate::pool::cut::cut_or_never(cut.as_mut()) => {
            tracing::debug!("backend marked down: relay closed");
        }
        () = closed => tracing::debug!("drain period over: relay closed"),
    }
}

/// Both directions and the idle timer.
struct Relay<'m> {
    /// Client to backend.
    up: Pump<'m>,
    /// Backend to client.
    down: Pump<'m>,
    idle: Duration,
    /// When a byte last moved.
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Relay<'_> {
    async fn run<C, B>(mut self, client: &mut C, backend: &mut B) -> Ended
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        std::future::poll_fn(|cx| self.poll(cx, client, backend)).await
    }

    fn poll<C, B>(&mut self, cx: &mut Context<'_>, client: &mut C, backend: &mut B) -> Poll<Ended>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let up = self.up.poll(cx, client, backend);
        let down = self.down.poll(cx, backend, client);
        if self.up.take_moved() | self.down.take_moved() {
            self.last = Instant::now();
        }
        for result in [up, down] {
            if let Poll::Ready(Err(error)) = result {
                return Poll::Ready(Ended::Failed(error));
            }
        }
        if self.up.finished && self.down.finished {
            return Poll::Ready(Ended::Done);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Ended::Idle);
            }
            // Bytes moved since the timer was set: it restarts from then.
            self.timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// One direction: reads into its buffer, writes the buffer out, and
/// passes the end of stream on as a shutdown of writing.
struct Pump<'m> {
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    /// The reader said end of stream.
    eof: bool,
    /// The end of stream was passed on: this direction is over.
    finished: bool,
    /// Written since the last flush.
    unflushed: bool,
    /// Bytes moved since the last [`Pump::take_moved`].
    moved: u64,
    counter: &'m Counter,
}

impl<'m> Pump<'m> {
    fn new(counter: &'m Counter) -> Pump<'m> {
        Pump {
            buffer: vec![0; RELAY_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            finished: false,
            unflushed: false,
            moved: 0,
            counter,
        }
    }

    /// Whether bytes moved since the last call (counted into the
    /// listener's counter now: one atomic add per wake-up, not per read).
    fn take_moved(&mut self) -> bool {
        let moved = std::mem::take(&mut self.moved);
        if moved > 0 {
            self.counter.add(moved);
        }
        moved > 0
    }

    /// Moves what it can from `from` to `to`: `Ready(Ok)` once the end of
    /// stream was passed on, `Pending` while waiting on either side.
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, from: &mut R, to: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.start < self.end {
                let n =
                    ready!(Pin::new(&mut *to).poll_write(cx, &self.buffer[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.moved += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut self.buffer);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    (self.start, self.end) = (0, n);
                    self.eof = n == 0;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    // Nothing more to read for now: what a TLS writer
                    // buffered goes out (a no-op on plain TCP).
                    if self.unflushed {
                        ready!(Pin::new(&mut *to).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
