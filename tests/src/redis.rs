//! Real `redis-server` processes for the data-tier tests, and a small RESP
//! client to drive them.
//!
//! [`RedisServer::start`] runs one `redis-server` per call on a free
//! loopback port (no persistence, its files in a temporary folder), waits
//! until that very process answers `PING`, and kills it when dropped.
//! [`RedisClient`] speaks RESP over tokio: commands go out as arrays of
//! bulk strings, replies come back as [`RespReply`] (simple string, error,
//! integer, bulk, array). The replication helpers
//! ([`RedisServer::replica_of`], [`RedisServer::wait_for_sync`],
//! [`RedisServer::promote`]) set up and fail over a primary and a replica.
//!
//! Without `redis-server` on `PATH` the tests that need it fail (they do
//! not pass silently), saying that `.ci/run` installs it.

use std::fs::File;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::STEP;

/// The program the tests run.
const PROGRAM: &str = "redis-server";

/// Fresh ports tried before giving up (another process may take a port
/// between our probe and redis's bind).
const PORT_TRIES: usize = 5;

/// Connection attempts while a new server starts, and the longest pause
/// between two (the pause doubles from 5 ms): about 10 s in all.
const READY_TRIES: u32 = 110;
const READY_BACKOFF_CAP: Duration = Duration::from_millis(100);

/// Polls of [`RedisServer::wait_for_sync`] (every 20 ms: 30 s in all).
const SYNC_TRIES: u32 = 1500;
const SYNC_POLL: Duration = Duration::from_millis(20);

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespReply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$3\r\nabc` (`None`: the null bulk `$-1`)
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None`: the null array `*-1`)
    Array(Option<Vec<RespReply>>),
}

impl RespReply {
    /// The reply as text: a simple string, or a bulk string (lossy UTF-8).
    pub fn text(&self) -> Option<String> {
        match self {
            RespReply::Simple(s) => Some(s.clone()),
            RespReply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// An async RESP connection to one server.
pub struct RedisClient {
    stream: BufReader<TcpStream>,
}

impl RedisClient {
    /// Connects to `addr` (bounded by [`STEP`]).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RedisClient> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to redis at {addr}: timed out"))??;
        Ok(RedisClient {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one command (its words as bulk strings) and reads its reply
    /// (bounded by [`STEP`]). An error reply is a reply, not an `Err`.
    pub async fn command(&mut self, words: &[&str]) -> anyhow::Result<RespReply> {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for word in words {
            out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
            out.extend_from_slice(word.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            self.stream.get_mut().write_all(&out).await?;
            self.read_reply().await
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .with_context(|| format!("redis {words:?}: no reply"))?
    }

    /// Like [`RedisClient::command`], but an error reply is an `Err`.
    pub async fn ok(&mut self, words: &[&str]) -> anyhow::Result<RespReply> {
        match self.command(words).await? {
            RespReply::Error(e) => bail!("redis {words:?}: {e}"),
            reply => Ok(reply),
        }
    }

    /// `PING`: true on `+PONG`.
    pub async fn ping(&mut self) -> anyhow::Result<bool> {
        Ok(self.command(&["PING"]).await? == RespReply::Simple("PONG".into()))
    }

    /// `SET key value`.
    pub async fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.ok(&["SET", key, value]).await.map(drop)
    }

    /// `GET key`: `None` when the key is absent.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.ok(&["GET", key]).await?.text())
    }

    /// `INFO section` as text (`key:value` lines).
    pub async fn info(&mut self, section: &str) -> anyhow::Result<String> {
        let reply = self.ok(&["INFO", section]).await?;
        reply.text().context("INFO: not a bulk string")
    }

    /// The first word of `ROLE`: `master`, `slave` or `sentinel`.
    pub async fn role(&mut self) -> anyhow::Result<String> {
        match self.ok(&["ROLE"]).await? {
            RespReply::Array(Some(items)) => items.first().and_then(RespReply::text),
            _ => None,
        }
        .context("ROLE: not an array starting with a role")
    }

    /// `ROLE` of the server a new connection to `addr` reaches (through a
    /// proxy, the backend it was sent to); `None` when the connection or
    /// the command fails.
    pub async fn role_at(addr: SocketAddr) -> Option<String> {
        RedisClient::connect(addr).await.ok()?.role().await.ok()
    }

    /// Whether `tries` new connections in a row to `addr` all reach a
    /// server of `role` (a proxy's write port reaching the primary only).
    pub async fn all_reach(addr: SocketAddr, role: &str, tries: usize) -> bool {
        for _ in 0..tries {
            if RedisClient::role_at(addr).await.as_deref() != Some(role) {
                return false;
            }
        }
        true
    }

    /// Reads one whole reply (an array with all its elements).
    fn read_reply(
        &mut self,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<RespReply>> + Send + '_>> {
        Box::pin(async move {
            let line = self.read_line().await?;
            let (kind, rest) = line.split_at_checked(1).context("an empty reply line")?;
            let reply = match kind {
                "+" => RespReply::Simple(rest.to_owned()),
                "-" => RespReply::Error(rest.to_owned()),
                ":" => RespReply::Integer(rest.parse()?),
                "$" => RespReply::Bulk(self.read_bulk(rest.parse()?).await?),
                "*" => RespReply::Array(self.read_array(rest.parse()?).await?),
                _ => bail!("not a RESP reply: {line:?}"),
            };
            Ok(reply)
        })
    }

    async fn read_bulk(&mut self, len: i64) -> anyhow::Result<Option<Vec<u8>>> {
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        let mut bytes = vec![0; len + 2];
        self.stream.read_exact(&mut bytes).await?;
        if !bytes.ends_with(b"\r\n") {
            bail!("a bulk string not ended by CRLF");
        }
        bytes.truncate(len);
        Ok(Some(bytes))
    }

    async fn read_array(&mut self, len: i64) -> anyhow::Result<Option<Vec<RespReply>>> {
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.read_reply().await?);
        }
        Ok(Some(items))
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("redis closed the connection");
        }
        match line.strip_suffix("\r\n") {
            Some(line) => Ok(line.to_owned()),
            None => bail!("a reply line not ended by CRLF: {line:?}"),
        }
    }
}

/// A running `redis-server` on 127.0.0.1; killed when dropped.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    /// Fails (with the reason) when `redis-server` is not installed.
    pub async fn start() -> anyhow::Result<RedisServer> {
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let port = free_port()?;
            let mut server = RedisServer::spawn(port)?;
            match server.await_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e.context(server.log())),
            }
        }
        Err(last.expect("at least one try")).context("redis-server did not start")
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new connection to it.
    pub async fn client(&self) -> anyhow::Result<RedisClient> {
        RedisClient::connect(self.addr).await
    }

    /// `REPLICAOF` the primary: this server becomes its replica.
    pub async fn replica_of(&self, primary: &RedisServer) -> anyhow::Result<()> {
        let port = primary.addr.port().to_string();
        let host = primary.addr.ip().to_string();
        self.client()
            .await?
            .ok(&["REPLICAOF", &host, &port])
            .await?;
        Ok(())
    }

    /// `REPLICAOF NO ONE`: this server becomes a primary.
    pub async fn promote(&self) -> anyhow::Result<()> {
        self.client().await?.ok(&["REPLICAOF", "NO", "ONE"]).await?;
        Ok(())
    }

    /// Waits (bounded, about 30 s) until this replica's link to its
    /// primary is up and `key` holds `value` here.
    pub async fn wait_for_sync(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let mut info = String::new();
        for _ in 0..SYNC_TRIES {
            info = client.info("replication").await?;
            let linked = info.lines().any(|l| l == "master_link_status:up");
            if linked && client.get(key).await?.as_deref() == Some(value) {
                return Ok(());
            }
            tokio::time::sleep(SYNC_POLL).await;
        }
        bail!("{}: not in sync with {key} = {value:?}:\n{info}", self.addr)
    }

    /// Runs `redis-server` on `port`, its output in its folder's log.
    fn spawn(port: u16) -> anyhow::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("wasmroute-redis")
            .tempdir()?;
        let log = File::create(dir.path().join("redis.log"))?;
        let child = Command::new(PROGRAM)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => anyhow::anyhow!(
                    "{PROGRAM} is not installed (not on PATH): the data-tier tests run \
                     real Redis servers; `.ci/run` installs it (Debian package redis-server)"
                ),
                _ => anyhow::Error::new(e).context(format!("running {PROGRAM}")),
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(RedisServer { child, addr, dir })
    }

    /// Polls the port until this very process (checked by its pid)
    /// answers `PING`; fails when the process exits or the tries run out.
    async fn await_ready(&mut self) -> anyhow::Result<()> {
        let mut pause = Duration::from_millis(5);
        for _ in 0..READY_TRIES {
            if let Some(status) = self.child.try_wait()? {
                bail!("{PROGRAM} on {} exited: {status}", self.addr);
            }
            if self.answers_as_itself().await {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(READY_BACKOFF_CAP);
        }
        bail!("{PROGRAM} on {} never answered PING", self.addr)
    }

    /// Whether the server on our port answers `PING` and is our child
    /// (not another test's server that took the port first).
    async fn answers_as_itself(&self) -> bool {
        let Ok(Ok(stream)) = tokio::time::timeout(STEP, TcpStream::connect(self.addr)).await else {
            return false;
        };
        let mut client = RedisClient {
            stream: BufReader::new(stream),
        };
        if !client.ping().await.unwrap_or(false) {
            return false;
        }
        let pid = format!("process_id:{}", self.child.id());
        client
            .info("server")
            .await
            .is_ok_and(|info| info.lines().any(|l| l == pid))
    }

    /// The server's log so far (for error messages).
    fn log(&self) -> String {
        let path = self.dir.path().join("redis.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        format!("{PROGRAM} log ({}):\n{text}", path.display())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let probe = TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?.port())
}
