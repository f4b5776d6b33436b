//! The byte relay between a client and its backend: both directions in
//! one task, each through one buffer of [`RELAY_BUFFER`] bytes, bytes
//! copied once (socket to buffer to socket) and never held beyond it.
//!
//! A direction holds its buffer only while it moves bytes: when its read
//! side has nothing more for now and everything read was written, the
//! buffer goes back to its worker thread's spares ([`Spares`]) and the
//! next wake-up takes one again. An idle relay so holds no buffer (a
//! database pool's idle connections cost their sockets and task only),
//! and a busy worker reuses a handful of buffers instead of allocating,
//! zeroing and returning two per connection (which made the allocator
//! give their pages back to the kernel and fault them in again each
//! time).
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

/// The buffer of each direction while it moves bytes (see the module
/// docs: an idle relay holds none). Measured over loopback (`relay_throughput_by_buffer_size`
/// below, 512 MiB one way, two runs on a shared 2-core machine): 8 KiB
/// 620-770 MiB/s, 16 KiB 930, 64 KiB 1090-1290, 256 KiB 1140-1510, 1 MiB
/// 1250-1400. 64 KiB takes most of the gain over small buffers; past it
/// the differences are within the noise while each relay's memory grows
/// fourfold.
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
        up: Pump::new(&metrics.received_bytes, RELAY_BUFFER),
        down: Pump::new(&metrics.sent_bytes, RELAY_BUFFER),
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

impl Drop for Pump<'_> {
    fn drop(&mut self) {
        // Whatever it still held is not needed any more: the next relay
        // reads over it.
        self.release();
    }
}

/// Buffers a worker thread keeps for its relays between uses: at most
/// this many (`SPARES` x [`RELAY_BUFFER`] = 1 MiB per worker).
const SPARES: usize = 16;

/// The worker thread's spare relay buffers.
struct Spares;

thread_local! {
    static SPARE_BUFFERS: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spares {
    /// A buffer of `size`: a spare one when there is one of that size.
    fn take(size: usize) -> Box<[u8]> {
        let spare = SPARE_BUFFERS.with_borrow_mut(|spares| match spares.last() {
            Some(last) if last.len() == size => spares.pop(),
            _ => None,
        });
        spare.unwrap_or_else(|| vec![0; size].into_boxed_slice())
    }

    /// Keeps `buffer` for the next relay of this worker, unless enough are
    /// kept already.
    fn give_back(buffer: Box<[u8]>) {
        SPARE_BUFFERS.with_borrow_mut(|spares| {
            if spares.len() < SPARES {
                spares.push(buffer);
            }
        });
    }
}

/// One direction: reads into its buffer, writes the buffer out, and
/// passes the end of stream on as a shutdown of writing.
struct Pump<'m> {
    /// Held while bytes are on their way (see the module docs).
    buffer: Option<Box<[u8]>>,
    size: usize,
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
    fn new(counter: &'m Counter, size: usize) -> Pump<'m> {
        Pump {
            buffer: None,
            size,
            start: 0,
            end: 0,
            eof: false,
            finished: false,
            unflushed: false,
            moved: 0,
            counter,
        }
    }

    /// Gives the (empty) buffer back to the worker's spares.
    fn release(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            Spares::give_back(buffer);
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
            if let Some(buffer) = self.buffer.as_deref().filter(|_| self.start < self.end) {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &buffer[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.moved += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.eof {
                self.release();
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
            let size = self.size;
            let buffer = self.buffer.get_or_insert_with(|| Spares::take(size));
            let mut buf = ReadBuf::new(buffer);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    (self.start, self.end) = (0, n);
                    self.eof = n == 0;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    // Everything read was written: the buffer is free
                    // until the next read.
                    self.release();
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

#[cfg(test)]
mod tests {
    //! The relay over loopback sockets, without a proxy around it.

    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (connected, accepted) = tokio::join!(connect, listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    fn relay<'m>(counters: &'m (Counter, Counter), size: usize, idle: Duration) -> Relay<'m> {
        Relay {
            up: Pump::new(&counters.0, size),
            down: Pump::new(&counters.1, size),
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Sends `bytes` from the client end to the backend end through a
    /// relay with buffers of `size`; the relay's byte counts.
    async fn through(bytes: usize, size: usize) -> (u64, u64) {
        let (mut client, mut client_end) = pair().await;
        let (mut backend_end, mut backend) = pair().await;
        let counters = (Counter::default(), Counter::default());
        let relayed = relay(&counters, size, Duration::from_secs(60));
        let send = async {
            let chunk = vec![7u8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                client.write_all(&chunk[..n]).await.unwrap();
                left -= n;
            }
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest
        };
        let receive = async {
            let mut buffer = vec![0u8; 256 * 1024];
            let mut total = 0;
            loop {
                let n = backend.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            backend.write_all(b"done").await.unwrap();
            backend.shutdown().await.unwrap();
            total
        };
        let (ended, rest, total) = tokio::join!(
            relayed.run(&mut client_end, &mut backend_end),
            send,
            receive
        );
        assert!(matches!(ended, Ended::Done), "{ended:?}");
        assert_eq!((total, rest.as_slice()), (bytes, &b"done"[..]));
        (counters.0.get(), counters.1.get())
    }

    #[tokio::test]
    async fn both_directions_end_with_their_own_end_of_stream() {
        assert_eq!(through(3 << 20, RELAY_BUFFER).await, (3 << 20, 4));
    }

    #[tokio::test]
    async fn a_relay_without_traffic_ends_idle() {
        let (_client, mut client_end) = pair().await;
        let (mut backend_end, _backend) = pair().await;
        let counters = (Counter::default(), Counter::default());
        let relayed = relay(&counters, 1024, Duration::from_millis(50));
        let ended = relayed.run(&mut client_end, &mut backend_end).await;
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
    }

    /// A direction holds a buffer only while bytes are on their way: after
    /// a message went through and the reader has nothing more, the buffer
    /// is back among the worker's spares, and the next message reuses it.
    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer() {
        let (mut client, mut client_end) = pair().await;
        let (mut backend_end, mut backend) = pair().await;
        let counter = Counter::default();
        let mut pump = Pump::new(&counter, 4096);
        for round in 0..3 {
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            let moved = async {
                std::future::poll_fn(|cx| {
                    let _ = pump.poll(cx, &mut client_end, &mut backend_end);
                    if pump.moved > 0 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                let _ = pump.take_moved();
            };
            let (_, read) = tokio::join!(moved, backend.read_exact(&mut got));
            read.unwrap();
            assert_eq!(&got, b"ping", "round {round}");
            // The read side then has nothing: the next poll gives the
            // buffer back.
            std::future::poll_fn(|cx| {
                let _ = pump.poll(cx, &mut client_end, &mut backend_end);
                Poll::Ready(())
            })
            .await;
            assert!(
                pump.buffer.is_none(),
                "round {round}: an idle pump keeps its buffer"
            );
            let spares = SPARE_BUFFERS.with_borrow(|spares| spares.len());
            assert_eq!(spares, 1, "round {round}: one buffer, reused");
        }
        assert_eq!(counter.get(), 12);
    }

    /// Not a test: how fast the relay moves bytes by buffer size
    /// (`cargo test -p wasmroute --lib relay_throughput -- --ignored
    /// --nocapture`). Its findings are in `RELAY_BUFFER`'s doc comment.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn relay_throughput_by_buffer_size() {
        const BYTES: usize = 512 << 20;
        for size in [8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
            let started = std::time::Instant::now();
            through(BYTES, size).await;
            let seconds = started.elapsed().as_secs_f64();
            let rate = BYTES as f64 / seconds / f64::from(1 << 20);
            println!("buffer {:>5} KiB: {rate:>7.0} MiB/s", size >> 10);
        }
    }
}
