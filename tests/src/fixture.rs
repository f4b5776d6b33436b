//! A proxy running in-process over a temporary folder:
//! `<tmp>/wasmroute.toml` and `<tmp>/policies/*.wasm`.
//!
//! The fixture subscribes to the server's events right after start and
//! keeps the receiver, so every event after start is buffered: call
//! [`ProxyFixture::clear_events`] before triggering a change, then
//! [`ProxyFixture::await_event`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::broadcast::{self, error::RecvError};
use wasmroute::{Server, ServerEvent};

use crate::config::ConfigBuilder;

/// The config file name inside the fixture folder.
pub const CONFIG_FILE: &str = "wasmroute.toml";

/// A shipped policy's bytes (panics if the host does not bundle it).
pub fn bundled(name: &str) -> &'static [u8] {
    wasmroute::bundled::get(name).unwrap_or_else(|| panic!("no bundled policy {name:?}"))
}

/// The temporary folder, before (or without) a running server.
#[derive(Debug)]
pub struct FixtureDir {
    dir: tempfile::TempDir,
}

impl FixtureDir {
    /// A fresh folder with an empty `policies/`.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wasmroute-e2e").tempdir()?;
        std::fs::create_dir(dir.path().join("policies"))?;
        Ok(FixtureDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<tmp>/wasmroute.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// `<tmp>/policies`.
    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// `<tmp>/policies/<name>.wasm`.
    pub fn policy_path(&self, name: &str) -> PathBuf {
        self.policies_dir().join(format!("{name}.wasm"))
    }

    /// Writes a policy atomically: a temporary file (not `*.wasm`) in the
    /// same folder, then a rename over `<name>.wasm`.
    pub fn write_policy(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.policy_path(name);
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    /// Writes a policy in place (truncate, then write), like `cp` does.
    pub fn write_policy_in_place(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.policy_path(name);
        std::fs::write(&path, bytes).with_context(|| path.display().to_string())?;
        Ok(path)
    }

    /// Replaces the config file atomically (temporary file + rename).
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        write_atomically(&self.config_path(), text.as_bytes())
    }

    /// Rewrites the config file in place.
    pub fn write_config_in_place(&self, text: &str) -> anyhow::Result<()> {
        let path = self.config_path();
        std::fs::write(&path, text).with_context(|| path.display().to_string())
    }

    /// Starts the proxy on this folder's config.
    pub async fn start(self) -> anyhow::Result<ProxyFixture> {
        let server = tokio::time::timeout(crate::STEP, Server::start(self.config_path()))
            .await
            .map_err(|_| anyhow::anyhow!("Server::start took more than {:?}", crate::STEP))??;
        let events = server.events();
        Ok(ProxyFixture {
            dir: self,
            server: Some(server),
            events,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("path without a file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

/// A running proxy over a [`FixtureDir`].
pub struct ProxyFixture {
    dir: FixtureDir,
    server: Option<Server>,
    events: broadcast::Receiver<ServerEvent>,
}

impl ProxyFixture {
    /// Writes `policies` (name, bytes) and the config, then starts.
    pub async fn start(config: &ConfigBuilder, policies: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        Self::start_with_text(&config.render(), policies).await
    }

    /// The common proxy of a test: listener `edge` balancing `pool` (named
    /// `web`) with the shipped round-robin policy.
    pub async fn round_robin(pool: crate::PoolSpec) -> ProxyFixture {
        let config = ConfigBuilder::new()
            .listener(crate::ListenerSpec::new("edge", "round-robin", &["web"]))
            .pool(pool);
        Self::start(&config, &[("round-robin", bundled("round-robin"))])
            .await
            .expect("the proxy starts")
    }

    /// Like [`ProxyFixture::start`] with a literal config text.
    pub async fn start_with_text(config: &str, policies: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        let dir = FixtureDir::new()?;
        for (name, bytes) in policies {
            dir.write_policy(name, bytes)?;
        }
        dir.write_config(config)?;
        dir.start().await
    }

    /// The folder and its file helpers.
    pub fn dir(&self) -> &FixtureDir {
        &self.dir
    }

    /// The JSON line of `path` in the folder's `access.log` (for a config
    /// with `[access_log] path = "access.log"`, `format = "json"`); waits
    /// for it, at most [`crate::STEP`].
    pub async fn access_line(&self, path: &str) -> serde_json::Value {
        let file = self.dir.path().join("access.log");
        let find = || {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            text.lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
                .find(|entry| entry["path"] == path)
        };
        assert!(
            crate::eventually(crate::STEP, || find().is_some()).await,
            "no access log line for {path}"
        );
        find().unwrap()
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server already shut down")
    }

    /// The bound address of a listener (panics if unknown).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.server()
            .listener_addr(listener)
            .unwrap_or_else(|| panic!("no listener {listener:?}"))
    }

    /// `http://<listener addr><path>`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    /// See [`FixtureDir::write_policy`].
    pub fn write_policy(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        self.dir.write_policy(name, bytes)
    }

    /// See [`FixtureDir::write_policy_in_place`].
    pub fn write_policy_in_place(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        self.dir.write_policy_in_place(name, bytes)
    }

    /// Replaces the config file (atomically); does not ask for a reload.
    pub fn rewrite_config(&self, text: &str) -> anyhow::Result<()> {
        self.dir.write_config(text)
    }

    /// `Server::reload`, bounded by [`crate::STEP`].
    pub async fn reload(&self) -> anyhow::Result<()> {
        tokio::time::timeout(crate::STEP, self.server().reload())
            .await
            .map_err(|_| anyhow::anyhow!("reload took more than {:?}", crate::STEP))?
    }

    /// Drops every event buffered so far.
    pub fn clear_events(&mut self) {
        while !matches!(
            self.events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
    }

    /// Waits for the first event matching `pred`. The error lists every
    /// event seen meanwhile.
    pub async fn await_event(
        &mut self,
        mut pred: impl FnMut(&ServerEvent) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<ServerEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) if pred(&event) => return Ok(event),
                Ok(Ok(event)) => seen.push(format!("{event:?}")),
                Ok(Err(RecvError::Lagged(n))) => seen.push(format!("({n} events lost: lagged)")),
                Ok(Err(RecvError::Closed)) => {
                    anyhow::bail!("event channel closed; events seen: {seen:#?}")
                }
                Err(_) => {
                    anyhow::bail!("no matching event within {timeout:?}; events seen: {seen:#?}")
                }
            }
        }
    }

    /// Every event buffered right now (without waiting).
    pub fn pending_events(&mut self) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(event) => out.push(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return out,
            }
        }
    }

    /// Graceful shutdown, bounded by [`crate::STEP`].
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let server = self.server.take().expect("server already shut down");
        tokio::time::timeout(crate::STEP, server.shutdown())
            .await
            .map_err(|_| anyhow::anyhow!("shutdown took more than {:?}", crate::STEP))
    }
}
