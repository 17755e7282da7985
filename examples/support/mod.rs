//! What every example shares: `--port P` (default 8000) and `--serve` (keep serving after
//! the demo, for curl), and the "listening on" line scripts and tests read.
#![allow(dead_code, unreachable_pub)]

use ferroserve::{HttpOptions, Serve};

/// The example's command line.
pub struct Args {
    pub port: u16,
    pub serve: bool,
}

pub fn args() -> Args {
    let mut args = Args {
        port: 8000,
        serve: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => args.port = it.next().and_then(|p| p.parse().ok()).unwrap_or(8000),
            "--serve" => args.serve = true,
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    args
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
