//! The `wasmroute` command line.
//!
//! ```text
//! wasmroute serve --config FILE   # run; SIGHUP reloads the config, SIGTERM drains,
//!                                 # SIGUSR1 reopens the access log
//! wasmroute serve --config FILE --upgrade
//!                                 # take over the sockets of the running instance
//! wasmroute check --config FILE   # validate config and policies; exit 1 with
//!                                 # "FILE: key: reason" lines on error
//! wasmroute demo                  # demo backends + proxy on 127.0.0.1:8080
//! wasmroute policy new NAME [--path DIR]
//!                                 # a standalone policy crate in DIR/NAME
//! wasmroute policy build [DIR]    # build it for wasm32-wasip2; prints the .wasm
//! wasmroute policy test MODULE.wasm --cases FILE [--config FILE --listener NAME]
//!                                 # replay cases; exit 0 all ok, 1 a case
//!                                 # failed, 2 invalid input
//! wasmroute --version             # version, git commit, WIT and wasmtime versions
//! ```
//!
//! Signals (docs/operations.md): SIGHUP reloads; the first SIGTERM or
//! SIGINT drains (up to `[server] drain_timeout`) and exits 0; a second one
//! exits at once with status 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmroute::config::Config;
use wasmroute::logging::LogFormat;
use wasmroute::policy::PolicyEngine;
use wasmroute::server::{Plan, Reusable};

/// jemalloc instead of glibc's malloc: glibc kept the memory of closed
/// connections (+18 MiB after 5,000 closed, measured with
/// `bench/idle-memory.py`); jemalloc's background thread gives it back
/// (configured in `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What `--version` prints.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ngit commit: ",
    env!("WASMROUTE_GIT_COMMIT"),
    "\nWIT package: wasmroute:policy@",
    env!("WASMROUTE_WIT_VERSION"),
    "\nwasmtime: ",
    env!("WASMROUTE_WASMTIME_VERSION"),
);

#[derive(Parser)]
#[command(
    name = "wasmroute",
    version = VERSION,
    about = "A proxy whose routing decisions are WebAssembly policies"
)]
struct Cli {
    /// How the process's own log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    /// One line per record: time, level, target, message, fields.
    Text,
    /// One JSON object per line.
    Json,
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
        /// Take over the listening sockets of the instance running with
        /// this config (its `[server] upgrade_socket`), then let it drain.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config and the policies it names, without serving.
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Write, build and test policies (see `wasmroute policy --help`).
    #[command(subcommand)]
    Policy(PolicyCommand),
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Create a standalone policy crate (its own workspace) in DIR/NAME.
    New {
        /// The crate name, also the module's (`NAME.wasm`).
        name: String,
        /// The folder to create it in (default: the current one).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Build the policy crate in DIR for wasm32-wasip2 and print the
    /// path of its `.wasm`.
    Build {
        /// The crate's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Replay the cases of a cases file through a module in the proxy's
    /// policy runtime: exit 0 when every case holds, 1 when one does not,
    /// 2 for an invalid cases file, config or module.
    Test {
        /// The module (a `.wasm` component).
        module: PathBuf,
        /// The cases file (TOML; see docs/operations.md).
        #[arg(long)]
        cases: PathBuf,
        /// A config whose listener gives the pools, `policy_config` and
        /// limits the cases file does not.
        #[arg(long)]
        config: Option<PathBuf>,
        /// That listener (optional when the config has only one).
        #[arg(long, requires = "config")]
        listener: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    wasmroute::logging::init(match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let result = match cli.command {
        Command::Serve {
            config,
            workers,
            upgrade,
        } => run(workers, serve(config, upgrade)),
        Command::Check { config } => return check(&config),
        Command::Policy(command) => return policy(command),
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

async fn serve(config: PathBuf, upgrade: bool) -> anyhow::Result<()> {
    let server = if upgrade {
        wasmroute::Server::take_over(&config).await
    } else {
        wasmroute::Server::start(&config).await
    };
    let server = server.with_context(|| format!("starting from {}", config.display()))?;
    let mut signals = Signals::new()?;
    signals.wait_for_stop(&server).await;
    drain(server, signals).await;
    Ok(())
}

/// The signals `serve` and `demo` act on.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Reloads on SIGHUP, reopens the access log on SIGUSR1; returns on SIGTERM or SIGINT, or once a new
    /// instance has taken over (`serve --upgrade`).
    async fn wait_for_stop(&mut self, server: &wasmroute::Server) {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {
                    if let Err(error) = server.reload().await {
                        tracing::error!(%error, "SIGHUP reload refused; the previous config keeps serving");
                    }
                }
                _ = self.user1.recv() => {
                    server.reopen_logs();
                    tracing::info!("SIGUSR1: the access log is reopened before its next line");
                }
                _ = self.terminate.recv() => return tracing::info!("SIGTERM: draining"),
                _ = self.interrupt.recv() => return tracing::info!("SIGINT: draining"),
                () = server.handed_over() => return,
            }
        }
    }

    /// Completes on the next SIGTERM or SIGINT.
    async fn next_stop(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Drains `server`; a second SIGTERM or SIGINT meanwhile exits at once.
async fn drain(server: wasmroute::Server, mut signals: Signals) {
    tokio::select! {
        () = server.shutdown() => tracing::info!("drained; exiting"),
        () = signals.next_stop() => {
            tracing::warn!("second stop signal: exiting without waiting for in-flight requests");
            std::process::exit(1);
        }
    }
}

/// One line of `check`'s summary per listener: what it speaks, where,
/// and the policy and pools it serves.
fn listener_line(listener: &wasmroute::config::ListenerConfig) -> String {
    let protocol = match listener.protocol {
        wasmroute::config::Protocol::Http => "http",
        wasmroute::config::Protocol::Https => "https",
        wasmroute::config::Protocol::Tcp => "tcp",
    };
    let shadow = listener.shadow.as_ref().map_or_else(String::new, |s| {
        format!(", shadow `{}` (sample {})", s.policy, s.sample)
    });
    format!(
        "  listener `{}`: {protocol} on {}, policy `{}`{shadow}, pools [{}]",
        listener.name,
        listener.address,
        listener.policy,
        listener.pools.join(", ")
    )
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
        // A candidate that cannot be bound does not stop `serve` (its
        // listener serves without it), but `check` says so and fails.
        Ok(plan) if !plan.shadow_failures.is_empty() => {
            for error in &plan.shadow_failures {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
        Ok(plan) => {
            println!("{summary}");
            for listener in &plan.config.listeners {
                println!("{}", listener_line(listener));
            }
            report_names(&plan.config);
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

/// `check`: says which backend names do not resolve now (not an error:
/// the server starts such a pool without their backends and keeps asking).
fn report_names(config: &Config) {
    let mut discovery = wasmroute::dns::Discovery::default();
    let Some(round) = discovery.round(config) else {
        return;
    };
    let outcomes = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(round),
        Err(error) => {
            eprintln!("warning: cannot look the backend names up: {error}");
            return;
        }
    };
    for (name, outcome) in outcomes {
        match outcome {
            wasmroute::dns::Outcome::Addresses(addresses, _) => {
                let shown: Vec<String> = (addresses.iter())
                    .map(|a| {
                        if name.srv {
                            a.to_string()
                        } else {
                            a.ip().to_string()
                        }
                    })
                    .collect();
                println!("name {name}: {}", shown.join(", "));
            }
            wasmroute::dns::Outcome::Empty => {
                eprintln!("warning: name {name}: no address now (its backends join once it has)");
            }
            wasmroute::dns::Outcome::Failed(reason) => {
                eprintln!(
                    "warning: name {name}: does not resolve now ({reason}); the server keeps trying"
                );
            }
        }
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    use wasmroute::policy_cli;
    let result = match command {
        PolicyCommand::Test {
            module,
            cases,
            config,
            listener,
        } => {
            let args = policy_cli::TestArgs {
                module,
                cases,
                config,
                listener,
            };
            return ExitCode::from(policy_cli::test(&args).code());
        }
        PolicyCommand::New { name, path } => policy_cli::new(&name, path.as_deref()),
        PolicyCommand::Build { dir } => policy_cli::build(&dir),
    };
    match result {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wasmroute: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(address: SocketAddr) -> anyhow::Result<()> {
    let demo = wasmroute::demo::Demo::start(address)
        .await
        .with_context(|| format!("starting the demo on {address}"))?;
    println!("{}", demo.instructions());
    let mut signals = Signals::new()?;
    signals.wait_for_stop(&demo.server).await;
    drain(demo.server, signals).await;
    Ok(())
}
