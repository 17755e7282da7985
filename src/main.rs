//! The `ferroserve` command: serve an app file (`run`, `start`), check one (`check`), and operate a running server through its control API (`deploy`, `status`, `config`, `shutdown`).

mod client;
#[cfg(feature = "cluster")]
mod cluster;
mod models;
mod server;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferroserve::{AppConfig, Registry};
use tracing_subscriber::EnvFilter;

/// Serve models and code behind HTTP and handles, from a YAML app file.
#[derive(Parser, Debug)]
#[command(name = "ferroserve", version, about)]
struct Cli {
    /// What to log, on stderr: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
    /// per-module directives (`info,ferroserve=debug`).
    #[arg(
        long,
        global = true,
        env = "FERROSERVE_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    log_level: String,
    /// Threads that serve HTTP and run the server (not the Python workers, which are
    /// processes of their own). The default is half the CPUs, at least 1: the proxy's
    /// share of a Python app's work is small, and on few cores a second thread costs
    /// more in wake-ups between threads than it gives (docs/BENCHMARKS.md, "One server
    /// thread").
    #[arg(
        long,
        global = true,
        env = "FERROSERVE_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve an app file until SIGINT or SIGTERM (start + deploy, in the foreground). SIGHUP
    /// reloads the file: the change is deployed, and a bad file is logged while the old app
    /// keeps serving.
    #[command(
        after_help = "Examples:\n  ferroserve run examples/hello.yaml --port 8000\n  ferroserve run --models models/ --poll-models"
    )]
    Run {
        /// The YAML app file (optional with `--models`).
        config: Option<PathBuf>,
        #[command(flatten)]
        models: models::ModelArgs,
        #[command(flatten)]
        server: server::ServerArgs,
    },
    /// Start a server that keeps running, with the control API; deploy apps to it with
    /// `ferroserve deploy`. With a file, it is deployed at start; with `--state-dir`, the
    /// app saved there (the last one deployed) is served again after a restart or crash.
    #[command(
        after_help = "Example:\n  ferroserve start --state-dir /var/lib/ferroserve\n  ferroserve deploy app.yaml\n  ferroserve status"
    )]
    Start {
        /// An app file to deploy at start (the saved app wins if `--state-dir` has one).
        config: Option<PathBuf>,
        #[command(flatten)]
        server: server::ServerArgs,
    },
    /// Apply an app file to a running server and wait until every backend is HEALTHY, or
    /// one is DEPLOY_FAILED (exit 1 with why), showing each backend's replicas ready (bars
    /// on a terminal, a line per change otherwise). What changed is applied, the rest is
    /// left alone; backends and endpoints no longer in the file are removed.
    #[command(
        after_help = "Example:\n  ferroserve deploy app.yaml --address http://127.0.0.1:8265"
    )]
    Deploy {
        /// The YAML app file.
        config: PathBuf,
        /// Give up waiting after this many seconds (the deploy goes on).
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Print each backend's status and replicas, and each endpoint, as YAML (status words in
    /// colour on a terminal, unless NO_COLOR is set).
    #[command(after_help = "Example:\n  ferroserve status")]
    Status {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Print the deployed app.
    #[command(after_help = "Example:\n  ferroserve config > deployed.yaml")]
    Config {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Stop a running server: it finishes the requests in flight, then exits.
    #[command(after_help = "Example:\n  ferroserve shutdown")]
    Shutdown {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Check an app file as `run` would before starting anything, and exit: 0 when valid,
    /// 1 with the error otherwise. Imports each Python backend's module in a short-lived
    /// interpreter.
    #[command(after_help = "Example:\n  ferroserve check app.yaml")]
    Check {
        /// The YAML app file.
        config: PathBuf,
        /// Do not import the Python backends' modules.
        #[arg(long)]
        no_import: bool,
    },
}

/// A runtime for the command with `threads` worker threads (by default half the CPUs, at
/// least 1), or the error.
fn runtime(threads: Option<u16>) -> Result<tokio::runtime::Runtime, String> {
    let threads = threads.map_or_else(default_threads, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Half the CPUs this process may use, at least 1.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| (cpus.get() / 2).max(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "error: --log-level (or FERROSERVE_LOG) `{}` is not a level or filter: {e}",
                cli.log_level
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::Check { config, no_import } = &cli.command {
        return check(config, *no_import);
    }
    let runtime = match runtime(cli.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run {
                config,
                models,
                server,
            } => {
                if config.is_none() && models.models.is_none() {
                    return Err(anyhow::anyhow!(
                        "nothing to serve: give an app file, or a model repository with --models DIR"
                    ));
                }
                server::serve(config, models, server, true).await
            }
            Command::Start { config, server } => {
                server::serve(config, models::ModelArgs::default(), server, false).await
            }
            Command::Deploy {
                config,
                timeout_s,
                client,
            } => client::deploy(&client, &config, timeout_s).await,
            Command::Status { client } => client::status(&client).await,
            Command::Config { client } => client::config(&client).await,
            Command::Shutdown { client } => client::shutdown(&client).await,
            Command::Check { .. } => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &PathBuf, no_import: bool) -> ExitCode {
    let checked = AppConfig::load(config, &Registry::new()).and_then(|app| {
        ferroserve::check_app(&app, &Registry::new(), !no_import)?;
        Ok(app)
    });
    match checked {
        Ok(app) => {
            eprintln!(
                "{}: ok ({} backends, {} endpoints)",
                config.display(),
                app.spec.backends.len(),
                app.spec.endpoints.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
