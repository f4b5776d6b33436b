//! A raw-TCP backend answering with exact bytes, for response framings a
//! hyper server never produces: a body delimited by the end of the
//! connection, chunked trailers, informational (1xx) heads, and keep-alive
//! connections closed without notice.
//!
//! It reads requests (head and `Content-Length` body) on each connection
//! and answers by path:
//! - `/eof`: `200` without length, body `until-close`, then closes;
//! - `/chunked`: chunked `hello` with a trailer;
//! - `/hints`: `103 Early Hints`, then `200` with body `ok`;
//! - `/drop`: `200` with a length, then closes without `Connection: close`
//!   (a keep-alive connection the backend drops once idle);
//! - anything else: `200` with body `<method> <path> <body length>` (its
//!   head only for HEAD).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running scripted backend; stops when dropped.
pub struct Scripted {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Scripted {
    /// Listens on a fresh loopback port.
    pub async fn start() -> anyhow::Result<Scripted> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&served);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&counter)));
            }
        });
        Ok(Scripted { addr, served, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, served: Arc<AtomicU64>) {
    let mut buffer = Vec::new();
    while let Some((method, path, body_len)) = read_request(&mut stream, &mut buffer).await {
        served.fetch_add(1, Ordering::SeqCst);
        let (reply, close) = answer(&method, &path, body_len);
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

fn answer(method: &str, path: &str, body_len: usize) -> (String, bool) {
    match path {
        "/eof" => ("HTTP/1.1 200 OK\r\n\r\nuntil-close".into(), true),
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n"
                .into(),
            false,
        ),
        "/hints" => (
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .into(),
            false,
        ),
        "/drop" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop".into(),
            true,
        ),
        _ => {
            let body = format!("{method} {path} {body_len}");
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            match method {
                "HEAD" => (head, false),
                _ => (head + &body, false),
            }
        }
    }
}

/// Reads one request: method, path and body length (`None` at the end of
/// the connection).
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, String, usize)> {
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let mut words = head.split_whitespace();
            let method = words.next()?.to_owned();
            let path = words.next()?.to_owned();
            let length = content_length(&head);
            while buffer.len() < end + 4 + length {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..end + 4 + length);
            return Some((method, path, length));
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    match stream.read_buf(buffer).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(()),
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
