//! Dynamic batching against the real server: requests of one method gathered per replica,
//! one batch call, answers handed back in order — over HTTP and through handles alike.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, Methods, Request, Response,
};
use futures_util::future::join_all;

use common::{base_url, client, handle_text, serve, serve_backend_as};

/// Doubles numbers, a batch at a time; records each batch's size.
struct Doubler {
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Doubler {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        Ok(Response::text(format!("single {}", req.text()?)))
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "single"])
    }

    fn batch_methods(&self) -> Methods {
        Methods::only(["__call__"])
    }

    async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        self.sizes
            .lock()
            .map_err(|_| BackendError::msg("poisoned"))?
            .push(requests.len());
        let numbers: Vec<i64> = requests
            .iter()
            .map(Request::json::<i64>)
            .collect::<Result<_, _>>()?;
        if numbers.contains(&-1) {
            return Err(BackendError::msg("negative input in batch"));
        }
        if numbers.contains(&-3) {
            return Err(BackendError::msg("out of range")
                .with_status(http::StatusCode::UNPROCESSABLE_ENTITY));
        }
        if numbers.contains(&-2) {
            // A wrong-length answer fails the whole batch.
            return Ok(vec![Response::from("only one")]);
        }
        Ok(numbers
            .iter()
            .map(|n| Response::text((n * 2).to_string()))
            .collect())
    }
}

async fn doubler(config: BackendConfig) -> (ferroserve::Serve, Arc<Mutex<Vec<usize>>>) {
    let serve = serve().await;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let factory = BackendFactory::new(move |_| {
        Ok(Doubler {
            sizes: seen.clone(),
        })
    });
    serve_backend_as(
        &serve,
        "double",
        "doubler",
        factory,
        config,
        "/double",
        &[http::Method::POST],
    )
    .await;
    (serve, sizes)
}

#[tokio::test]
async fn handles_are_batched_and_answered_in_order() {
    let config = BackendConfig::default()
        .max_batch_size(8)
        .batch_wait_timeout_ms(200);
    let (serve, sizes) = doubler(config).await;
    let handle = serve.get_handle("double").expect("handle");
    let started = Instant::now();
    let refs: Vec<_> = (0..16).map(|i| handle.remote(i)).collect();
    let answers = join_all(refs).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            answer.expect("answer").body_text().expect("text"),
            (i * 2).to_string()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "full batches do not wait for the timeout"
    );
    let sizes = sizes.lock().expect("lock").clone();
    assert_eq!(sizes, [8, 8], "16 requests in two full batches");

    // A method that is not a batch method runs alone.
    let single = handle_text(&handle.method("single"), "x").await;
    assert_eq!(single, "single x");
    serve.shutdown().await;
}

#[tokio::test]
async fn http_requests_are_batched_too() {
    let config = BackendConfig::default()
        .max_batch_size(4)
        .batch_wait_timeout_ms(100);
    let (serve, sizes) = doubler(config).await;
    let url = format!("{}/double", base_url(&serve));
    let http = client();
    let calls = (0..8).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(url)
                .body(i.to_string())
                .send()
                .await?
                .text()
                .await
        }
    });
    let answers = join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("answer"), (i * 2).to_string());
    }
    let sizes = sizes.lock().expect("lock").clone();
    assert_eq!(sizes.iter().sum::<usize>(), 8);
    assert!(sizes.iter().all(|&s| s <= 4), "{sizes:?}");
    assert!(sizes.len() < 8, "requests were gathered: {sizes:?}");
    serve.shutdown().await;
}

#[tokio::test]
async fn a_partial_batch_runs_when_the_oldest_times_out() {
    let config = BackendConfig::default()
        .max_batch_size(100)
        .batch_wait_timeout_ms(100);
    let (serve, sizes) = doubler(config).await;
    let handle = serve.get_handle("double").expect("handle");
    let started = Instant::now();
    let answer = handle_text(&handle, 21).await;
    let waited = started.elapsed();
    assert_eq!(answer, "42");
    assert!(
        waited >= Duration::from_millis(90),
        "waited for others: {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(*sizes.lock().expect("lock"), [1]);
    serve.shutdown().await;
}

#[tokio::test]
async fn zero_timeout_runs_what_is_queued_now() {
    let config = BackendConfig::default().max_batch_size(100);
    let (serve, _sizes) = doubler(config).await;
    let handle = serve.get_handle("double").expect("handle");
    let started = Instant::now();
    assert_eq!(handle_text(&handle, 5).await, "10");
    assert!(started.elapsed() < Duration::from_millis(50));
    serve.shutdown().await;
}

#[tokio::test]
async fn each_caller_of_a_failed_batch_gets_the_users_status_and_one_prefix() {
    let config = BackendConfig::default()
        .max_batch_size(3)
        .batch_wait_timeout_ms(300);
    let (serve, _sizes) = doubler(config).await;
    let http = client();
    let url = format!("{}/double", base_url(&serve));
    let answers = join_all(["1", "-3", "2"].map(|n| http.post(&url).body(n).send())).await;
    for answer in answers {
        let r = answer.expect("an answer");
        assert_eq!(r.status(), 422);
        let body = r.text().await.expect("body");
        assert!(
            body.starts_with("backend `doubler` (replica `doubler#1`) failed: batch method `__call__` failed for a batch of 3: out of range"),
            "{body}"
        );
        assert_eq!(body.matches("failed:").count(), 1, "{body}");
    }
    serve.shutdown().await;
}

#[tokio::test]
async fn a_failing_batch_fails_its_requests_and_nothing_else() {
    let config = BackendConfig::default()
        .max_batch_size(3)
        .batch_wait_timeout_ms(300);
    let (serve, _sizes) = doubler(config).await;
    let handle = serve.get_handle("double").expect("handle");
    // One batch of three with a bad input: all three fail.
    let answers = join_all([handle.remote(1), handle.remote(-1), handle.remote(3)]).await;
    for answer in answers {
        let err = answer.expect_err("the batch failed");
        assert!(err.to_string().contains("negative input in batch"), "{err}");
    }
    // A wrong-length answer fails every request of its batch, with a clear message.
    let answers = join_all([handle.remote(1), handle.remote(-2), handle.remote(3)]).await;
    for answer in answers {
        let err = answer.expect_err("wrong length");
        assert!(
            err.to_string()
                .contains("answered 1 results for a batch of 3"),
            "{err}"
        );
    }
    // The next batch is fine.
    let answers = join_all([handle.remote(1), handle.remote(2), handle.remote(3)]).await;
    let texts: Vec<String> = answers
        .into_iter()
        .map(|a| a.expect("answer").body_text().expect("text"))
        .collect();
    assert_eq!(texts, ["2", "4", "6"]);
    serve.shutdown().await;
}

#[tokio::test]
async fn a_cap_that_keeps_batches_small_is_refused() {
    let serve = serve().await;
    let factory = BackendFactory::new(|_| {
        Ok(Doubler {
            sizes: Arc::default(),
        })
    });
    let err = serve
        .create_backend(
            "d",
            factory,
            BackendConfig::default()
                .max_batch_size(16)
                .max_concurrent_queries(4),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("below max_batch_size"), "{err}");
    serve.shutdown().await;
}
