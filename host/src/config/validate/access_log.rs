//! The `[access_log]` part of validation: where the lines go, their
//! format and the writer's queue.

use std::path::Path;

use super::Checker;
use crate::config::model::{AccessLogConfig, LogFormat, LogTarget};
use crate::config::raw::RawAccessLog;

/// Lines waiting for the writer, by default: a few seconds of a busy
/// proxy's lines while the disk stalls.
const DEFAULT_QUEUE: usize = 8192;
const MAX_QUEUE: i64 = 1 << 20;

impl Checker<'_> {
    pub(super) fn access_log(&mut self, raw: RawAccessLog) -> AccessLogConfig {
        let target = match raw.path.as_deref() {
            None => {
                self.error(
                    "access_log.path",
                    "missing: a file, or \"-\" for standard output",
                );
                LogTarget::Stdout
            }
            Some("-") => LogTarget::Stdout,
            Some(path) => LogTarget::File(self.path("access_log.path", Path::new(path))),
        };
        let format = match raw.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("combined") => LogFormat::Combined,
            Some(other) => {
                self.error(
                    "access_log.format",
                    format!("unknown format `{other}`: \"json\" or \"combined\""),
                );
                LogFormat::Json
            }
        };
        let queue = match raw.queue {
            None => DEFAULT_QUEUE,
            Some(lines @ 1..=MAX_QUEUE) => lines as usize,
            Some(lines) => {
                self.error(
                    "access_log.queue",
                    format!("{lines} lines: must be 1 to {MAX_QUEUE}"),
                );
                DEFAULT_QUEUE
            }
        };
        AccessLogConfig {
            target,
            format,
            queue,
        }
    }
}
