//! Requests that mirror HTTP whichever way they came: the same backend code reads headers,
//! query, JSON, forms and bodies from HTTP and from handles; Rust values pass through;
//! forwarded HTTP requests arrive unwrapped; methods are chosen by header or handle option.

mod common;

use ferroserve::{
    Arg, Backend, BackendConfig, BackendError, BackendFactory, CallOptions, Handle, Methods,
    Origin, Request, Response, Serve,
};
use http::Method;
use serde_json::{Value, json};

use common::{
    base_url, client, fetch_status, handle_json, multipart_form, serve, serve_backend,
    status_and_text,
};

/// Describes what it sees, the same way for every origin.
struct Mirror;

impl Backend for Mirror {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let origin = match req.origin() {
            Origin::Http => "http",
            Origin::Handle => "handle",
        };
        let body = match req.method_name() {
            "json" => req.json::<Value>()?,
            "form" => {
                let form = req.form().await?;
                let files: Vec<Value> = form
                    .files()
                    .iter()
                    .map(
                        |f| json!({"name": f.name, "file_name": f.file_name, "size": f.data.len()}),
                    )
                    .collect();
                json!({"fields": form.fields(), "files": files})
            }
            "value" => match req.value::<Vec<u32>>() {
                Some(v) => json!({"rust value": v}),
                None => json!("not a Vec<u32>"),
            },
            _ => Value::from(req.text()?),
        };
        Response::json(&json!({
            "origin": origin,
            "http_method": req.http_method().map(Method::as_str),
            "x_user": req.header("x-user"),
            "q": req.query_param("q"),
            "body": body,
        }))
    }

    fn methods(&self) -> Methods {
        Methods::only(["__call__", "json", "form", "value"])
    }
}

async fn mirror() -> (Serve, Handle) {
    let serve = serve().await;
    let factory = BackendFactory::new(|_| Ok(Mirror));
    let config = BackendConfig::default();
    let methods = [Method::GET, Method::POST];
    serve_backend(&serve, "mirror", factory, config, "/mirror", &methods).await;
    let handle = serve.get_handle("mirror").expect("handle");
    (serve, handle)
}

async fn http_json(request: reqwest::RequestBuilder) -> Value {
    let r = request.send().await.expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

#[tokio::test]
async fn http_and_handle_calls_read_the_same() {
    let (serve, handle) = mirror().await;
    let url = format!("{}/mirror?q=search", base_url(&serve));
    let http = client();

    // headers + query + JSON
    let over_http = http_json(
        http.post(&url)
            .header("x-user", "ada")
            .header("X-SERVE-CALL-METHOD", "json")
            .json(&json!({"a": 1})),
    )
    .await;
    let shaped = handle.options(
        CallOptions::new()
            .method_name("json")
            .http_method(Method::POST)
            .header("X-User", "ada")
            .query_param("q", "search"),
    );
    let through_handle: Value = handle_json(&shaped, json!({"a": 1})).await;
    assert_eq!(over_http["body"], json!({"a": 1}));
    for key in ["http_method", "x_user", "q", "body"] {
        assert_eq!(over_http[key], through_handle[key], "{key} differs");
    }
    assert_eq!(
        (
            over_http["origin"].as_str(),
            through_handle["origin"].as_str()
        ),
        (Some("http"), Some("handle"))
    );

    // a long string as the body: `requests.get(data=...)` ↔ `handle.remote("long string")`
    let over_http = http_json(http.post(&url).body("long string")).await;
    let through_handle: Value = handle_json(&handle, "long string").await;
    assert_eq!(over_http["body"], "long string");
    assert_eq!(through_handle["body"], "long string");
    assert_eq!(
        through_handle["http_method"],
        Value::Null,
        "a plain handle call is not HTTP-shaped"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn forms_url_encoded_multipart_and_from_handles() {
    let (serve, handle) = mirror().await;
    let url = format!("{}/mirror", base_url(&serve));
    let http = client();
    let encoded = http_json(
        http.post(&url)
            .header("X-SERVE-CALL-METHOD", "form")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=ada&lang=rust"),
    )
    .await;
    assert_eq!(
        encoded["body"]["fields"],
        json!([["name", "ada"], ["lang", "rust"]])
    );

    let form = http.post(&url).header("X-SERVE-CALL-METHOD", "form");
    let multi = http_json(multipart_form(
        form,
        ("name", "ada"),
        ("model", "weights.bin"),
    ))
    .await;
    assert_eq!(multi["body"]["fields"], json!([["name", "ada"]]));
    assert_eq!(
        multi["body"]["files"],
        json!([{"name": "model", "file_name": "weights.bin", "size": 10}])
    );

    let fields = json!({"name": "ada", "lang": "rust"});
    let from_handle: Value = handle_json(&handle.method("form"), fields).await;
    assert_eq!(
        from_handle["body"]["fields"],
        json!([["lang", "rust"], ["name", "ada"]])
    );

    let bad = fetch_status(
        http.post(&url)
            .header("X-SERVE-CALL-METHOD", "form")
            .header("content-type", "image/png")
            .body("x"),
    )
    .await;
    assert_eq!(bad, 415);
    serve.shutdown().await;
}

#[tokio::test]
async fn rust_values_pass_through_and_the_origin_tells() {
    let (serve, handle) = mirror().await;
    let v: Value = handle_json(&handle.method("value"), Arg::value(vec![1u32, 2, 3])).await;
    assert_eq!(v["body"], json!({"rust value": [1, 2, 3]}));
    assert_eq!(v["origin"], "handle");
    serve.shutdown().await;
}

/// Forwards the request it got to the `mirror` endpoint's handle.
struct Forwarder {
    mirror: std::sync::OnceLock<Handle>,
}

impl Backend for Forwarder {
    async fn call(&self, req: Request) -> Result<Response, BackendError> {
        let mirror = self
            .mirror
            .get()
            .ok_or_else(|| BackendError::msg("not wired yet"))?;
        Ok(mirror.remote(req).await?)
    }
}

#[tokio::test]
async fn a_forwarded_http_request_arrives_unwrapped() {
    let (serve, handle) = mirror().await;
    let slot = std::sync::Arc::new(std::sync::OnceLock::new());
    let _ = slot.set(handle);
    let wired = slot.clone();
    let factory = BackendFactory::new(move |_| {
        let mirror = std::sync::OnceLock::new();
        if let Some(h) = wired.get() {
            let _ = mirror.set(h.clone());
        }
        Ok(Forwarder { mirror })
    });
    let config = BackendConfig::default();
    serve_backend(&serve, "fwd", factory, config, "/fwd", &[Method::POST]).await;
    let v = http_json(
        client()
            .post(format!("{}/fwd?q=deep", base_url(&serve)))
            .header("x-user", "grace")
            .body("payload"),
    )
    .await;
    assert_eq!(
        v["origin"], "http",
        "the forwarded request keeps its HTTP origin"
    );
    assert_eq!(v["http_method"], "POST");
    assert_eq!(v["x_user"], "grace");
    assert_eq!(v["q"], "deep");
    assert_eq!(v["body"], "payload");
    serve.shutdown().await;
}

#[tokio::test]
async fn unknown_methods_are_a_clear_404_over_http() {
    let (serve, _handle) = mirror().await;
    let url = format!("{}/mirror", base_url(&serve));
    let call = client()
        .get(url)
        .header("X-SERVE-CALL-METHOD", "predict_proba");
    let (status, body) = status_and_text(call).await;
    assert_eq!(status, 404);
    assert!(
        body.contains("`mirror`") && body.contains("`predict_proba`"),
        "{body}"
    );
    serve.shutdown().await;
}
