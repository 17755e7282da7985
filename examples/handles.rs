//! FAQ: "How do I call an endpoint from Python code?" — from Rust: `get_handle`, then
//! `remote`, which dispatches at once and returns a `ResponseRef` to await, or to `wait` on
//! with a count and a timeout like `ray.wait`. Handles compose models: a backend can call
//! other endpoints through the same router as HTTP.

mod support;

use std::time::Duration;

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Handle, Request, Response,
};

/// A pipeline: tokenizes with one endpoint, then classifies with another.
struct Pipeline {
    tokenizer: Handle,
    classifier: Handle,
}

impl Backend for Pipeline {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let tokens = self.tokenizer.remote(req.text()?).await?;
        let label = self.classifier.remote(tokens.body_text()?).await?;
        Ok(Response::text(format!(
            "{} -> {}",
            tokens.body_text()?,
            label.body_text()?
        )))
    }
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    let tokenizer = BackendFactory::function(|req: Request| async move {
        Ok(Response::text(
            req.text()?.split_whitespace().collect::<Vec<_>>().join("|"),
        ))
    });
    let classifier = BackendFactory::function(|req: Request| async move {
        let text = req.text()?;
        tokio::time::sleep(Duration::from_millis(if text.contains("slow") {
            500
        } else {
            10
        }))
        .await;
        Ok(Response::from(if text.contains("good") {
            "positive"
        } else {
            "negative"
        }))
    });
    serve
        .create_backend("tokenizer", tokenizer, BackendConfig::default())
        .await?;
    serve
        .create_backend("classifier", classifier, BackendConfig::default())
        .await?;
    serve
        .create_endpoint("tokenize", EndpointConfig::backend("tokenizer"))
        .await?;
    serve
        .create_endpoint("classify", EndpointConfig::backend("classifier"))
        .await?;
    let (tokenizer, classifier) = (serve.get_handle("tokenize")?, serve.get_handle("classify")?);
    let pipeline = BackendFactory::new(move |_| {
        Ok(Pipeline {
            tokenizer: tokenizer.clone(),
            classifier: classifier.clone(),
        })
    });
    serve
        .create_backend("pipeline", pipeline, BackendConfig::default())
        .await?;
    serve
        .create_endpoint(
            "pipeline",
            EndpointConfig::backend("pipeline")
                .route("/pipeline")
                .methods([http::Method::POST]),
        )
        .await?;

    // `remote` dispatches at once; await the reference for the answer.
    let handle = serve.get_handle("classify")?;
    let one = handle.remote("a good day");
    println!("classify(\"a good day\") -> {}", one.await?.body_text()?);

    // `wait` like `ray.wait`: the first two ready within 300 ms, and the rest.
    let refs = vec![
        handle.remote("slow good"),
        handle.remote("fast good"),
        handle.remote("fast bad"),
    ];
    let (ready, pending) = ferroserve::wait(refs, 2, Some(Duration::from_millis(300))).await;
    println!(
        "wait(3 refs, num_returns=2, timeout=300ms) -> {} ready, {} pending",
        ready.len(),
        pending.len()
    );
    for r in ready {
        println!("  ready: {}", r.await?.body_text()?);
    }

    // Composition, over HTTP: the pipeline endpoint calls two others through handles.
    let answer = reqwest::Client::new()
        .post(format!("{base}/pipeline"))
        .body("a good model")
        .send()
        .await?;
    println!("POST /pipeline -> {}", answer.text().await?);

    // A missing endpoint is an error at get_handle.
    if let Err(e) = serve.get_handle("nope") {
        println!("get_handle(\"nope\") -> error: {e}");
    }
    support::finish(&args, serve).await;
    Ok(())
}
