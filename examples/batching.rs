//! Batching: a backend declares which methods take a batch; a per-replica queue gathers up
//! to `max_batch_size` requests of that method, waiting at most `batch_wait_timeout_ms`,
//! calls the method once, and hands the answers back in order — to HTTP and handle
//! callers alike. (The FAQ: other methods are "compatible with batching as well".)

mod support;

use std::sync::{Arc, Mutex};

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Methods, Request,
    Response,
};
use futures_util::future::join_all;
use http::Method;

/// A model that scores a batch of inputs in one go, as a GPU model would.
struct Scorer {
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Scorer {
    async fn call(&self, _req: Request) -> Result<Response, BackendError> {
        Ok(Response::from("scorer v1"))
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "version"])
    }

    fn batch_methods(&self) -> Methods {
        Methods::only(["__call__"])
    }

    async fn call_batch(&self, requests: Vec<Request>) -> Result<Vec<Response>, BackendError> {
        self.batch_sizes
            .lock()
            .map_err(|_| BackendError::msg("poisoned"))?
            .push(requests.len());
        requests
            .iter()
            .map(|r| Ok(Response::text(format!("{:.1}", r.json::<f64>()? * 10.0))))
            .collect()
    }
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let factory = BackendFactory::new(move |_| {
        Ok(Scorer {
            batch_sizes: seen.clone(),
        })
    });
    let config = BackendConfig::default()
        .max_batch_size(8)
        .batch_wait_timeout_ms(50);
    serve.create_backend("scorer", factory, config).await?;
    serve
        .create_endpoint(
            "score",
            EndpointConfig::backend("scorer")
                .route("/score")
                .methods([Method::POST]),
        )
        .await?;

    let handle = serve.get_handle("score")?;
    let answers = join_all((0..16).map(|i| handle.remote(f64::from(i) / 10.0))).await;
    let mut texts = Vec::new();
    for answer in answers {
        texts.push(answer?.body_text()?);
    }
    println!("16 handle calls -> {texts:?}");

    let http = reqwest::Client::new();
    let calls = (0..8).map(|i| {
        let http = http.clone();
        let url = format!("{base}/score");
        async move {
            http.post(url)
                .body(format!("{i}"))
                .send()
                .await?
                .text()
                .await
        }
    });
    let texts: Vec<String> = join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("8 HTTP calls -> {texts:?}");
    println!("batch sizes: {:?}", sizes.lock().map_err(|_| "poisoned")?);
    println!(
        "a method that is not a batch method: {}",
        handle.method("version").remote(()).await?.body_text()?
    );
    support::finish(&args, serve).await;
    Ok(())
}
