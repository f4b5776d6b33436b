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
//! - `/long-head`: a response head that never ends (`X-Long: ` and
//!   [`LONG_HEAD`] bytes without a line end), then silence;
//! - `/bad-chunk`: chunked framing with a size line `x5`;
//! - `/bad-length`: `Content-Length: +2`;
//! - `/early`: `413` as soon as the head is in, without reading the body,
//!   then closes;
//! - anything else: `200` with body `<method> <path> <body length>` (its
//!   head only for HEAD).
//!
//! Every request head is recorded as received ([`Scripted::heads`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes of the endless head `/long-head` sends.
pub const LONG_HEAD: usize = 1024 * 1024;

/// A running scripted backend; stops when dropped.
pub struct Scripted {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

/// What the backend has received.
#[derive(Default)]
struct Seen {
    served: AtomicU64,
    heads: tokio::sync::Mutex<Vec<String>>,
}

impl Scripted {
    /// Listens on a fresh loopback port.
    pub async fn start() -> anyhow::Result<Scripted> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Ok(Scripted { addr, seen, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.seen.served.load(Ordering::SeqCst)
    }

    /// Every request head received so far, as text, in order.
    pub async fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().await.clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Seen>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        seen.served.fetch_add(1, Ordering::SeqCst);
        seen.heads.lock().await.push(request.head);
        if request.path == "/long-head" {
            return endless_head(stream).await;
        }
        let (reply, close) = answer(&request.method, &request.path, request.body_len);
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// A head that never ends, then silence until the peer closes.
async fn endless_head(mut stream: TcpStream) {
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Long: ").await;
    let filler = [b'a'; 16 * 1024];
    for _ in 0..LONG_HEAD / filler.len() {
        if stream.write_all(&filler).await.is_err() {
            return;
        }
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
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
        "/bad-chunk" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx5\r\nhello\r\n0\r\n\r\n".into(),
            true,
        ),
        "/bad-length" => (
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok".into(),
            true,
        ),
        "/early" => (
            "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n".into(),
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

/// One request as read.
struct Request {
    head: String,
    method: String,
    path: String,
    body_len: usize,
}

/// Reads one request (`None` at the end of the connection); the body of
/// `/early` is left unread.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end + 4]).into_owned();
            let mut words = head.split_whitespace();
            let method = words.next()?.to_owned();
            let path = words.next()?.to_owned();
            let body_len = content_length(&head);
            let length = if path == "/early" { 0 } else { body_len };
            while buffer.len() < end + 4 + length {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..end + 4 + length);
            return Some(Request {
                head,
                method,
                path,
                body_len,
            });
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
