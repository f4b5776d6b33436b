//! Zero-downtime upgrade: a running instance hands its listening sockets
//! to a new one (`wasmroute serve --upgrade`), so no connection is ever
//! refused while the binary or the whole process is replaced.
//!
//! The running instance listens on a unix socket ([`Endpoint`]; the path
//! is `[server] upgrade_socket`, default [`default_socket`]). A new
//! instance connects ([`Takeover::connect`]) and receives one message:
//! the text `wasmroute-upgrade 1\n`, one `NAME ADDRESS\n` line per
//! listener (its name and the address its config asked for), one more
//! line `[admin] ADDRESS` for the admin endpoint's socket when it has one
//! (no listener name has brackets), a blank line, and with it the
//! listening sockets' descriptors (`SCM_RIGHTS`, in line order). The new
//! instance starts serving, taking over each socket whose listener has
//! the same address in its own config (and, for port 0, the same name),
//! the admin socket when its `[admin] address` is the same, and binding
//! the rest, replaces the unix socket with its own, and writes
//! `serving\n` ([`Takeover::confirm`]). Only then does the old instance
//! stop accepting on the admin socket, drain and exit. Until that line
//! arrives, the old one goes on serving: a new instance that fails to
//! start changes nothing.
//!
//! Both processes accept from the same kernel queues while the handover
//! lasts, so a connection is always accepted by one of them. Only a peer
//! with the same user id as the socket file's owner is answered.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::Command;

/// The first line of a handover message (its version).
const GREETING: &str = "wasmroute-upgrade 1";
/// What the new instance writes once it serves.
const SERVING: &[u8] = b"serving\n";
/// The most listeners one handover carries.
const MAX_SOCKETS: usize = 200;
/// The longest a handover message may be.
const MAX_MESSAGE: usize = 64 * 1024;
/// The name of the admin endpoint's socket in a handover message: not a
/// valid listener name (`[A-Za-z0-9_.-]`), so it cannot clash with one.
pub const ADMIN_SOCKET: &str = "[admin]";
/// How long either side waits for the other during a handover (the new
/// instance compiles its policies between receiving and confirming).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// A listening socket as handed over: its listener's name, the address
/// its config asked for, and a descriptor of it.
#[derive(Debug)]
pub struct HandedSocket {
    /// The listener's name in the old config.
    pub name: String,
    /// The address the old config asked for (may have port 0).
    pub address: SocketAddr,
    /// The listening socket.
    pub fd: OwnedFd,
}

impl HandedSocket {
    /// The admin endpoint's socket, bound for `[admin] address`.
    pub fn admin(address: SocketAddr, socket: &tokio::net::TcpListener) -> io::Result<Self> {
        Ok(HandedSocket {
            name: ADMIN_SOCKET.to_owned(),
            address,
            fd: socket.as_fd().try_clone_to_owned()?,
        })
    }

    /// Another descriptor of the same socket.
    fn duplicate(&self) -> io::Result<HandedSocket> {
        Ok(HandedSocket {
            name: self.name.clone(),
            address: self.address,
            fd: self.fd.try_clone()?,
        })
    }
}

/// Sockets received from the previous instance, taken by the listeners
/// of the new config that match them; the rest are closed when dropped.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<HandedSocket>,
}

impl Inherited {
    /// The inherited socket for a listener called `name` on `address`:
    /// the same configured address, and for port 0 also the same name.
    /// Never the admin socket.
    pub fn take(&mut self, name: &str, address: SocketAddr) -> Option<std::net::TcpListener> {
        self.take_where(|socket| {
            socket.name != ADMIN_SOCKET
                && socket.address == address
                && (address.port() != 0 || socket.name == name)
        })
    }

    /// The inherited admin endpoint's socket, when the previous instance's
    /// `[admin] address` was `address` too (port 0 included: there is one
    /// admin socket).
    pub fn take_admin(&mut self, address: SocketAddr) -> Option<std::net::TcpListener> {
        self.take_where(|socket| socket.name == ADMIN_SOCKET && socket.address == address)
    }

    fn take_where(
        &mut self,
        matches: impl Fn(&HandedSocket) -> bool,
    ) -> Option<std::net::TcpListener> {
        let index = self.sockets.iter().position(matches)?;
        let socket = self.sockets.swap_remove(index);
        Some(std::net::TcpListener::from(socket.fd))
    }

    /// How many sockets are left.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// No socket is left.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// The upgrade socket when `[server] upgrade_socket` is not set:
/// `$XDG_RUNTIME_DIR` (or `/tmp` without it) `/wasmroute-HASH.sock`, where
/// HASH is the first 12 hex digits of the SHA-256 of the config file's
/// canonical path: one socket per config file, found again by the next
/// instance started with the same file.
pub fn default_socket(config_path: &Path) -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let digest = Sha256::digest(config_path.as_os_str().as_encoded_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("wasmroute-{hash}.sock"))
}

/// The running instance's end: accepts new instances on the unix socket.
/// Dropping it stops listening and removes the socket file, unless a new
/// instance has replaced it.
pub(super) struct Endpoint {
    path: PathBuf,
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Listens on `path` (replacing a stale socket file), readable and
    /// writable by this user only. A new instance gets the listeners'
    /// sockets and `admin`'s. `handed_over` turns true once it confirmed
    /// it serves.
    pub(super) fn listen(
        path: &Path,
        commands: mpsc::Sender<Command>,
        admin: Option<HandedSocket>,
        handed_over: watch::Sender<bool>,
    ) -> io::Result<Endpoint> {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let metadata = std::fs::metadata(path)?;
        let owner = metadata.uid();
        let ours = Ours { commands, admin };
        let task = tokio::spawn(accept_loop(listener, owner, ours, handed_over));
        tracing::info!(socket = %path.display(), "upgrade socket listening");
        Ok(Endpoint {
            path: path.to_path_buf(),
            inode: metadata.ino(),
            task,
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where the running instance's sockets come from: the listeners' from
/// the control loop (they change with reloads), the admin one's as bound
/// at start.
struct Ours {
    commands: mpsc::Sender<Command>,
    admin: Option<HandedSocket>,
}

impl Ours {
    /// Every socket to hand over now, the admin one last.
    async fn sockets(&self) -> anyhow::Result<Vec<HandedSocket>> {
        let (reply, sockets) = oneshot::channel();
        self.commands
            .send(Command::Sockets(reply))
            .await
            .context("the server has stopped")?;
        let mut sockets = sockets.await.context("the server has stopped")?;
        if let Some(admin) = &self.admin {
            match admin.duplicate() {
                Ok(socket) => sockets.push(socket),
                Err(error) => tracing::error!(%error, "cannot hand over the admin socket"),
            }
        }
        Ok(sockets)
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    owner: u32,
    ours: Ours,
    handed_over: watch::Sender<bool>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "upgrade socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match hand_over(stream, owner, &ours).await {
            Ok(pid) => {
                tracing::info!(pid, "upgrade: the new instance is serving; draining");
                handed_over.send_replace(true);
                return;
            }
            Err(error) => {
                tracing::warn!("upgrade aborted, this instance keeps serving: {error:#}");
            }
        }
    }
}

/// Sends this instance's listening sockets to the peer and waits for it
/// to serve; returns its pid.
async fn hand_over(stream: tokio::net::UnixStream, owner: u32, ours: &Ours) -> anyhow::Result<i32> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    let (pid, uid) = (peer.pid.as_raw_nonzero().get(), peer.uid.as_raw());
    anyhow::ensure!(
        uid == owner,
        "pid {pid} runs as uid {uid}, the socket belongs to uid {owner}"
    );
    let sockets = ours.sockets().await?;
    tracing::info!(pid, sockets = sockets.len(), "upgrade: handing over");
    tokio::task::spawn_blocking(move || send_and_await(&stream, &sockets))
        .await
        .context("the handover panicked")??;
    Ok(pid)
}

/// The blocking half of [`hand_over`].
fn send_and_await(mut stream: &UnixStream, sockets: &[HandedSocket]) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut text = format!("{GREETING}\n");
    for socket in sockets {
        text.push_str(&format!("{} {}\n", socket.name, socket.address));
    }
    text.push('\n');
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    anyhow::ensure!(
        control.push(SendAncillaryMessage::ScmRights(&fds)),
        "too many sockets for one message"
    );
    let bytes = text.as_bytes();
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )?;
    // The descriptors went with the first byte; the rest is plain text.
    stream.write_all(&bytes[sent..])?;
    let mut answer = Vec::new();
    stream
        .take(SERVING.len() as u64)
        .read_to_end(&mut answer)
        .context("waiting for the new instance to serve")?;
    anyhow::ensure!(
        answer == SERVING,
        "the new instance stopped before serving (said {:?})",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// The new instance's end of a handover: the sockets received, and the
/// connection on which to confirm.
pub struct Takeover {
    stream: UnixStream,
    /// The listening sockets of the running instance.
    pub inherited: Inherited,
}

impl Takeover {
    /// Connects to the running instance at `path` and receives its
    /// listening sockets. Blocking.
    pub fn connect(path: &Path) -> anyhow::Result<Takeover> {
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "no running instance answers on the upgrade socket {}",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
        stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
        let (text, fds) = receive(&stream)?;
        let inherited = parse_message(&text, fds)?;
        Ok(Takeover { stream, inherited })
    }

    /// Tells the old instance that this one serves: it drains and exits.
    pub fn confirm(mut self) -> io::Result<()> {
        self.stream.write_all(SERVING)?;
        self.stream.flush()
    }
}

/// Reads the handover message: its text (up to the blank line) and the
/// descriptors that came with it.
fn receive(mut stream: &UnixStream) -> anyhow::Result<(String, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    anyhow::ensure!(
        !received.flags.contains(rustix::net::ReturnFlags::CTRUNC),
        "more than {MAX_SOCKETS} sockets were sent"
    );
    let mut length = received.bytes;
    while !buffer[..length].ends_with(b"\n\n") {
        anyhow::ensure!(length < MAX_MESSAGE, "the handover message is too long");
        let more = stream.read(&mut buffer[length..])?;
        anyhow::ensure!(more > 0, "the running instance closed the handover early");
        length += more;
    }
    let text = String::from_utf8(buffer[..length].to_vec()).context("handover message")?;
    Ok((text, fds))
}

/// Pairs each `NAME ADDRESS` line with its descriptor.
fn parse_message(text: &str, fds: Vec<OwnedFd>) -> anyhow::Result<Inherited> {
    let mut lines = text.lines();
    let greeting = lines.next().unwrap_or_default();
    anyhow::ensure!(
        greeting == GREETING,
        "unexpected handover greeting {greeting:?} (a different wasmroute version?)"
    );
    let entries: Vec<(&str, &str)> = lines
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_once(' ').context("malformed handover line"))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        entries.len() == fds.len(),
        "{} listeners described but {} sockets received",
        entries.len(),
        fds.len()
    );
    let mut seen = HashMap::new();
    let sockets = entries
        .into_iter()
        .zip(fds)
        .map(|((name, address), fd)| {
            anyhow::ensure!(seen.insert(name, ()).is_none(), "listener {name} twice");
            let address = address.parse().context("handover address")?;
            Ok(HandedSocket {
                name: name.to_owned(),
                address,
                fd,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Inherited { sockets })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message round-trips through a real socket pair, descriptors
    /// included: the received socket is the same listening socket.
    #[test]
    fn sockets_and_their_listeners_cross_a_unix_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bound = listener.local_addr().unwrap();
        let asked: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let handed = vec![HandedSocket {
            name: "edge".into(),
            address: asked,
            fd: OwnedFd::from(listener),
        }];
        let (old, new) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || send_and_await(&old, &handed));
        let (text, fds) = receive(&new).unwrap();
        let mut inherited = parse_message(&text, fds).unwrap();
        assert_eq!(inherited.len(), 1);
        assert!(
            inherited.take("other", asked).is_none(),
            "port 0 needs the name"
        );
        let socket = inherited.take("edge", asked).expect("edge's socket");
        assert_eq!(socket.local_addr().unwrap(), bound);
        let client = std::net::TcpStream::connect(bound).unwrap();
        let (accepted, _) = socket.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        (&new).write_all(SERVING).unwrap();
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn a_peer_that_closes_before_serving_aborts_the_handover() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let handed = vec![HandedSocket {
            name: "edge".into(),
            address: listener.local_addr().unwrap(),
            fd: OwnedFd::from(listener),
        }];
        let (old, new) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || send_and_await(&old, &handed));
        let _ = receive(&new).unwrap();
        drop(new);
        assert!(sender.join().unwrap().is_err());
    }

    #[test]
    fn a_fixed_port_matches_by_address_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut inherited = Inherited {
            sockets: vec![HandedSocket {
                name: "old-name".into(),
                address,
                fd: OwnedFd::from(listener),
            }],
        };
        assert!(inherited.take("new-name", address).is_some());
        assert!(inherited.is_empty());
    }

    /// The admin socket crosses with the listeners' and is told apart
    /// from them, port 0 included: a listener never takes it, and the
    /// admin endpoint takes it only for the same configured address.
    #[test]
    fn the_admin_socket_is_matched_apart_from_the_listeners() {
        let asked: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let admin = std::net::TcpListener::bind(asked).unwrap();
        let admin_bound = admin.local_addr().unwrap();
        admin.set_nonblocking(true).unwrap();
        let admin = tokio::net::TcpListener::from_std(admin).unwrap();
        let listener = std::net::TcpListener::bind(asked).unwrap();
        let handed = vec![
            HandedSocket {
                name: "edge".into(),
                address: asked,
                fd: OwnedFd::from(listener),
            },
            HandedSocket::admin(asked, &admin).unwrap(),
        ];
        let (old, new) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || send_and_await(&old, &handed));
        let (text, fds) = receive(&new).unwrap();
        assert!(text.contains("\n[admin] 127.0.0.1:0\n"), "{text}");
        let mut inherited = parse_message(&text, fds).unwrap();
        assert!(inherited.take(ADMIN_SOCKET, asked).is_none());
        assert!(
            inherited
                .take_admin("127.0.0.1:9".parse().unwrap())
                .is_none()
        );
        let taken = inherited.take_admin(asked).expect("the admin socket");
        assert_eq!(taken.local_addr().unwrap(), admin_bound);
        let edge = inherited.take("edge", asked).expect("edge's socket");
        assert_ne!(edge.local_addr().unwrap(), admin_bound);
        assert!(inherited.is_empty());
        (&new).write_all(SERVING).unwrap();
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn the_default_socket_depends_on_the_config_path() {
        let a = default_socket(Path::new("/etc/wasmroute/a.toml"));
        let b = default_socket(Path::new("/etc/wasmroute/b.toml"));
        assert_ne!(a, b);
        assert_eq!(a, default_socket(Path::new("/etc/wasmroute/a.toml")));
        assert!(a.as_os_str().len() < 108);
    }
}
