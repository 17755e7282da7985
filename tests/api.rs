//! The imperative Rust API: create, list, update and delete backends and endpoints while
//! serving, with no request lost during a change.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Request, Response,
    ServeError, Traffic,
};
use serde_json::{Value, json};

use common::{
    Concurrency, base_url, client, echo, echo_backends, fetch_status, get_json, handle_json,
    handle_text, serve, serve_backend, serve_backend_as, sleeper,
};

#[tokio::test]
async fn create_list_and_delete() {
    let serve = serve().await;
    serve
        .create_backend("a", echo(), BackendConfig::default().num_replicas(2))
        .await
        .expect("a");
    let err = serve
        .create_backend("a", echo(), BackendConfig::default())
        .await
        .expect_err("duplicate");
    assert!(matches!(err, ServeError::Conflict(_)), "{err}");
    let err = serve
        .create_backend("z", echo(), BackendConfig::default().num_replicas(0))
        .await
        .expect_err("zero replicas");
    assert!(err.to_string().contains("num_replicas"), "{err}");

    serve
        .create_endpoint("e", EndpointConfig::backend("a").route("/e"))
        .await
        .expect("e");
    let err = serve
        .create_endpoint("f", EndpointConfig::backend("a").route("/e"))
        .await
        .expect_err("route taken");
    assert!(
        err.to_string().contains("already served by endpoint `e`"),
        "{err}"
    );
    let err = serve
        .create_endpoint("g", EndpointConfig::backend("nope"))
        .await
        .expect_err("no backend");
    assert!(matches!(err, ServeError::BackendNotFound(_)), "{err}");

    assert_eq!(serve.list_backends().keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(serve.list_backends()["a"].num_replicas, 2);
    let endpoints = serve.list_endpoints();
    assert_eq!(endpoints["e"].route.as_deref(), Some("/e"));

    let err = serve.delete_backend("a").await.expect_err("in use");
    assert!(err.to_string().contains("used by endpoint(s) e"), "{err}");
    serve.delete_endpoint("e").await.expect("delete endpoint");
    let gone = fetch_status(client().get(format!("{}/e", base_url(&serve)))).await;
    assert_eq!(gone, 404);
    serve.delete_backend("a").await.expect("delete backend");
    assert!(serve.list_backends().is_empty() && serve.list_endpoints().is_empty());
    let err = serve.delete_backend("a").await.expect_err("already gone");
    assert!(matches!(err, ServeError::BackendNotFound(_)));
    serve.shutdown().await;
}

/// Runs GET `url` in a loop from `workers` tasks until `stop`; counts answers and failures.
fn load(
    url: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let http = client();
    let tasks = (0..workers)
        .map(|_| {
            let (http, url, stop, ok, failed) = (
                http.clone(),
                url.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("failed: {} {:?}", r.status(), r.text().await);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

#[tokio::test]
async fn scaling_replicas_under_load_fails_no_request() {
    let serve = serve().await;
    let counter = Arc::new(Concurrency::default());
    let config = BackendConfig::default().num_replicas(2);
    serve_backend_as(&serve, "e", "b", sleeper(&counter), config, "/e", &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(format!("{}/e?ms=2", base_url(&serve)), 16, stop.clone());

    let mut seen_replicas = std::collections::HashSet::new();
    for replicas in [4, 2, 4, 1, 3] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        serve
            .update_backend_config("b", BackendConfig::default().num_replicas(replicas))
            .await
            .expect("update");
        assert_eq!(serve.list_backends()["b"].num_replicas, replicas);
        // Also swap unrelated snapshots while serving.
        serve
            .create_endpoint("other", EndpointConfig::backend("b").route("/other"))
            .await
            .expect("create");
        serve.delete_endpoint("other").await.expect("delete");
        let handle = serve.get_handle("e").expect("handle");
        seen_replicas.insert(handle_text(&handle, 0).await);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the changes"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "the load ran: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        seen_replicas.len() > 1,
        "new replicas served: {seen_replicas:?}"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn traffic_changes_under_load_fail_no_request() {
    let serve = serve().await;
    echo_backends(&serve, &["v1", "v2"]).await;
    serve
        .create_endpoint("e", EndpointConfig::backend("v1").route("/e"))
        .await
        .expect("endpoint");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(format!("{}/e", base_url(&serve)), 8, stop.clone());
    for i in 0..=20 {
        let w = f64::from(i) / 20.0;
        serve
            .set_traffic(
                "e",
                Traffic::new([("v1", 1.0 - w), ("v2", w)]).expect("valid"),
            )
            .await
            .expect("set_traffic");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 50);
    let v = get_json(&client(), format!("{}/e", base_url(&serve))).await;
    assert_eq!(v["backend"], "v2", "all traffic went to v2 at the end");
    serve.shutdown().await;
}

/// Answers its `user_config` and `init_args`.
struct Configurable {
    init_args: Value,
    user_config: std::sync::Mutex<Value>,
}

impl Backend for Configurable {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        let user_config = self
            .user_config
            .lock()
            .map_err(|_| BackendError::msg("poisoned"))?
            .clone();
        Response::json(&json!({"init_args": self.init_args, "user_config": user_config}))
    }

    async fn reconfigure(&self, user_config: &Value) -> Result<(), BackendError> {
        if user_config.get("reject").is_some() {
            return Err(BackendError::msg("rejected"));
        }
        *self
            .user_config
            .lock()
            .map_err(|_| BackendError::msg("poisoned"))? = user_config.clone();
        Ok(())
    }
}

#[tokio::test]
async fn user_config_reaches_every_replica_at_start_and_on_change() {
    let serve = serve().await;
    let factory = BackendFactory::new(|ctx| {
        Ok(Configurable {
            init_args: ctx.init_args.clone(),
            user_config: std::sync::Mutex::new(Value::Null),
        })
    });
    let config = BackendConfig::default()
        .num_replicas(2)
        .init_args(json!({"model": "small"}))
        .user_config(json!({"threshold": 0.5}));
    serve_backend(&serve, "c", factory, config.clone(), None, &[]).await;
    let handle = serve.get_handle("c").expect("handle");
    let answers = |handle: ferroserve::Handle| async move {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(handle_json::<Value>(&handle, ()).await);
        }
        out
    };
    for v in answers(handle.clone()).await {
        assert_eq!(
            v,
            json!({"init_args": {"model": "small"}, "user_config": {"threshold": 0.5}})
        );
    }
    serve
        .update_backend_config("c", config.clone().user_config(json!({"threshold": 0.9})))
        .await
        .expect("update");
    for v in answers(handle.clone()).await {
        assert_eq!(v["user_config"], json!({"threshold": 0.9}));
    }
    let err = serve
        .update_backend_config("c", config.clone().user_config(json!({"reject": true})))
        .await
        .expect_err("reconfigure refuses");
    assert!(err.to_string().contains("rejected"), "{err}");
    serve
        .update_backend_config("c", config.init_args(json!({"model": "large"})))
        .await
        .expect("new init_args replace the replicas");
    for v in answers(handle).await {
        assert_eq!(v["init_args"], json!({"model": "large"}));
    }
    serve.shutdown().await;
}
