//! The access log: one line per request ([`format`]), written off the
//! request path.
//!
//! A request formats its line into a buffer of its own, in two steps: what
//! is known when it starts ([`AccessLog::start`], while its bytes are
//! still in the CPU's cache), the rest when it ends, and offers the line to
//! a bounded queue ([`AccessLog::finish`]); one writer thread takes lines off
//! the queue and appends them, whole, to the file (or standard output),
//! batching what is queued into one write (the lines as they are, with
//! `writev`: no copy into a batch). Nothing waits for the writer:
//! when it falls behind (a slow disk, a pipe nobody reads) the queue is
//! full, the line is dropped and counted (`wasmroute_access_log_dropped_total`).
//!
//! [`AccessLog::reopen`] (SIGUSR1) makes the writer open the path again
//! before its next line: logrotate's move-then-signal. A reload that
//! changes `[access_log]` opens a new log; the old one's writer ends when
//! the last request holding it is done.

pub mod format;

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use crate::metrics::Counter;
pub use format::{Head, Tail};

/// Room a line is given up front, so that a line is one allocation: a
/// JSON line of a plain proxied request is about 420 bytes (a profile of
/// the benchmark showed every line of 384 reallocated, and copied, once).
const LINE_CAPACITY: usize = 512;
/// The writer writes its batch once it holds this much,
const BATCH: usize = 64 * 1024;
/// or this many lines (Linux's `IOV_MAX`: the most one `writev` takes).
const BATCH_LINES: usize = 1024;
/// How often a busy writer takes the queued lines: the most a line waits
/// before it is written (the queue holds `[access_log] queue` lines for
/// that long: 8,192 by default, 400,000 lines a second).
const TICK: Duration = Duration::from_millis(20);
/// Empty ticks in a row after which the writer sleeps until a line comes.
const IDLE_TICKS: u32 = 50;

/// An open access log and its writer.
#[derive(Debug)]
pub struct AccessLog {
    config: AccessLogConfig,
    lines: mpsc::Sender<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<Counter>,
}

impl AccessLog {
    /// Opens the log `config` names (appending to its file, created when
    /// missing) and starts its writer; lines it has to drop count in
    /// `dropped`. `Err`: why the file cannot be written. Blocking.
    pub fn open(config: &AccessLogConfig, dropped: Arc<Counter>) -> Result<AccessLog, String> {
        let sink = Sink::open(&config.target)?;
        let (lines, queue) = mpsc::channel(config.queue);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            sink,
            queue,
            reopen: Arc::clone(&reopen),
            batch: Vec::with_capacity(BATCH_LINES),
            batch_bytes: 0,
            failing: false,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog {
            config: config.clone(),
            lines,
            reopen,
            dropped,
        })
    }

    /// The config it was opened with.
    pub fn config(&self) -> &AccessLogConfig {
        &self.config
    }

    /// Begins the line of a request the proxy starts on now.
    pub fn start(&self, head: &Head<'_>) -> StartedLine {
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        let status_at = match self.config.format {
            LogFormat::Json => {
                format::json_head(head, &mut line);
                0
            }
            LogFormat::Combined => format::combined_head(head, &mut line),
        };
        StartedLine { line, status_at }
    }

    /// Ends the line `started` (begun by this log's [`AccessLog::start`])
    /// and queues it; drops (and counts) it when the queue is full. Never
    /// waits.
    pub fn finish(&self, started: StartedLine, tail: &Tail<'_>) {
        let StartedLine {
            mut line,
            status_at,
        } = started;
        match self.config.format {
            LogFormat::Json => format::json_tail(tail, &mut line),
            LogFormat::Combined => format::combined_tail(tail, &mut line, status_at),
        }
        if self.lines.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// Makes the writer open the path again before its next line (the
    /// file may have been moved away); a no-op for standard output.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

/// A request's line while the request runs: its head written.
#[derive(Debug)]
pub struct StartedLine {
    line: Vec<u8>,
    /// Where a `combined` line's status goes.
    status_at: usize,
}

/// Where the writer writes.
enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(target: &LogTarget) -> Result<Sink, String> {
        match target {
            LogTarget::Stdout => Ok(Sink::Stdout),
            LogTarget::File(path) => Ok(Sink::File {
                file: open_append(path)?,
                path: path.clone(),
            }),
        }
    }

    /// Writes every line, whole, in order.
    fn write_lines(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => write_vectored_all(&mut std::io::stdout().lock(), lines),
            Sink::File { file, .. } => write_vectored_all(file, lines),
        }
    }

    /// Opens the path again; on failure the old file keeps being written.
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(reopened) => *file = reopened,
                Err(reason) => {
                    tracing::error!(%reason, "access log not reopened; writing on to the old file");
                }
            }
        }
    }
}

/// `lines` into `out` by `writev`, as often as a short write needs.
fn write_vectored_all(out: &mut impl Write, lines: &[Vec<u8>]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = lines.iter().map(|line| IoSlice::new(line)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut rest, written),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    out.flush()
}

/// Opens `path` for appending, creating it when missing.
fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))
}

/// What [`Writer::take_queued`] found.
enum Queued {
    Nothing,
    Lines,
    /// Every sender is gone: the log was replaced or the server stopped.
    Gone,
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    queue: mpsc::Receiver<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    /// Whole lines waiting to be written.
    batch: Vec<Vec<u8>>,
    /// Their length.
    batch_bytes: usize,
    /// The last write failed (reported once until one succeeds).
    failing: bool,
}

impl Writer {
    /// Writes lines until every sender is gone, then what is left.
    ///
    /// Under traffic the writer wakes on its own every [`TICK`] and takes
    /// whatever was queued meanwhile: a request only pushes its line and
    /// never wakes the writer (a wake-up per line was a futex call and a
    /// context switch per request, on the request's core). After
    /// [`IDLE_TICKS`] empty ticks it sleeps until the next line instead.
    fn run(mut self) {
        let mut empty_ticks = 0;
        loop {
            match self.take_queued() {
                Queued::Gone => break,
                Queued::Lines => empty_ticks = 0,
                Queued::Nothing => empty_ticks += 1,
            }
            self.flush();
            if empty_ticks < IDLE_TICKS {
                std::thread::sleep(TICK);
                continue;
            }
            match self.queue.blocking_recv() {
                Some(line) => self.add(line),
                None => break,
            }
            empty_ticks = 0;
        }
        self.flush();
    }

    /// Takes every line queued so far into the batch.
    fn take_queued(&mut self) -> Queued {
        let mut queued = Queued::Nothing;
        loop {
            match self.queue.try_recv() {
                Ok(line) => {
                    self.add(line);
                    queued = Queued::Lines;
                }
                Err(TryRecvError::Empty) => return queued,
                Err(TryRecvError::Disconnected) => return Queued::Gone,
            }
        }
    }

    fn add(&mut self, line: Vec<u8>) {
        if self.reopen.swap(false, Ordering::Relaxed) {
            self.flush();
            self.sink.reopen();
        }
        self.batch_bytes += line.len();
        self.batch.push(line);
        if self.batch_bytes >= BATCH || self.batch.len() >= BATCH_LINES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        match self.sink.write_lines(&self.batch) {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "access log write failed; its lines are lost until a write succeeds");
            }
            Err(_) => {}
        }
        self.batch.clear();
        self.batch_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn write(log: &AccessLog, path: &'static [u8]) {
        let head = Head {
            time: SystemTime::now(),
            listener: "edge",
            client: "127.0.0.1:1".parse().unwrap(),
            method: "GET",
            host: None,
            path,
            protocol: "HTTP/1.1",
            referer: None,
            user_agent: None,
        };
        let tail = Tail {
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream: None,
            pool: None,
            backend: None,
            attempts: 0,
            policy: "rr",
            policy_version: 1,
            decision: Duration::ZERO,
            tls: false,
            sni: None,
            error: None,
        };
        let started = log.start(&head);
        log.finish(started, &tail);
    }

    fn read_lines(path: &Path, want: usize) -> Vec<String> {
        for _ in 0..500 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= want {
                return text.lines().map(str::to_owned).collect();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{want} lines never reached {}", path.display());
    }

    #[test]
    fn lines_land_whole_and_reopen_follows_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let config = AccessLogConfig {
            target: LogTarget::File(path.clone()),
            format: LogFormat::Combined,
            queue: 64,
        };
        let log = AccessLog::open(&config, Arc::default()).unwrap();
        write(&log, b"/one");
        assert!(read_lines(&path, 1)[0].contains("\"GET /one HTTP/1.1\""));
        let moved = dir.path().join("access.log.1");
        std::fs::rename(&path, &moved).unwrap();
        log.reopen();
        write(&log, b"/two");
        assert!(read_lines(&path, 1)[0].contains("/two"));
        assert_eq!(read_lines(&moved, 1).len(), 1);
    }

    /// A sink that takes a few bytes per call: the lines still land whole
    /// and in order.
    #[test]
    fn short_writes_continue_where_they_stopped() {
        struct Trickle(Vec<u8>);
        impl Write for Trickle {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let taken = bytes.len().min(7);
                self.0.extend_from_slice(&bytes[..taken]);
                Ok(taken)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines: Vec<Vec<u8>> = (0..40)
            .map(|n| format!("line {n}\n").into_bytes())
            .collect();
        let mut out = Trickle(Vec::new());
        write_vectored_all(&mut out, &lines).unwrap();
        assert_eq!(out.0, lines.concat());
    }

    #[test]
    fn an_unwritable_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = AccessLogConfig {
            target: LogTarget::File(dir.path().join("missing/access.log")),
            format: LogFormat::Json,
            queue: 1,
        };
        let reason = AccessLog::open(&config, Arc::default()).unwrap_err();
        assert!(reason.starts_with("cannot open "), "{reason}");
    }
}
