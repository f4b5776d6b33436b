//! The access log: one line per request ([`format`]), formatted and
//! written off the request path.
//!
//! A request copies its fields into a record of its own ([`record`]:
//! binary, about a third of its line), in two steps: what is known when it
//! starts ([`AccessLog::start`], while its bytes are still in the CPU's
//! cache), the rest when it ends ([`AccessLog::finish`]), which copies the
//! record, whole, into its worker thread's ring. One writer thread turns
//! what each ring holds into lines every [`writer::TICK`] and writes them,
//! a batch at a time: the request path runs no formatting code, and moves
//! a third of the bytes. A request never waits for the writer and never wakes it:
//! when it falls behind (a slow disk, a pipe nobody reads) a thread's ring
//! fills and further lines are dropped and counted
//! (`wasmroute_access_log_dropped_total`).
//!
//! A ring has one producer (its thread) and one consumer (the writer), so
//! a record costs a copy and plain loads and stores of the ring's indexes:
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
mod record;
pub mod time;
mod writer;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;

use crossbeam_queue::SegQueue;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::config::AccessLogConfig;
use crate::metrics::Counter;
pub use format::{Head, Tail};
use writer::{Sink, Writer};

/// Room a record is given up front, so that a record is one allocation: a
/// plain proxied request's is about 130 bytes.
const RECORD_CAPACITY: usize = 256;
/// Bytes of a thread's ring per line of `[access_log] queue`.
const RING_BYTES_PER_LINE: usize = 512;
/// A ring holds at least this much, so that a long line fits,
const RING_MIN_BYTES: usize = 64 * 1024;
/// and at most this much: what a thread may keep when the writer is slow.
const RING_MAX_BYTES: usize = 64 * 1024 * 1024;

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
        let writer = Writer::new(sink, config.format, Arc::clone(&shared));
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

    /// Begins the record of a request the proxy starts on now.
    pub fn start(&self, head: &Head<'_>) -> StartedLine {
        let mut record = Vec::with_capacity(RECORD_CAPACITY);
        record::encode_head(head, &mut record);
        StartedLine { record }
    }

    /// Ends the record `started` (begun by this log's [`AccessLog::start`])
    /// and copies it into this thread's ring; drops (and counts) it when
    /// the ring has no room for it. Never waits.
    pub fn finish(&self, started: StartedLine, tail: &Tail<'_>) {
        let StartedLine { mut record } = started;
        record::encode_tail(tail, &mut record);
        if !(record::seal(&mut record) && self.append(&record)) {
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

/// A request's record while the request runs: its head written.
#[derive(Debug)]
pub struct StartedLine {
    record: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogTarget};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    fn write(log: &AccessLog, path: &[u8]) {
        let head = Head {
            time: SystemTime::now(),
            listener: b"edge",
            client: "127.0.0.1:1".parse().unwrap(),
            method: b"GET",
            host: None,
            path,
            protocol: http::Version::HTTP_11,
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
            policy: b"rr",
            policy_version: 1,
            decision: Duration::ZERO,
            tls: false,
            sni: None,
            error: None,
        };
        let started = log.start(&head);
        log.finish(started, &tail);
    }

    /// A JSON log to `path` with `queue`.
    fn json_to(path: &Path, queue: usize) -> AccessLogConfig {
        AccessLogConfig {
            target: LogTarget::File(path.to_owned()),
            format: LogFormat::Json,
            queue,
        }
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
        let config = json_to(&path, THREADS * EACH);
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

    /// A thread's ring wraps around many times (the smallest ring, 64
    /// KiB, and about 1 MB of records in batches of at most 34 KB): every
    /// line lands whole, in order, none dropped, the ones whose record the
    /// ring's end cut in two included.
    #[test]
    fn records_cut_by_the_rings_end_land_whole() {
        const BATCHES: usize = 60;
        const EACH: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let config = json_to(&path, 1);
        let dropped = Arc::new(Counter::default());
        let log = AccessLog::open(&config, Arc::clone(&dropped)).unwrap();
        for batch in 0..BATCHES {
            for n in 0..EACH {
                // Paths of 5 to 510 bytes: records of every length mod 4.
                let x = "x".repeat((batch * EACH + n) % 503);
                write(&log, format!("/{batch}/{n}/{x}").as_bytes());
            }
            read_lines(&path, (batch + 1) * EACH);
        }
        let lines = read_lines(&path, BATCHES * EACH);
        assert_eq!(lines.len(), BATCHES * EACH);
        for (at, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let want = format!("/{}/{}/", at / EACH, at % EACH);
            assert!(value["path"].as_str().unwrap().starts_with(&want), "{line}");
        }
        assert_eq!(dropped.get(), 0);
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
