//! What every example shares: `--port P` or `FERROSERVE_PORT` (default 8000, 0 for any free
//! port) and `--serve` (keep serving after the demo, for curl), the "listening on" line
//! scripts and tests read, and errors shown by their message.
#![allow(dead_code, unreachable_pub)]

use clap::Parser;
use ferroserve::{HttpOptions, Serve};

/// The example's command line (as the `ferroserve` binary takes its port).
#[derive(Parser, Debug)]
pub struct Args {
    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "FERROSERVE_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Keep serving after the demo, until ctrl-c.
    #[arg(long)]
    pub serve: bool,
}

/// The command line, or exit with clap's message (`--help` too).
pub fn args() -> Args {
    Args::parse()
}

/// What an example's `main` returns on failure: shown by its message (`main` returning an
/// `Err` prints it with `Debug`, which for Ferroserve's errors is their fields).
pub struct Failure(Box<dyn std::error::Error>);

impl<E: Into<Box<dyn std::error::Error>>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// Starts Ferroserve on 127.0.0.1 and the example's port.
pub async fn start(args: &Args) -> Result<(Serve, String), ferroserve::ServeError> {
    start_with(args, HttpOptions::new("127.0.0.1", args.port)).await
}

/// Starts Ferroserve with these HTTP options (host and port from the example's arguments).
pub async fn start_with(
    args: &Args,
    mut options: HttpOptions,
) -> Result<(Serve, String), ferroserve::ServeError> {
    options.port = args.port;
    let serve = Serve::start(options).await?;
    let addr = serve
        .local_addr()
        .ok_or_else(|| ferroserve::ServeError::Internal("no address".into()))?;
    println!("ferroserve listening on http://{addr}");
    Ok((serve, format!("http://{addr}")))
}

/// Keeps serving until ctrl-c when `--serve` was given, then shuts down.
pub async fn finish(args: &Args, serve: Serve) {
    if args.serve {
        println!("serving until ctrl-c");
        ferroserve::shutdown_signal().await;
    }
    serve.shutdown().await;
}
