//! The router against the real server: traffic weights, replica balance, the concurrency
//! cap, the bounded queue and load shedding — over HTTP and through handles alike.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use ferroserve::{BackendConfig, EndpointConfig, ErrorKind, ServeError, Traffic};
use http::StatusCode;
use serde_json::Value;

use common::{base_url, client, echo_backends, get_json, handle_json, serve, serve_sleeper};

#[tokio::test]
async fn traffic_follows_the_weights() {
    let serve = serve().await;
    echo_backends(&serve, &["v1", "v2"]).await;
    let traffic = Traffic::new([("v1", 0.8), ("v2", 0.2)]).expect("valid weights");
    serve
        .create_endpoint("split", EndpointConfig::traffic(traffic).route("/split"))
        .await
        .expect("endpoint");
    let url = format!("{}/split", base_url(&serve));
    let http = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let n = 2000;
    for _ in 0..n {
        let v = get_json(&http, &url).await;
        *counts
            .entry(v["backend"].as_str().expect("name").to_owned())
            .or_default() += 1;
    }
    let v2 = counts.get("v2").copied().unwrap_or(0) as f64 / f64::from(n);
    // 2000 draws at p = 0.2: the standard deviation is 0.009; allow 4 of them.
    assert!(
        (v2 - 0.2).abs() < 0.036,
        "v2 got {v2} of the traffic: {counts:?}"
    );

    // Handles take the same path: all traffic to v2 now.
    serve
        .set_traffic(
            "split",
            Traffic::new([("v1", 0.0), ("v2", 1.0)]).expect("valid"),
        )
        .await
        .expect("set_traffic");
    let handle = serve.get_handle("split").expect("handle");
    for _ in 0..50 {
        let v: Value = handle_json(&handle, ()).await;
        assert_eq!(v["backend"], "v2");
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn replicas_share_the_load_and_never_exceed_the_cap() {
    let serve = serve().await;
    let config = BackendConfig::default()
        .num_replicas(3)
        .max_concurrent_queries(2);
    let counter = serve_sleeper(&serve, config).await;
    let url = format!("{}/slow?ms=50", base_url(&serve));
    let http = client();
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await?.text().await })
        })
        .collect();
    let mut per_replica: HashMap<String, usize> = HashMap::new();
    for call in calls {
        let replica = call.await.expect("task").expect("answer");
        *per_replica.entry(replica).or_default() += 1;
    }
    assert_eq!(
        per_replica.len(),
        3,
        "all three replicas served: {per_replica:?}"
    );
    assert!(
        counter.peak() <= 6,
        "3 replicas × 2 = 6 at most, saw {}",
        counter.peak()
    );
    assert_eq!(counter.total(), 30, "queued requests all ran");
    serve.shutdown().await;
}

#[tokio::test]
async fn overload_sheds_with_503_and_retry_after() {
    let serve = serve().await;
    let config = BackendConfig::default()
        .max_concurrent_queries(1)
        .max_queued_requests(2);
    let counter = serve_sleeper(&serve, config).await;
    let url = format!("{}/slow?ms=400", base_url(&serve));
    let http = client();
    // One runs, two wait: the queue is full.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let shed = http.get(&url).send().await.expect("request");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "shed at once, not queued"
    );
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = shed.text().await.expect("body");
    assert!(
        body.contains("overloaded") && body.contains("`slow`"),
        "{body}"
    );

    // Through a handle the same overload is a typed error.
    let handle = serve.get_handle("slow").expect("handle");
    let err = handle.remote(400).await.expect_err("overloaded");
    assert_eq!(err.kind(), ErrorKind::Overload);
    assert!(matches!(err, ServeError::Overloaded { .. }), "{err:?}");

    for call in held {
        assert_eq!(call.await.expect("task").expect("answer"), StatusCode::OK);
    }
    assert_eq!(
        counter.peak(),
        1,
        "max_concurrent_queries: 1 runs one at a time"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn a_client_that_gives_up_frees_its_queue_place() {
    let serve = serve().await;
    let config = BackendConfig::default()
        .max_concurrent_queries(1)
        .max_queued_requests(1);
    serve_sleeper(&serve, config).await;
    let url = format!("{}/slow?ms=300", base_url(&serve));
    let running = tokio::spawn(client().get(url.clone()).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // This one queues, then gives up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    assert!(
        impatient.get(url.clone()).send().await.is_err(),
        "timed out while queued"
    );
    // Its place is free again: the next one queues instead of being shed.
    let next = client().get(url).send().await.expect("request");
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(
        running.await.expect("task").expect("answer").status(),
        StatusCode::OK
    );
    serve.shutdown().await;
}
