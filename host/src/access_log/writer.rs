//! The access log's writer thread: it turns the records the worker
//! threads' rings hold into lines and writes them, a batch at a time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rtrb::Consumer;

use super::record::{self, LENGTH_BYTES};
use super::{Shared, format};
use crate::config::{LogFormat, LogTarget};

/// The writer writes its lines when it has formatted this many bytes: a
/// buffer that stays in the CPU's cache between its writes.
const WRITE_BATCH: usize = 32 * 1024;
/// How often a busy writer writes what the rings hold: the most a line
/// waits before it is written under traffic. Each wake-up takes the core
/// from a worker thread and the writer's code and data back into its
/// cache: at 100 ms rather than 20 ms (with batches of 32 KiB rather than
/// 256), a logged request cost 1.2% less CPU time in `bench/ab.sh`.
pub(super) const TICK: Duration = Duration::from_millis(100);
/// Empty ticks in a row (a quiet second) after which the writer dozes,
const IDLE_TICKS: u32 = 10;
/// for this long at a time, until a request wakes it: the most the first
/// line after a quiet second waits (when it comes just as the writer
/// begins to doze).
const DOZE: Duration = Duration::from_millis(500);

/// Where the writer writes.
pub(super) enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    pub(super) fn open(target: &LogTarget) -> Result<Sink, String> {
        match target {
            LogTarget::Stdout => Ok(Sink::Stdout),
            LogTarget::File(path) => Ok(Sink::File {
                file: open_append(path)?,
                path: path.clone(),
            }),
        }
    }

    /// Writes `lines`, whole.
    fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(lines)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(lines),
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
pub(super) struct Writer {
    sink: Sink,
    format: LogFormat,
    /// Lines formatted and not written yet.
    lines: Vec<u8>,
    /// A record the end of a ring cut in two, joined.
    joined: Vec<u8>,
    shared: Arc<Shared>,
    /// The reading ends of the threads' rings.
    rings: Vec<Consumer<u8>>,
    /// The last write failed (reported once until one succeeds).
    failing: bool,
}

impl Writer {
    /// A writer of `format` lines into `sink` of the rings `shared` hands
    /// it.
    pub(super) fn new(sink: Sink, format: LogFormat, shared: Arc<Shared>) -> Writer {
        Writer {
            sink,
            format,
            lines: Vec::new(),
            joined: Vec::new(),
            shared,
            rings: Vec::new(),
            failing: false,
        }
    }

    /// Writes what the rings hold until the log is closed, then what is
    /// left.
    ///
    /// Under traffic the writer wakes on its own every [`TICK`]: a request
    /// only copies its line and never wakes the writer (a wake-up per line
    /// was a futex call and a context switch per request, on the request's
    /// core). After [`IDLE_TICKS`] empty ticks it dozes until a request
    /// wakes it (or [`DOZE`] passes).
    pub(super) fn run(mut self) {
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

    /// Writes the lines of the records `ring` holds and frees their
    /// room; `false` when it held none.
    fn write(&mut self, ring: &mut Consumer<u8>) -> bool {
        let Ok(queued) = ring.read_chunk(ring.slots()) else {
            return false;
        };
        if queued.is_empty() {
            return false;
        }
        let (first, mut second) = queued.as_slices();
        let cut = self.format_records(first);
        if !cut.is_empty() {
            let mut joined = std::mem::take(&mut self.joined);
            second = join_cut_record(cut, second, &mut joined);
            self.format_records(&joined);
            self.joined = joined;
        }
        self.format_records(second);
        queued.commit_all();
        self.flush();
        true
    }

    /// Formats the whole records at the start of `queued` into
    /// [`Writer::lines`] (writing them out when they fill a batch);
    /// returns what follows them, a record cut short.
    fn format_records<'q>(&mut self, mut queued: &'q [u8]) -> &'q [u8] {
        while let Some((record, rest)) = record::split_first(queued) {
            // Always a record: only `AccessLog::finish` writes into a ring.
            if let Some((head, tail)) = record::decode(record) {
                format::line(self.format, &head, &tail, &mut self.lines);
            }
            queued = rest;
            if self.lines.len() >= WRITE_BATCH {
                self.flush();
            }
        }
        queued
    }

    /// Writes the lines formatted so far.
    fn flush(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        match self.sink.write(&self.lines) {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::error!(%error, "access log write failed; its lines are lost until a write succeeds");
            }
            Err(_) => {}
        }
        self.lines.clear();
        if self.lines.capacity() > 2 * WRITE_BATCH {
            self.lines.shrink_to(WRITE_BATCH);
        }
    }
}

/// Joins in `joined` the record a ring's end cut: its first part `cut`,
/// and the rest from `second` (where the ring goes on); returns what of
/// `second` follows the record.
fn join_cut_record<'q>(cut: &[u8], second: &'q [u8], joined: &mut Vec<u8>) -> &'q [u8] {
    joined.clear();
    joined.extend_from_slice(cut);
    let (length, second) =
        second.split_at(LENGTH_BYTES.saturating_sub(cut.len()).min(second.len()));
    joined.extend_from_slice(length);
    let record = joined
        .first_chunk::<LENGTH_BYTES>()
        .map_or(0, |length| u32::from_le_bytes(*length) as usize);
    let missing = (LENGTH_BYTES + record).saturating_sub(joined.len());
    let (rest, after) = second.split_at(missing.min(second.len()));
    joined.extend_from_slice(rest);
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wherever the ring's end cuts a record, joining its two parts gives
    /// the record back and leaves what follows it.
    #[test]
    fn a_cut_record_joins_wherever_it_was_cut() {
        let mut queued = Vec::new();
        for length in [5_u32, 0] {
            queued.extend_from_slice(&length.to_le_bytes());
            queued.extend(std::iter::repeat_n(length as u8, length as usize));
        }
        let first = LENGTH_BYTES + 5;
        let mut joined = Vec::new();
        for cut in 1..first {
            let after = join_cut_record(&queued[..cut], &queued[cut..], &mut joined);
            assert_eq!(joined, &queued[..first], "cut at {cut}");
            assert_eq!(after, &queued[first..], "cut at {cut}");
        }
    }
}
