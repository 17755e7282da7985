//! FAQ: "How do ServeHandle and ServeRequest work?" — the same backend code reads headers,
//! JSON, forms, query parameters and bodies whether the request came over HTTP or through a
//! handle; a handle can pass any Rust value, which arrives untouched; the request tells its
//! origin; and an HTTP request forwarded to another endpoint's handle arrives as itself.

mod support;

use std::sync::OnceLock;

use ferroserve::{
    Arg, Backend, BackendConfig, BackendError, BackendFactory, CallOptions, EndpointConfig, Handle,
    Methods, Origin, Request, Response,
};
use http::Method;
use serde_json::{Value, json};

/// Answers what it read; `method_name` says what to read.
struct Model;

impl Backend for Model {
    async fn call(&self, request: Request) -> Result<Response, BackendError> {
        // The FAQ's isinstance check.
        let origin = match request.origin() {
            Origin::Http => "web",
            Origin::Handle => "code",
        };
        let read = match request.method_name() {
            "headers" => json!(request.header("x-user")),
            "json" => request.json::<Value>()?,
            "form" => json!(request.form().await?.fields()),
            "query" => json!(request.query_param("a")),
            "rust" => json!(request.value::<[f32; 3]>().map(|t| t.iter().sum::<f32>())),
            _ => json!(request.text()?),
        };
        Response::json(&json!({"origin": origin, "read": read}))
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "headers", "json", "form", "query", "rust"])
    }
}

/// Forwards the web request it got to the `model` endpoint, unchanged.
struct Gateway {
    model: OnceLock<Handle>,
}

impl Backend for Gateway {
    async fn call(&self, request: Request) -> Result<Response, BackendError> {
        let model = self
            .model
            .get()
            .ok_or_else(|| BackendError::msg("no model handle"))?;
        Ok(model.method("headers").remote(request).await?)
    }
}

#[tokio::main]
async fn main() -> Result<(), support::Failure> {
    let args = support::args();
    let (serve, base) = support::start(&args).await?;
    serve
        .create_backend(
            "model",
            BackendFactory::new(|_| Ok(Model)),
            BackendConfig::default(),
        )
        .await?;
    let methods = [Method::GET, Method::POST];
    serve
        .create_endpoint(
            "model",
            EndpointConfig::backend("model")
                .route("/model")
                .methods(methods.clone()),
        )
        .await?;
    let model = serve.get_handle("model")?;
    let for_gateway = model.clone();
    let gateway = BackendFactory::new(move |_| {
        let handle = OnceLock::new();
        let _ = handle.set(for_gateway.clone());
        Ok(Gateway { model: handle })
    });
    serve
        .create_backend("gateway", gateway, BackendConfig::default())
        .await?;
    serve
        .create_endpoint(
            "gateway",
            EndpointConfig::backend("gateway").route("/gateway"),
        )
        .await?;

    let http = reqwest::Client::new();
    let url = format!("{base}/model");
    let call = |method: &'static str| http.post(&url).header("X-SERVE-CALL-METHOD", method);
    let web = |r: reqwest::RequestBuilder| async move { r.send().await?.json::<Value>().await };
    let code = |method: &'static str, options: CallOptions, arg: Arg| {
        let handle = model.options(options.method_name(method));
        async move {
            handle
                .remote(arg)
                .await?
                .body_json::<Value>()
                .map_err(|e| e.to_string().into())
        }
    };
    type Answer = Result<Value, Box<dyn std::error::Error>>;

    let rows: Vec<(&str, Value, Answer)> = vec![
        (
            "headers={...}     | http_options headers",
            web(call("headers").header("x-user", "ada")).await?,
            code(
                "headers",
                CallOptions::new().header("x-user", "ada"),
                ().into(),
            )
            .await,
        ),
        (
            "json={...}        | remote(json)",
            web(call("json").json(&json!({"a": 1}))).await?,
            code("json", CallOptions::new(), json!({"a": 1}).into()).await,
        ),
        (
            "form={...}        | remote(json object)",
            web(call("form").form(&[("a", "b")])).await?,
            code("form", CallOptions::new(), json!({"a": "b"}).into()).await,
        ),
        (
            "params={a: b}     | http_options query",
            web(http
                .post(format!("{url}?a=b"))
                .header("X-SERVE-CALL-METHOD", "query"))
            .await?,
            code("query", CallOptions::new().query_param("a", "b"), ().into()).await,
        ),
        (
            "data=long string  | remote(\"long string\")",
            web(http.post(&url).body("long string")).await?,
            code("__call__", CallOptions::new(), "long string".into()).await,
        ),
        (
            "(not over HTTP)   | remote(Rust value)",
            json!(null),
            code("rust", CallOptions::new(), Arg::value([1.0f32, 2.0, 3.5])).await,
        ),
    ];
    for (what, over_http, through_handle) in rows {
        println!("{what}: web {over_http} | code {}", through_handle?);
    }
    let forwarded = web(http
        .get(format!("{base}/gateway"))
        .header("x-user", "grace"))
    .await?;
    println!("forwarded web request: {forwarded}");
    support::finish(&args, serve).await;
    Ok(())
}
