//! The access log: one line per request ([`format`]), written off the
//! request path.
//!
//! A request formats its line into a buffer of its own, in two steps: what
//! is known when it starts ([`AccessLog::start`], while its bytes are
//! still in the CPU's cache), the rest when it ends ([`AccessLog::finish`]),
//! which copies the line, whole, into its worker thread's ring of lines.
//! One writer thread writes what each ring holds every [`TICK`], with one
//! `write` (two where the ring wraps around): a `writev` of a thousand
//! lines of 400 bytes cost the kernel three times as much per byte. A
//! request never waits for the writer and never wakes it: when it falls
//! behind (a slow disk, a pipe nobody reads) a thread's ring fills and
//! further lines are dropped and counted
//! (`wasmroute_access_log_dropped_total`).
//!
//! A ring has one producer (its thread) and one consumer (the writer), so
//! a line costs a copy and plain loads and stores of the ring's indexes:
//! no atomic read-modify-write, no lock, and no sharing of a ring between
//! threads however many there are. A thread makes its ring on its first
//! line for a log and keeps it in a thread-local list; the writer learns
//! of new rings through a queue and drops a ring once its thread is gone
//! and it is empty.
//!
//! [`AccessLog::reopen`] (SIGUSR1) makes the writer open the path again
//! before its next write: logrotate's move-then-signal. A reload that
//! changes `[access_log]` opens a new log; the old one's writer writes
//! what is left and ends when the last request holding it is done.

pub mod format;
pub mod time;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::SegQueue;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use crate::metrics::Counter;
pub use format::{Head, Tail};

/// Room a line is given up front, so that a line is one allocation: a
/// JSON line of a plain proxied request is about 420 bytes (a profile of
/// the benchmark showed every line of 384 reallocated, and copied, once).
const LINE_CAPACITY: usize = 512;
/// Bytes of a thread's ring per line of `[access_log] queue`.
const RING_BYTES_PER_LINE: usize = 512;
/// A ring holds at least this much, so that a long line fits,
const RING_MIN_BYTES: usize = 64 * 1024;
/// and at most this much: what a thread may keep when the writer is slow.
const RING_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How often a busy writer writes what the rings hold: the most a line
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
    /// Tells this log's rings from other logs' in a thread's list.
    id: u64,
    /// Bytes of each thread's ring.
    ring_bytes: usize,
    shared: Arc<Shared>,
    writer: Thread,
    dropped: Arc<Counter>,
}

/// What requests and the writer share.
#[derive(Debug)]
struct Shared {
    /// Rings threads made since the writer last looked.
    new_rings: SegQueue<Consumer<u8>>,
    /// The writer is dozing: the next line wakes it.
    dozing: AtomicBool,
    reopen: AtomicBool,
    /// The log is gone: the writer writes what is left and ends.
    closed: AtomicBool,
}

/// A thread's ring for one log.
struct ThreadRing {
    log: u64,
    lines: Producer<u8>,
}

thread_local! {
    /// This thread's rings, one per log it has written lines to (usually
    /// one; two for a while after a reload that changes the log).
    static RINGS: RefCell<Vec<ThreadRing>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of a thread's ring for `[access_log] queue` = `queue`.
fn ring_bytes(queue: usize) -> usize {
    queue
        .saturating_mul(RING_BYTES_PER_LINE)
        .clamp(RING_MIN_BYTES, RING_MAX_BYTES)
}

impl AccessLog {
    /// Opens the log `config` names (appending to its file, created when
    /// missing) and starts its writer; lines it has to drop count in
    /// `dropped`. `Err`: why the file cannot be written. Blocking.
    pub fn open(config: &AccessLogConfig, dropped: Arc<Counter>) -> Result<AccessLog, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let sink = Sink::open(&config.target)?;
        let shared = Arc::new(Shared {
            new_rings: SegQueue::new(),
            dozing: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let writer = Writer {
            sink,
            shared: Arc::clone(&shared),
            rings: Vec::new(),
            failing: false,
        };
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog {
            config: config.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ring_bytes: ring_bytes(config.queue),
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
    /// and copies it into this thread's ring; drops (and counts) it when
    /// the ring has no room for it. Never waits.
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

    /// Copies `line` into this thread's ring for this log (made on the
    /// thread's first line for it); `false` when the ring has no room.
    fn append(&self, line: &[u8]) -> bool {
        let appended = RINGS.with_borrow_mut(|rings| {
            let ring = match rings.iter().position(|ring| ring.log == self.id) {
                Some(index) => &mut rings[index],
                None => self.new_ring(rings),
            };
            ring.lines.push_entire_slice(line).is_ok()
        });
        let shared = &*self.shared;
        if shared.dozing.load(Ordering::Relaxed) && shared.dozing.swap(false, Ordering::Relaxed) {
            self.writer.unpark();
        }
        appended
    }

    /// Makes this thread's ring for this log, hands its reading end to the
    /// writer and adds it to `rings`, whose rings of logs that are gone
    /// it drops.
    fn new_ring<'a>(&self, rings: &'a mut Vec<ThreadRing>) -> &'a mut ThreadRing {
        rings.retain(|ring| !ring.lines.is_abandoned());
        let (lines, written) = RingBuffer::new(self.ring_bytes);
        self.shared.new_rings.push(written);
        rings.push(ThreadRing {
            log: self.id,
            lines,
        });
        let last = rings.len() - 1;
        &mut rings[last]
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

    /// Writes `first`, then `second`, whole.
    fn write(&mut self, first: &[u8], second: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(first)?;
                out.write_all(second)?;
                out.flush()
            }
            Sink::File { file, .. } => {
                file.write_all(first)?;
                file.write_all(second)
            }
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
    /// The reading ends of the threads' rings.
    rings: Vec<Consumer<u8>>,
    /// The last write failed (reported once until one succeeds).
    failing: bool,
}

impl Writer {
    /// Writes what the rings hold until the log is closed, then what is
    /// left.
    ///
    /// Under traffic the writer wakes on its own every [`TICK`]: a request
    /// only copies its line and never wakes the writer (a wake-up per line
    /// was a futex call and a context switch per request, on the request's
    /// core). After [`IDLE_TICKS`] empty ticks it dozes until a request
    /// wakes it (or [`DOZE`] passes).
    fn run(mut self) {
        let mut empty_ticks = 0;
        loop {
            // Read before writing: a log closed after this has no more
            // lines to come once this pass has written them.
            let closed = self.shared.closed.load(Ordering::Acquire);
            if self.write_rings() {
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

    /// Writes what every ring holds and drops the rings whose threads are
    /// gone; `false` when no ring held a line.
    fn write_rings(&mut self) -> bool {
        if self.shared.reopen.swap(false, Ordering::Relaxed) {
            self.sink.reopen();
        }
        while let Some(ring) = self.shared.new_rings.pop() {
            self.rings.push(ring);
        }
        let mut wrote = false;
        let mut rings = std::mem::take(&mut self.rings);
        rings.retain_mut(|ring| {
            // Read first: a ring abandoned before its lines were read holds
            // all it ever will.
            let abandoned = ring.is_abandoned();
            wrote |= self.write(ring);
            !abandoned
        });
        self.rings = rings;
        wrote
    }

    /// Writes the lines `ring` holds and frees their room; `false` when it
    /// held none.
    fn write(&mut self, ring: &mut Consumer<u8>) -> bool {
        let Ok(lines) = ring.read_chunk(ring.slots()) else {
            return false;
        };
        if lines.is_empty() {
            return false;
        }
        let (first, second) = lines.as_slices();
        match self.sink.write(first, second) {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "access log write failed; its lines are lost until a write succeeds");
            }
            Err(_) => {}
        }
        lines.commit_all();
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

    /// A thread that writes to two logs in turn (as after a reload that
    /// changes the log) keeps a ring for each, and each line lands in its
    /// own log's file; a log dropped leaves its rings to be dropped.
    #[test]
    fn a_thread_keeps_a_ring_per_log() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let config = AccessLogConfig {
                target: LogTarget::File(dir.path().join(name)),
                format: LogFormat::Json,
                queue: 16,
            };
            AccessLog::open(&config, Arc::default()).unwrap()
        };
        let (old, new) = (open("old.log"), open("new.log"));
        for n in 0..3 {
            write(&old, format!("/old/{n}").as_bytes());
            write(&new, format!("/new/{n}").as_bytes());
        }
        let old_id = old.id;
        drop(old);
        // Its writer ends once it has written the lines, dropping the
        // rings' reading ends.
        let old_gone = || {
            RINGS.with_borrow(|rings| {
                rings
                    .iter()
                    .all(|ring| ring.log != old_id || ring.lines.is_abandoned())
            })
        };
        for _ in 0..500 {
            if old_gone() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(old_gone());
        let third = open("third.log");
        write(&third, b"/third");
        for (name, prefix, count) in [
            ("old.log", "/old/", 3),
            ("new.log", "/new/", 3),
            ("third.log", "/third", 1),
        ] {
            let lines = read_lines(&dir.path().join(name), count);
            assert_eq!(lines.len(), count, "{name}");
            assert!(
                lines.iter().all(|line| line.contains(prefix)),
                "{name}: {lines:?}"
            );
        }
        // The old log's ring went when this thread made the third's.
        let logs: Vec<u64> = RINGS.with_borrow(|rings| rings.iter().map(|ring| ring.log).collect());
        assert_eq!(logs, [new.id, third.id]);
    }

    /// A ring has room for `queue` lines of 512 bytes, within bounds.
    #[test]
    fn a_ring_holds_queue_lines_within_bounds() {
        assert_eq!(ring_bytes(1), RING_MIN_BYTES);
        assert_eq!(ring_bytes(8192), 4 * 1024 * 1024);
        assert_eq!(ring_bytes(usize::MAX), RING_MAX_BYTES);
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
