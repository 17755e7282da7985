//! Traffic splitting, shadow traffic and sticky shard keys against the real server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferroserve::{
    BackendConfig, BackendError, BackendFactory, CallOptions, EndpointConfig, Request, Response,
    ServeError, Traffic,
};
use serde_json::Value;

use common::{
    base_url, client, echo, echo_backends, fetch_json, handle_json, serve, serve_backend_as,
};

/// A shadow backend that counts its copies, is slow, and fails.
fn slow_failing_counter(count: &Arc<AtomicUsize>) -> BackendFactory {
    let count = count.clone();
    BackendFactory::function(move |_req: Request| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err::<Response, _>(BackendError::msg("the shadow model is broken"))
        }
    })
}

#[tokio::test]
async fn shadow_copies_never_reach_the_caller() {
    let serve = serve().await;
    let copies = Arc::new(AtomicUsize::new(0));
    serve
        .create_backend(
            "v1",
            echo(),
            BackendConfig::default().max_concurrent_queries(1),
        )
        .await
        .expect("v1");
    serve
        .create_backend(
            "v3",
            slow_failing_counter(&copies),
            BackendConfig::default(),
        )
        .await
        .expect("v3");
    serve
        .create_endpoint(
            "e",
            EndpointConfig::backend("v1").route("/e").shadow("v3", 1.0),
        )
        .await
        .expect("endpoint");
    let url = format!("{}/e", base_url(&serve));
    let http = client();
    let started = Instant::now();
    for _ in 0..10 {
        let r = http.get(&url).send().await.expect("request");
        assert_eq!(
            r.status(),
            200,
            "the shadow's failure never reaches the caller"
        );
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["backend"], "v1");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "10 calls took {:?}: the shadow's 300 ms never slowed them",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        copies.load(Ordering::SeqCst),
        10,
        "every request was copied"
    );
    // Handles take the same path.
    let handle = serve.get_handle("e").expect("handle");
    handle.remote("x").await.expect("answer");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(copies.load(Ordering::SeqCst), 11);
    serve.shutdown().await;
}

#[tokio::test]
async fn a_shadow_gets_its_share_and_can_be_changed_while_serving() {
    let serve = serve().await;
    let copies = Arc::new(AtomicUsize::new(0));
    let counted = copies.clone();
    let counter = BackendFactory::function(move |_req: Request| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Response::from("shadow"))
        }
    });
    serve
        .create_backend("v3", counter, BackendConfig::default())
        .await
        .expect("v3");
    let config = BackendConfig::default();
    serve_backend_as(&serve, "e", "v1", echo(), config, None, &[]).await;
    serve.shadow_traffic("e", "v3", 0.25).await.expect("shadow");
    let handle = serve.get_handle("e").expect("handle");
    for _ in 0..2000 {
        handle.remote(()).await.expect("answer");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let share = copies.load(Ordering::SeqCst) as f64 / 2000.0;
    assert!((share - 0.25).abs() < 0.05, "shadow got {share}");

    serve
        .shadow_traffic("e", "v3", 0.0)
        .await
        .expect("stop shadowing");
    let before = copies.load(Ordering::SeqCst);
    for _ in 0..100 {
        handle.remote(()).await.expect("answer");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        copies.load(Ordering::SeqCst),
        before,
        "no copies after proportion 0"
    );

    let err = serve
        .shadow_traffic("e", "v1", 0.5)
        .await
        .expect_err("primary cannot shadow");
    assert!(err.to_string().contains("cannot also shadow"), "{err}");
    let err = serve
        .shadow_traffic("e", "v3", 1.5)
        .await
        .expect_err("bad proportion");
    assert!(err.to_string().contains("between 0 and 1"), "{err}");
    let err = serve.delete_backend("v1").await.expect_err("in use");
    assert!(matches!(err, ServeError::Conflict(_)));
    serve.shutdown().await;
}

#[tokio::test]
async fn shard_keys_make_the_backend_choice_sticky() {
    let serve = serve().await;
    echo_backends(&serve, &["a", "b", "c"]).await;
    let traffic = Traffic::new([("a", 0.34), ("b", 0.33), ("c", 0.33)]).expect("weights");
    serve
        .create_endpoint("e", EndpointConfig::traffic(traffic).route("/e"))
        .await
        .expect("endpoint");
    let url = format!("{}/e", base_url(&serve));
    let http = client();
    let mut chosen: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for user in 0..20 {
            let key = format!("user-{user}");
            let v = fetch_json(http.get(&url).header("X-SERVE-SHARD-KEY", &key)).await;
            let backend = v["backend"].as_str().expect("name").to_owned();
            if round == 0 {
                chosen.insert(key, backend);
            } else {
                assert_eq!(chosen[&key], backend, "{key} moved backends");
            }
        }
    }
    let distinct: std::collections::HashSet<&String> = chosen.values().collect();
    assert!(distinct.len() > 1, "keys spread over backends: {chosen:?}");
    // A handle with the same key lands on the same backend as HTTP.
    let handle = serve
        .get_handle("e")
        .expect("handle")
        .options(CallOptions::new().shard_key("user-3"));
    let v: Value = handle_json(&handle, ()).await;
    assert_eq!(v["backend"], chosen["user-3"].as_str());
    serve.shutdown().await;
}

#[tokio::test]
async fn traffic_changes_are_validated() {
    let serve = serve().await;
    let config = BackendConfig::default();
    serve_backend_as(&serve, "e", "a", echo(), config, None, &[]).await;
    assert!(Traffic::new([("a", 0.7)]).is_err(), "weights must sum to 1");
    assert!(
        Traffic::new([("a", 1.2), ("b", -0.2)]).is_err(),
        "weights must be ≥ 0"
    );
    let err = serve
        .set_traffic(
            "e",
            Traffic::new([("a", 0.5), ("nope", 0.5)]).expect("valid weights"),
        )
        .await
        .expect_err("unknown backend");
    assert!(matches!(err, ServeError::BackendNotFound(_)), "{err}");
    let err = serve
        .set_traffic("nope", Traffic::single("a"))
        .await
        .expect_err("unknown endpoint");
    assert!(matches!(err, ServeError::EndpointNotFound(_)), "{err}");
    serve.shutdown().await;
}
