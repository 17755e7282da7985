//! FAQ: "How do I call a method on my replica besides `__call__`?" — the FAQ's
//! `StatefulProcessor`, with `other_method` called through the `X-SERVE-CALL-METHOD` header
//! and through a handle. Each replica keeps its own count.
//!
//! ```text
//! cargo run --example stateful_processor -- --serve
//! curl localhost:8000/counter                                                     # {"current":1}
//! curl -X POST -H 'X-SERVE-CALL-METHOD: other_method' -d 5 localhost:8000/counter # true
//! ```

mod support;

use std::sync::atomic::{AtomicI64, Ordering};

use ferroserve::{
    Backend, BackendConfig, BackendError, BackendFactory, EndpointConfig, Methods, Request,
    Response,
};
use http::{HeaderValue, Method};
use serde_json::json;

struct StatefulProcessor {
    count: AtomicI64,
    replica: String,
}

impl Backend for StatefulProcessor {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let answer = match req.method_name() {
            "other_method" => {
                let inc: i64 = req.json()?;
                self.count.fetch_add(inc, Ordering::SeqCst);
                Response::json(&true)?
            }
            _ => Response::json(&json!({"current": self.count.load(Ordering::SeqCst)}))?,
        };
        // Not part of the FAQ's answer: which replica answered, to show per-replica state.
        answer.try_with_header("x-replica", &self.replica)
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "other_method"])
    }
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    let factory = BackendFactory::new(|ctx| {
        Ok(StatefulProcessor {
            count: AtomicI64::new(1),
            replica: ctx.replica.clone(),
        })
    });
    serve
        .create_backend("counter", factory, BackendConfig::default().num_replicas(2))
        .await?;
    serve
        .create_endpoint(
            "counter",
            EndpointConfig::backend("counter")
                .route("/counter")
                .methods([Method::GET, Method::POST]),
        )
        .await?;

    let http = reqwest::Client::new();
    // Over HTTP: the header picks the method.
    let r = http
        .post(format!("{base}/counter"))
        .header("X-SERVE-CALL-METHOD", "other_method")
        .body("5")
        .send()
        .await?;
    let by = r
        .headers()
        .get("x-replica")
        .cloned()
        .unwrap_or(HeaderValue::from_static("?"));
    println!(
        "POST /counter, X-SERVE-CALL-METHOD: other_method, 5 -> {} (replica {by:?})",
        r.text().await?
    );

    // From code: the handle's method option.
    let handle = serve.get_handle("counter")?;
    let r = handle.method("other_method").remote(10).await?;
    println!(
        "handle.method(\"other_method\").remote(10) -> {}",
        r.body_text()?
    );

    // Each replica keeps its own count. Calls one after another mostly stay on the replica
    // used last (its caches are warm), so these 20 calls usually all meet the one that
    // took both increments (1 + 5 + 10). Calls that overlap spread over both.
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let r = handle.remote(()).await?;
        let replica = r
            .headers()
            .get("x-replica")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        counts.insert(replica, r.body_text()?);
    }
    for (replica, count) in &counts {
        println!("{replica}: {count}");
    }
    support::finish(&args, serve).await;
    Ok(())
}
