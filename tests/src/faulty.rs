//! A faulty backend over raw TCP: it accepts a connection, reads one
//! request (head, and a `Content-Length` body), counts it and closes the
//! connection without answering: "connection closed before any response
//! byte". Health-check requests (`User-Agent: wasmroute-health`) are
//! counted separately, so a test can tell proxied traffic from checks.
//!
//! Started on a given address it takes over the port of a stopped
//! [`crate::Backend`]: the backend looks alive to a TCP connect but
//! answers nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    checks: AtomicU64,
}

/// A running faulty backend; stops when dropped.
pub struct Faulty {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Faulty {
    /// Listens on `addr` (`127.0.0.1:0` for a fresh port).
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Faulty> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counts)));
        Ok(Faulty { addr, counts, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received that were not health checks.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Health-check requests received.
    pub fn checks(&self) -> u64 {
        self.counts.checks.load(Ordering::SeqCst)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, counts: Arc<Counts>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(read_then_close(stream, Arc::clone(&counts)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads one request head (and its `Content-Length` body), counts it and
/// drops the connection.
async fn read_then_close(mut stream: TcpStream, counts: Arc<Counts>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    if head.contains("user-agent: wasmroute-health") {
        counts.checks.fetch_add(1, Ordering::SeqCst);
    } else {
        counts.requests.fetch_add(1, Ordering::SeqCst);
    }
    // Dropping the stream closes the connection without a response.
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
