//! Ferroserve serving the no-op Rust backend (or the batch-friendly model) on `/noop`, for the load benchmark.

use clap::Parser;
use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, HttpOptions, Serve};
use ferroserve_bench::{BatchFriendly, Noop};

/// Ferroserve with a no-op Rust backend on /noop.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Replicas of the backend.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Serve the batch-friendly model instead of the no-op backend.
    #[arg(long)]
    batch_friendly: bool,
    /// Batch the batch-friendly model's requests, up to this many per call.
    #[arg(long)]
    max_batch_size: Option<usize>,
    /// How long a request waits for its batch to fill, in milliseconds.
    #[arg(long, default_value_t = 0)]
    batch_wait_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let serve = Serve::start(HttpOptions::new("127.0.0.1", args.port)).await?;
    let mut config = BackendConfig::default()
        .num_replicas(args.replicas)
        .batch_wait_timeout_ms(args.batch_wait_timeout_ms);
    config.max_batch_size = args.max_batch_size;
    let factory = if args.batch_friendly {
        BackendFactory::new(|_| Ok(BatchFriendly))
    } else {
        BackendFactory::new(|_| Ok(Noop))
    };
    serve.create_backend("noop", factory, config).await?;
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
