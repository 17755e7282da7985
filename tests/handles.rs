//! Handles against the real runtime: eager dispatch, `wait`, Rust values, JSON and bytes,
//! typed errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferroserve::{
    Arg, Backend, BackendConfig, BackendError, BackendFactory, ErrorKind, Origin, Request,
    Response, Serve, ServeError, wait,
};
use serde_json::{Value, json};

use common::{Concurrency, handle_json, handle_text, serve_backend, serve_backend_as, sleeper};

#[tokio::test]
async fn get_handle_fails_for_unknown_endpoints() {
    let serve = Serve::without_http();
    let err = serve.get_handle("nope").err().expect("no such endpoint");
    assert!(matches!(err, ServeError::EndpointNotFound(ref name) if name == "nope"));
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn remote_dispatches_at_once_without_being_awaited() {
    let serve = Serve::without_http();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let factory = BackendFactory::function(move |_req| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(Response::from("done"))
        }
    });
    let config = BackendConfig::default();
    serve_backend_as(&serve, "e", "b", factory, config, None, &[]).await;
    let handle = serve.get_handle("e").expect("handle");
    let refs: Vec<_> = (0..5).map(|_| handle.remote(())).collect();
    // Nobody awaits the refs, yet the calls run.
    tokio::time::timeout(Duration::from_secs(5), async {
        while calls.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the calls ran without being awaited");
    for r in refs {
        assert_eq!(r.await.expect("answer").body_text().expect("text"), "done");
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn wait_returns_ready_and_pending_like_ray_wait() {
    let serve = Serve::without_http();
    let counter = Arc::new(Concurrency::default());
    let config = BackendConfig::default();
    serve_backend(&serve, "slow", sleeper(&counter), config, None, &[]).await;
    let handle = serve.get_handle("slow").expect("handle");
    let refs = vec![
        handle.remote(2000),
        handle.remote(10),
        handle.remote(20),
        handle.remote(2000),
    ];
    let started = std::time::Instant::now();
    let (ready, pending) = wait(refs, 2, Some(Duration::from_secs(1))).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "returned once two were ready"
    );
    assert_eq!((ready.len(), pending.len()), (2, 2));
    assert!(ready.iter().all(ferroserve::ResponseRef::is_ready));
    assert!(pending.iter().all(|r| !r.is_ready()));

    // A timeout returns what is ready so far.
    let started = std::time::Instant::now();
    let (ready, pending) = wait(pending, 2, Some(Duration::from_millis(100))).await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!((ready.len(), pending.len()), (0, 2));

    // num_returns caps the ready list even when more are ready.
    let refs: Vec<_> = (0..3).map(|_| handle.remote(0)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ready, pending) = wait(refs, 1, None).await;
    assert_eq!((ready.len(), pending.len()), (1, 2));
    for r in ready {
        assert_eq!(
            r.await.expect("answer").body_text().expect("text"),
            "slow#1"
        );
    }
    serve.shutdown().await;
}

/// A backend that works on Rust values given by handles.
struct Summer;

#[derive(Debug, PartialEq)]
struct Tensor(Vec<f32>);

impl Backend for Summer {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        assert_eq!(req.origin(), Origin::Handle);
        match req.take_value::<Tensor>() {
            Ok(tensor) => Ok(Response::value(tensor.0.iter().sum::<f32>())),
            Err(req) => {
                let numbers: Vec<f32> = req.json()?;
                Response::json(&json!({"sum": numbers.iter().sum::<f32>()}))
            }
        }
    }
}

#[tokio::test]
async fn rust_values_pass_through_untouched_and_json_works_too() {
    let serve = Serve::without_http();
    let factory = BackendFactory::new(|_| Ok(Summer));
    serve_backend(&serve, "sum", factory, BackendConfig::default(), None, &[]).await;
    let handle = serve.get_handle("sum").expect("handle");
    let answer = handle
        .remote(Arg::value(Tensor(vec![1.0, 2.5])))
        .await
        .expect("answer");
    assert_eq!(answer.into_value::<f32>().ok(), Some(3.5));
    let answer: Value = handle_json(&handle, json!([1, 2, 3])).await;
    assert_eq!(answer, json!({"sum": 6.0}));
    let answer: Value = handle_json(&handle, b"[4, 5]".to_vec()).await;
    assert_eq!(answer, json!({"sum": 9.0}));
    serve.shutdown().await;
}

#[tokio::test]
async fn failures_are_typed_errors_through_handles() {
    let serve = Serve::without_http();
    let factory = BackendFactory::function(|req: Request| async move {
        match req.text()?.as_str() {
            "panic" => panic!("kaboom"),
            "fail" => Err(BackendError::msg("bad input")),
            _ => Ok(Response::from("ok")),
        }
    });
    let config = BackendConfig::default();
    serve_backend_as(&serve, "e", "b", factory, config, None, &[]).await;
    let handle = serve.get_handle("e").expect("handle");
    let err = handle.remote("fail").await.expect_err("fails");
    assert!(
        matches!(err, ServeError::Backend { ref message, .. } if message == "bad input"),
        "{err:?}"
    );
    let err = handle.remote("panic").await.expect_err("panics");
    assert!(
        matches!(err, ServeError::Panicked { ref message, .. } if message == "kaboom"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::ReplicaFailure);
    let err = handle
        .method("nope")
        .remote("x")
        .await
        .expect_err("no method");
    assert!(matches!(err, ServeError::MethodNotFound { .. }), "{err:?}");
    assert_eq!(handle_text(&handle, "x").await, "ok");

    serve.delete_endpoint("e").await.expect("deleted");
    let err = handle.remote("x").await.expect_err("the endpoint is gone");
    assert!(matches!(err, ServeError::EndpointNotFound(_)), "{err:?}");
    serve.shutdown().await;
}
