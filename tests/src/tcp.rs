//! A raw TCP backend on `127.0.0.1:0` for `tcp` listener tests, and the
//! client side of such a test.
//!
//! [`TcpBackend::echo`] greets each connection with its name and a
//! newline, echoes every byte back, and when the client has closed its
//! writing side answers `bye <name>\n` (sent after the EOF, for half-close
//! tests) and closes. [`TcpBackend::silent`] accepts and reads, never
//! writes. Both record the first [`RECORDED`] bytes of each connection
//! (PROXY headers) and count accepted and open connections.
//! [`TcpBackend::stop_accepting`] closes the listening socket and keeps
//! the connections open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How many bytes of each connection a backend keeps.
pub const RECORDED: usize = 4096;

#[derive(Debug, Default)]
struct Shared {
    name: String,
    echo: bool,
    accepted: AtomicU64,
    open: AtomicU64,
    received: tokio::sync::Mutex<Vec<Vec<u8>>>,
}

/// A running TCP backend; stops (with its connections) when dropped.
#[derive(Debug)]
pub struct TcpBackend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    connections: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl TcpBackend {
    /// An echo backend named `name`.
    pub async fn echo(name: &str) -> anyhow::Result<TcpBackend> {
        Self::start(name, true).await
    }

    /// A backend that accepts, reads and never answers.
    pub async fn silent(name: &str) -> anyhow::Result<TcpBackend> {
        Self::start(name, false).await
    }

    async fn start(name: &str, echo: bool) -> anyhow::Result<TcpBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            echo,
            ..Shared::default()
        });
        let connections = Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            Arc::clone(&connections),
        ));
        Ok(TcpBackend {
            shared,
            addr,
            accept: Some(accept),
            connections,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now (their task has not ended).
    pub fn open(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The first bytes each connection sent, in accept order (a
    /// connection's entry grows while it sends).
    pub async fn received(&self) -> Vec<Vec<u8>> {
        self.shared.received.lock().await.clone()
    }

    /// Closes the listening socket (new connections are refused); the
    /// open ones carry on.
    pub async fn stop_accepting(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        if let Some(task) = &self.accept {
            task.abort();
        }
        if let Ok(mut set) = self.connections.try_lock() {
            set.abort_all();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let index = {
            let mut received = shared.received.lock().await;
            received.push(Vec::new());
            received.len() - 1
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        connections.lock().await.spawn(async move {
            let _ = serve(stream, &shared, index).await;
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve(mut stream: TcpStream, shared: &Shared, index: usize) -> std::io::Result<()> {
    if shared.echo {
        stream
            .write_all(format!("{}\n", shared.name).as_bytes())
            .await?;
    }
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        {
            let mut received = shared.received.lock().await;
            let kept = &mut received[index];
            let room = RECORDED.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buffer[..room]);
        }
        if shared.echo {
            stream.write_all(&buffer[..n]).await?;
        }
    }
    if shared.echo {
        stream
            .write_all(format!("bye {}\n", shared.name).as_bytes())
            .await?;
        stream.shutdown().await?;
    }
    Ok(())
}

/// Connects to `addr` and reads the greeting line of an echo backend
/// (its name), within [`crate::STEP`].
pub async fn connect_greeted(addr: SocketAddr) -> anyhow::Result<(TcpStream, String)> {
    let mut stream = tokio::time::timeout(crate::STEP, TcpStream::connect(addr)).await??;
    let name = read_line(&mut stream).await?;
    Ok((stream, name))
}

/// Reads one line (without its newline), byte by byte, within
/// [`crate::STEP`]; an error if the stream ends first.
pub async fn read_line(stream: &mut TcpStream) -> anyhow::Result<String> {
    let read = async {
        let mut line = Vec::new();
        loop {
            let byte = stream.read_u8().await?;
            if byte == b'\n' {
                return anyhow::Ok(String::from_utf8(line)?);
            }
            line.push(byte);
        }
    };
    tokio::time::timeout(crate::STEP, read).await?
}

/// Reads until the stream ends, within [`crate::STEP`].
pub async fn read_to_end(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    tokio::time::timeout(crate::STEP, stream.read_to_end(&mut all)).await??;
    Ok(all)
}

/// Whether the stream ends (EOF or reset) within [`crate::STEP`] without
/// sending more bytes.
pub async fn closes(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(crate::STEP, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}
