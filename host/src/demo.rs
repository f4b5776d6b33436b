//! `wasmroute demo`: three in-process demo backends and the proxy in front
//! of them, with the bundled policies, so a fresh checkout shows routing by
//! a Wasm policy with one command.
//!
//! The backends listen on ephemeral loopback ports and answer
//! `hello from <name>`. Beside the HTTP listener, a TCP listener (layer 4,
//! on an ephemeral port) balances connections over the same web backends
//! with `shared-round-robin`: one decision per connection, bytes streamed as
//! they come. The policies and the generated config are written
//! to a temporary folder which the proxy watches like any other: drop a
//! `.wasm` there (or edit the config) and the demo picks it up.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::Server;

/// The demo's backends: (pool, backend name).
const BACKENDS: [(&str, &str); 3] = [("web", "web-1"), ("web", "web-2"), ("video", "video-1")];

/// A running demo.
pub struct Demo {
    /// The proxy.
    pub server: Server,
    /// The proxy's HTTP address.
    pub address: SocketAddr,
    /// The TCP listener's address.
    pub tcp_address: SocketAddr,
    /// The folder holding `wasmroute.toml` and `policies/`.
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the backends, writes the config and policies, starts the
    /// proxy on `address`.
    pub async fn start(address: SocketAddr) -> anyhow::Result<Demo> {
        anyhow::ensure!(
            crate::bundled::AVAILABLE,
            "this wasmroute was built without bundled policies (cargo feature \
             `bundled-policies`, on by default): the demo has no policy to run. \
             Rebuild with default features, or run `wasmroute serve --config FILE` \
             with your own policies folder"
        );
        let mut backends = Vec::new();
        for (pool, name) in BACKENDS {
            backends.push((pool, spawn_backend(name).await?));
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmroute-demo-")
            .tempdir()?;
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies)?;
        for (name, bytes) in crate::bundled::POLICIES {
            std::fs::write(policies.join(format!("{name}.wasm")), bytes)?;
        }
        let config_path = dir.path().join("wasmroute.toml");
        std::fs::write(&config_path, demo_config(address, &backends))?;
        let server = Server::start(&config_path).await?;
        let bound = |name: &str| {
            server
                .listener_addr(name)
                .ok_or_else(|| anyhow::anyhow!("the demo listener `{name}` did not start"))
        };
        let (address, tcp_address) = (bound("edge")?, bound("tcp")?);
        Ok(Demo {
            server,
            address,
            tcp_address,
            dir: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// What to try, for the terminal.
    pub fn instructions(&self) -> String {
        let a = self.address;
        let t = self.tcp_address;
        let d = self.dir.display();
        format!(
            "wasmroute demo: listening on http://{a}\n\
             policy `content-router`: /video... -> pool video (video-1), everything else -> pool web (web-1, web-2)\n\
             try:\n  curl http://{a}/            # web-1 and web-2 take turns by least-active\n  \
             curl http://{a}/video/intro  # video-1\n  \
             curl http://{t}/            # layer 4: a TCP listener, shared-round-robin per connection over web-1, web-2\n\
             config: {d}/wasmroute.toml (watched; edit `policy` to \"round-robin\" to switch)\n\
             policies: {d}/policies/ (watched; drop a .wasm here)\n\
             Ctrl-C stops."
        )
    }
}

fn demo_config(address: SocketAddr, backends: &[(&str, SocketAddr)]) -> String {
    let pool = |name: &str| {
        let list: Vec<String> = backends
            .iter()
            .filter(|(pool, _)| *pool == name)
            .map(|(_, addr)| format!("{{ address = \"{addr}\" }}"))
            .collect();
        format!(
            "[[pools]]\nname = \"{name}\"\nbackends = [{}]\n",
            list.join(", ")
        )
    };
    format!(
        "[policies]\ndir = \"policies\"\n\n\
         [[listeners]]\nname = \"edge\"\naddress = \"{address}\"\npolicy = \"content-router\"\n\
         pools = [\"web\", \"video\"]\non_error = \"fallback\"\n\n\
         [[listeners]]\nname = \"tcp\"\naddress = \"{ip}:0\"\nprotocol = \"tcp\"\n\
         policy = \"shared-round-robin\"\npools = [\"web\"]\n\n{}\n{}",
        pool("web"),
        pool("video"),
        ip = address.ip(),
    )
}

/// A tiny HTTP backend answering `hello from <name>`.
async fn spawn_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    // The listeners' default queue: a burst the proxy accepts is not
    // refused one hop further.
    let socket = crate::listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 4096)?;
    let address = socket.local_addr()?;
    let body = Bytes::from(format!("hello from {name}\n"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let body = body.clone();
            let service = service_fn(move |_request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// `GET /` on a new connection to `address`; the whole answer.
    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_routes_by_path_and_balances_tcp_connections() {
        let demo = Demo::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        assert!(
            get(demo.address, "/video/intro")
                .await
                .ends_with("hello from video-1\n")
        );
        let mut seen = Vec::new();
        for _ in 0..2 {
            let answer = get(demo.tcp_address, "/").await;
            seen.push(answer.lines().last().unwrap_or_default().to_owned());
        }
        seen.sort();
        assert_eq!(
            seen,
            ["hello from web-1", "hello from web-2"],
            "one turn each"
        );
        let text = demo.instructions();
        assert!(text.contains(&demo.tcp_address.to_string()), "{text}");
        demo.server.shutdown().await;
    }
}
