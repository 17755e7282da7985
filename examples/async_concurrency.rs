//! FAQ: "Can I use asyncio along with Ray Serve?" — yes: a backend whose method awaits
//! serves up to `max_concurrent_queries` requests at once on one replica; with
//! `max_concurrent_queries: 1` it serves one at a time (actor semantics).

mod support;

use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, EndpointConfig, Request, Response};
use futures_util::future::join_all;

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    // Waits on I/O (here: a timer) without holding a thread.
    let sleepy = || {
        BackendFactory::function(|_req: Request| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Response::from("done"))
        })
    };
    serve
        .create_backend("concurrent", sleepy(), BackendConfig::default())
        .await?;
    serve
        .create_backend(
            "actor",
            sleepy(),
            BackendConfig::default().max_concurrent_queries(1),
        )
        .await?;
    serve
        .create_endpoint(
            "concurrent",
            EndpointConfig::backend("concurrent").route("/concurrent"),
        )
        .await?;
    serve
        .create_endpoint("actor", EndpointConfig::backend("actor"))
        .await?;

    let http = reqwest::Client::new();
    let started = Instant::now();
    let answers = join_all((0..50).map(|_| http.get(format!("{base}/concurrent")).send())).await;
    let ok = answers
        .into_iter()
        .filter(|a| a.as_ref().is_ok_and(|r| r.status().is_success()))
        .count();
    println!(
        "50 requests of 100 ms on one replica: {ok} ok in {} ms",
        started.elapsed().as_millis()
    );

    let actor = serve.get_handle("actor")?;
    let started = Instant::now();
    let answers = join_all((0..5).map(|_| actor.remote(()))).await;
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    println!(
        "5 requests with max_concurrent_queries 1: {ok} ok in {} ms",
        started.elapsed().as_millis()
    );
    support::finish(&args, serve).await;
    Ok(())
}
