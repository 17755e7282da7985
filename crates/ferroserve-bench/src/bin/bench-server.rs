//! Ferroserve serving the no-op Rust backend on `/noop`, for the load benchmark.

use clap::Parser;
use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, HttpOptions, Serve};
use ferroserve_bench::Noop;

/// Ferroserve with a no-op Rust backend on /noop.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Replicas of the no-op backend.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let serve = Serve::start(HttpOptions::new("127.0.0.1", args.port)).await?;
    let config = BackendConfig::default().num_replicas(args.replicas);
    serve
        .create_backend("noop", BackendFactory::new(|_| Ok(Noop)), config)
        .await?;
    serve
        .create_endpoint("noop", EndpointConfig::backend("noop").route("/noop"))
        .await?;
    if let Some(addr) = serve.local_addr() {
        ferroserve_bench::announce(addr);
    }
    ferroserve::shutdown_signal().await;
    serve.shutdown().await;
    Ok(())
}
