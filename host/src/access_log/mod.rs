//! The access log: one line per request ([`format`]), written off the
//! request path.
//!
//! A request formats its line into a buffer of its own, in two steps: what
//! is known when it starts ([`AccessLog::start`], while its bytes are
//! still in the CPU's cache), the rest when it ends ([`AccessLog::finish`]),
//! which appends the line, whole, to the chunk of lines of its worker
//! thread's shard. One writer thread takes the shards' chunks every
//! [`TICK`] and writes each with one `write` (a chunk is contiguous: the
//! kernel copies it in one piece, where a `writev` of a thousand lines of
//! 400 bytes cost it three times as much per byte). A request never waits
//! for the writer and never wakes it: when it falls behind (a slow disk, a
//! pipe nobody reads) a shard's chunk fills up to `[access_log] queue`
//! lines and further lines are dropped and counted
//! (`wasmroute_access_log_dropped_total`).
//!
//! A shard's chunk is handed between its threads and the writer through
//! one atomic cell: whoever takes it out owns it, so appending a line
//! takes no lock, two atomic swaps and one shared cache line (a queue of
//! one place, with its head, tail and slot on lines apart, cost 0.3 us a
//! line in a profile under load: a line the log touches once a request is
//! cold in the cache by the next).
//! Threads that share a shard and meet there hand the extra chunk to an
//! overflow queue the writer drains first.
//!
//! [`AccessLog::reopen`] (SIGUSR1) makes the writer open the path again
//! before its next write: logrotate's move-then-signal. A reload that
//! changes `[access_log]` opens a new log; the old one's writer writes
//! what is left and ends when the last request holding it is done.

pub mod format;
pub mod time;

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use crossbeam_utils::atomic::AtomicCell;

use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use crate::metrics::Counter;
pub use format::{Head, Tail};

/// Room a line is given up front, so that a line is one allocation: a
/// JSON line of a plain proxied request is about 420 bytes (a profile of
/// the benchmark showed every line of 384 reallocated, and copied, once).
const LINE_CAPACITY: usize = 512;
/// Shards of chunks; a worker thread appends to the one its index picks.
const SHARDS: usize = 8;
/// Room a new chunk is given (about 150 lines).
const CHUNK_CAPACITY: usize = 64 * 1024;
/// A chunk holds at most this many bytes (besides `[access_log] queue`
/// lines): what a shard may keep when lines are long and the writer slow.
const CHUNK_MAX_BYTES: usize = 8 * 1024 * 1024;
/// A written chunk whose buffer grew past this is freed, not kept for
/// reuse.
const SPARE_MAX_CAPACITY: usize = 1024 * 1024;
/// How often a busy writer takes the shards' chunks: the most a line
/// waits before it is written under traffic.
const TICK: Duration = Duration::from_millis(20);
/// Empty ticks in a row after which the writer dozes,
const IDLE_TICKS: u32 = 50;
/// for this long at a time, until a request wakes it: the most the first
/// line after a quiet second waits (when it comes just as the writer
/// begins to doze).
const DOZE: Duration = Duration::from_millis(500);

/// An open access log and its writer.
#[derive(Debug)]
pub struct AccessLog {
    config: AccessLogConfig,
    shared: Arc<Shared>,
    writer: Thread,
    dropped: Arc<Counter>,
}

/// What requests and the writer share.
struct Shared {
    /// Each shard's chunk, while nobody holds it (a box: one word, swapped
    /// without a lock).
    shards: [CachePadded<AtomicCell<Option<Box<Chunk>>>>; SHARDS],
    /// Chunks that found their shard's place taken.
    overflow: ArrayQueue<Box<Chunk>>,
    /// Written chunks, emptied, for requests to reuse.
    spare: ArrayQueue<Box<Chunk>>,
    /// `[access_log] queue`: lines a chunk holds at most.
    max_lines: usize,
    /// The writer is dozing: the next line wakes it.
    dozing: AtomicBool,
    reopen: AtomicBool,
    /// The log is gone: the writer writes what is left and ends.
    closed: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_lines", &self.max_lines)
            .field("dozing", &self.dozing)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Whole lines, one after another.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    lines: usize,
}

impl AccessLog {
    /// Opens the log `config` names (appending to its file, created when
    /// missing) and starts its writer; lines it has to drop count in
    /// `dropped`. `Err`: why the file cannot be written. Blocking.
    pub fn open(config: &AccessLogConfig, dropped: Arc<Counter>) -> Result<AccessLog, String> {
        let sink = Sink::open(&config.target)?;
        let shared = Arc::new(Shared {
            shards: std::array::from_fn(|_| CachePadded::new(AtomicCell::new(None))),
            overflow: ArrayQueue::new(4 * SHARDS),
            spare: ArrayQueue::new(2 * SHARDS),
            max_lines: config.queue,
            dozing: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let writer = Writer {
            sink,
            shared: Arc::clone(&shared),
            failing: false,
        };
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog {
            config: config.clone(),
            shared,
            writer: writer.thread().clone(),
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
    /// and appends it to this thread's shard; drops (and counts) it when
    /// the shard's chunk is full. Never waits.
    pub fn finish(&self, started: StartedLine, tail: &Tail<'_>) {
        let StartedLine {
            mut line,
            status_at,
        } = started;
        match self.config.format {
            LogFormat::Json => format::json_tail(tail, &mut line),
            LogFormat::Combined => format::combined_tail(tail, &mut line, status_at),
        }
        if !self.append(&line) {
            self.dropped.inc();
        }
    }

    /// Appends `line` to this thread's shard's chunk; `false` when it is
    /// full.
    fn append(&self, line: &[u8]) -> bool {
        let shared = &*self.shared;
        let shard = &shared.shards[shard_index()];
        let mut chunk = shard
            .take()
            .or_else(|| shared.spare.pop())
            .unwrap_or_else(|| {
                Box::new(Chunk {
                    bytes: Vec::with_capacity(CHUNK_CAPACITY),
                    lines: 0,
                })
            });
        let fits = chunk.lines < shared.max_lines
            && chunk.bytes.len() + line.len() <= CHUNK_MAX_BYTES.max(line.len());
        if fits {
            chunk.bytes.extend_from_slice(line);
            chunk.lines += 1;
        }
        if let Some(theirs) = shard.swap(Some(chunk)) {
            // Another thread of this shard put a chunk there meanwhile.
            if let Err(lost) = shared.overflow.push(theirs) {
                // Only when the writer is far behind.
                self.dropped.add(lost.lines as u64);
            }
        }
        if shared.dozing.load(Ordering::Relaxed) && shared.dozing.swap(false, Ordering::Relaxed) {
            self.writer.unpark();
        }
        fits
    }

    /// Makes the writer open the path again before its next write (the
    /// file may have been moved away); a no-op for standard output.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        self.writer.unpark();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// The shard of the calling thread: threads take the shards in turn as
/// they first log.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let index = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(Some(index));
            index
        })
    })
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

    /// Writes `bytes`, whole.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
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

/// Opens `path` for appending, creating it when missing.
fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    shared: Arc<Shared>,
    /// The last write failed (reported once until one succeeds).
    failing: bool,
}

impl Writer {
    /// Writes chunks until the log is closed, then what is left.
    ///
    /// Under traffic the writer wakes on its own every [`TICK`] and takes
    /// the chunks filled meanwhile: a request only appends its line and
    /// never wakes the writer (a wake-up per line was a futex call and a
    /// context switch per request, on the request's core). After
    /// [`IDLE_TICKS`] empty ticks it dozes until a request wakes it (or
    /// [`DOZE`] passes).
    fn run(mut self) {
        let mut empty_ticks = 0;
        loop {
            // Read before taking: a log closed after this has no more lines
            // to come once this pass has taken them.
            let closed = self.shared.closed.load(Ordering::Acquire);
            if self.write_chunks() {
                empty_ticks = 0;
            } else {
                empty_ticks += 1;
            }
            if closed {
                break;
            }
            if empty_ticks < IDLE_TICKS {
                std::thread::park_timeout(TICK);
                continue;
            }
            self.shared.dozing.store(true, Ordering::Relaxed);
            std::thread::park_timeout(DOZE);
            self.shared.dozing.store(false, Ordering::Relaxed);
        }
    }

    /// Writes every chunk that holds lines; `false` when none did.
    fn write_chunks(&mut self) -> bool {
        if self.shared.reopen.swap(false, Ordering::Relaxed) {
            self.sink.reopen();
        }
        let mut wrote = false;
        while let Some(chunk) = self.shared.overflow.pop() {
            wrote |= self.write(chunk);
        }
        for shard in 0..SHARDS {
            if let Some(chunk) = self.shared.shards[shard].take() {
                wrote |= self.write(chunk);
            }
        }
        wrote
    }

    /// Writes `chunk` and keeps its buffer for reuse; `false` when it was
    /// empty.
    fn write(&mut self, mut chunk: Box<Chunk>) -> bool {
        if chunk.lines == 0 {
            let _ = self.shared.spare.push(chunk);
            return false;
        }
        match self.sink.write(&chunk.bytes) {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "access log write failed; its lines are lost until a write succeeds");
            }
            Err(_) => {}
        }
        if chunk.bytes.capacity() <= SPARE_MAX_CAPACITY {
            chunk.bytes.clear();
            chunk.lines = 0;
            let _ = self.shared.spare.push(chunk);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn write(log: &AccessLog, path: &[u8]) {
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

    /// Lines appended from many threads at once land whole, each once,
    /// and the writer writes what is left when the log is dropped.
    #[test]
    fn lines_from_many_threads_land_whole() {
        const THREADS: usize = 12;
        const EACH: usize = 400;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let config = AccessLogConfig {
            target: LogTarget::File(path.clone()),
            format: LogFormat::Json,
            queue: THREADS * EACH,
        };
        let log = Arc::new(AccessLog::open(&config, Arc::default()).unwrap());
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        let path = format!("/{thread}/{n}/{}", "x".repeat(n % 97));
                        write(&log, path.as_bytes());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(log);
        let lines = read_lines(&path, THREADS * EACH);
        let mut seen = std::collections::HashSet::new();
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(seen.insert(value["path"].as_str().unwrap().to_owned()));
        }
        assert_eq!(seen.len(), THREADS * EACH);
    }

    /// A shard's cell is swapped by atomic instructions, not behind a lock.
    #[test]
    fn a_shard_cell_is_lock_free() {
        assert!(AtomicCell::<Option<Box<Chunk>>>::is_lock_free());
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
