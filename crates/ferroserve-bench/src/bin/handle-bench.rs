//! In-process handle calls to a no-op Rust backend: calls/s, p50 and p99, printed as JSON.

use std::time::{Duration, Instant};

use clap::Parser;
use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, Serve};
use ferroserve_bench::Noop;

/// Measures `handle.remote(()).await` from concurrent tasks.
#[derive(Parser)]
struct Args {
    /// Concurrent callers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to warm up first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let serve = Serve::without_http();
    let config = BackendConfig::default().max_concurrent_queries(args.concurrency.max(100));
    serve
        .create_backend("noop", BackendFactory::new(|_| Ok(Noop)), config)
        .await?;
    serve
        .create_endpoint("noop", EndpointConfig::backend("noop"))
        .await?;
    let handle = serve.get_handle("noop")?;

    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let measure_until = warm_until + Duration::from_secs_f64(args.duration);
    let callers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut latencies_ns: Vec<u64> = Vec::with_capacity(1 << 20);
                loop {
                    let start = Instant::now();
                    if start >= measure_until {
                        break;
                    }
                    let answer = handle.remote(()).await;
                    if answer.is_err() {
                        return Err(anyhow::anyhow!("a call failed: {answer:?}"));
                    }
                    if start >= warm_until {
                        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        latencies_ns.push(ns);
                    }
                }
                Ok(latencies_ns)
            })
        })
        .collect();
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await??);
    }
    all.sort_unstable();
    let at = |q: f64| {
        let i = ((all.len() as f64 - 1.0) * q).round() as usize;
        all.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let report = serde_json::json!({
        "requests_per_sec": all.len() as f64 / args.duration,
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "calls": all.len(),
    });
    println!("{report}");
    serve.shutdown().await;
    Ok(())
}
