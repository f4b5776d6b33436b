//! The `wasmroute` command line.
//!
//! ```text
//! wasmroute serve --config FILE   # run; SIGHUP reloads the config, SIGTERM drains,
//!                                 # SIGUSR1 reopens the access log
//! wasmroute check --config FILE   # validate config and policies; exit 1 with
//!                                 # "FILE: key: reason" lines on error
//! wasmroute demo                  # demo backends + proxy on 127.0.0.1:8080
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmroute::config::Config;
use wasmroute::policy::PolicyEngine;
use wasmroute::server::{Plan, Reusable};

#[derive(Parser)]
#[command(
    name = "wasmroute",
    version,
    about = "A proxy whose routing decisions are WebAssembly policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config and the policies it names, without serving.
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start demo backends and the proxy with the bundled policies.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        address: SocketAddr,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve { config, workers } => run(workers, serve(config)),
        Command::Check { config } => return check(&config),
        Command::Demo { address, workers } => run(workers, demo(address)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasmroute: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `main` on a tokio runtime: a single-threaded one for one worker
/// (no cross-thread wakeups), else a multi-threaded one.
fn run(
    workers: Option<usize>,
    main: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let workers = workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(main)
}

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    let server = wasmroute::Server::start(&config)
        .await
        .with_context(|| format!("starting from {}", config.display()))?;
    wait_for_signals(&server).await?;
    server.shutdown().await;
    Ok(())
}

/// Reloads on SIGHUP, reopens the access log on SIGUSR1; returns on
/// SIGTERM or SIGINT.
async fn wait_for_signals(server: &wasmroute::Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Err(error) = server.reload().await {
                    tracing::error!("SIGHUP reload refused:\n{error}");
                }
            }
            _ = user1.recv() => server.reopen_logs(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("draining");
    Ok(())
}

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let summary = format!(
        "{}: ok ({} listeners, {} pools)",
        path.display(),
        config.listeners.len(),
        config.pools.len()
    );
    let engine = match PolicyEngine::new() {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("wasmroute: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match Plan::build(config, &engine, Reusable::default()) {
        Ok(_) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn demo(address: SocketAddr) -> anyhow::Result<()> {
    let demo = wasmroute::demo::Demo::start(address)
        .await
        .with_context(|| format!("starting the demo on {address}"))?;
    println!("{}", demo.instructions());
    wait_for_signals(&demo.server).await?;
    demo.server.shutdown().await;
    Ok(())
}
