//! Traffic splitting and shadow traffic: a canary takes 10 % of an endpoint's requests, a
//! shadow backend gets a copy of half of them (its answers and failures never reach
//! callers), `X-SERVE-SHARD-KEY` keeps a user on one backend, and the weights change while
//! serving. The same in YAML: `traffic: {v1: 0.9, v2: 0.1}` and `shadow: {v3: 0.5}`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferroserve::{
    BackendConfig, BackendError, BackendFactory, EndpointConfig, Request, Response, Traffic,
};

fn version(name: &'static str) -> BackendFactory {
    BackendFactory::function(move |_req: Request| async move { Ok(Response::from(name)) })
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    serve
        .create_backend("v1", version("v1"), BackendConfig::default())
        .await?;
    serve
        .create_backend("v2", version("v2"), BackendConfig::default())
        .await?;
    let shadowed = Arc::new(AtomicUsize::new(0));
    let seen = shadowed.clone();
    let broken = BackendFactory::function(move |_req: Request| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Err::<Response, _>(BackendError::msg("v3 is not ready for real traffic"))
        }
    });
    serve
        .create_backend("v3", broken, BackendConfig::default())
        .await?;
    let traffic = Traffic::new([("v1", 0.9), ("v2", 0.1)])?;
    serve
        .create_endpoint(
            "model",
            EndpointConfig::traffic(traffic)
                .route("/model")
                .shadow("v3", 0.5),
        )
        .await?;

    let http = reqwest::Client::new();
    let url = format!("{base}/model");
    let count = async |requests: usize,
                       key: Option<&str>|
           -> Result<BTreeMap<String, usize>, reqwest::Error> {
        let mut counts = BTreeMap::new();
        for _ in 0..requests {
            let mut request = http.get(&url);
            if let Some(key) = key {
                request = request.header("X-SERVE-SHARD-KEY", key);
            }
            *counts
                .entry(request.send().await?.text().await?)
                .or_default() += 1;
        }
        Ok(counts)
    };
    println!("90/10 split, 1000 requests: {:?}", count(1000, None).await?);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    println!(
        "shadow v3 got {} copies, and every caller got an answer",
        shadowed.load(Ordering::SeqCst)
    );
    println!(
        "shard key user-7, 20 requests: {:?}",
        count(20, Some("user-7")).await?
    );
    serve
        .set_traffic("model", Traffic::new([("v1", 0.0), ("v2", 1.0)])?)
        .await?;
    println!(
        "after set_traffic v2 = 1.0, 100 requests: {:?}",
        count(100, None).await?
    );
    support::finish(&args, serve).await;
    Ok(())
}
