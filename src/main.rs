//! The `ferroserve` command: serve the backends and endpoints of a YAML app file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferroserve::{AppConfig, Registry, Serve};
use tracing_subscriber::EnvFilter;

/// Serve models and code behind HTTP and handles, from a YAML app file.
#[derive(Parser, Debug)]
#[command(name = "ferroserve", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve an app file until SIGINT or SIGTERM.
    Run {
        /// The YAML app file.
        config: PathBuf,
        /// Host to listen on (overrides `http.host`).
        #[arg(long, env = "FERROSERVE_HOST")]
        host: Option<String>,
        /// Port to listen on (overrides `http.port`; 0 picks a free port).
        #[arg(long, env = "FERROSERVE_PORT")]
        port: Option<u16>,
    },
    /// Check an app file as `run` would before starting anything, and exit: 0 when valid,
    /// 1 with the error otherwise. Imports each Python backend's module in a short-lived
    /// interpreter.
    Check {
        /// The YAML app file.
        config: PathBuf,
        /// Do not import the Python backends' modules.
        #[arg(long)]
        no_import: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERROSERVE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Check { config, no_import } => match AppConfig::load(&config, &Registry::new())
            .and_then(|app| {
                ferroserve::check_app(&app, &Registry::new(), !no_import)?;
                Ok(app)
            }) {
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
        },
        Command::Run { config, host, port } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config, host, port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: PathBuf, host: Option<String>, port: Option<u16>) -> anyhow::Result<()> {
    let mut app = AppConfig::load(&config, &Registry::new())?;
    if let Some(host) = host {
        app.http.host = host;
    }
    if let Some(port) = port {
        app.http.port = port;
    }
    let serve = Serve::start(app.http.clone()).await?;
    if let Err(e) = serve.deploy(&app, &Registry::new()).await {
        serve.shutdown().await;
        return Err(e.into());
    }
    if let Some(addr) = serve.local_addr() {
        // Scripts and tests read the bound address from this line.
        println!("ferroserve listening on http://{addr}");
        tracing::info!(
            "serving {} endpoints from {} on http://{addr} (GET /-/routes lists them)",
            app.spec.endpoints.len(),
            config.display()
        );
    }
    ferroserve::shutdown_signal().await;
    tracing::info!("shutting down: finishing the requests in flight");
    serve.shutdown().await;
    Ok(())
}
