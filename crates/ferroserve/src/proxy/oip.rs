//! The Open Inference Protocol v2 (KServe v2, Triton's HTTP API) on the proxy port: server health and metadata, and each endpoint as a model by its name — its readiness, its metadata (asked of its backend), and inference through the same router as HTTP.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::body::{self, BodyRules};
use super::convert::{self, PlainBody};
use crate::layer::BoxError;
use crate::request::{HttpParts, Request};
use crate::router::{self, EndpointState, SnapshotCell};

/// The protocol's paths: `/v2` and under it.
pub(crate) fn is_oip(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

use crate::replica::METADATA_METHOD;

/// Answers one request under `/v2`.
pub(super) async fn handle<B>(
    cell: &SnapshotCell,
    rules: BodyRules,
    req: http::Request<B>,
) -> http::Response<PlainBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path
        .trim_start_matches("/v2")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // `/versions/V` names a version; each model serves one, and its backend refuses others.
    let (model, version, rest) = match segments.as_slice() {
        ["models", name, "versions", version, rest @ ..] => (Some(*name), Some(*version), rest),
        ["models", name, rest @ ..] => (Some(*name), None, rest),
        _ => (None, None, &segments[..]),
    };
    let snapshot = cell.load_full();
    let Some(name) = model else {
        return match (req.method(), rest) {
            (&Method::GET, []) => answer(
                StatusCode::OK,
                &json!({ "name": "ferroserve", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }),
            ),
            (&Method::GET, ["health", "live"]) => answer(StatusCode::OK, &json!({ "live": true })),
            (&Method::GET, ["health", "ready"]) => {
                let ready = !snapshot.held && router::not_ready(&snapshot).is_empty();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                };
                answer(status, &json!({ "ready": ready }))
            }
            _ => not_found(&path),
        };
    };
    let Some(endpoint) = snapshot.endpoints.get(name) else {
        return answer(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no model `{name}`: each endpoint is a model, by its name") }),
        );
    };
    match (req.method(), rest) {
        (&Method::GET, ["ready"]) => {
            // A named version is ready only if it is the one served: its backend says.
            let mut ready = ready(&snapshot, endpoint);
            if ready && version.is_some() {
                let (parts, _) = req.into_parts();
                let asked = Request::from_http(http_parts(parts), Bytes::new())
                    .with_method_name(METADATA_METHOD);
                ready = router::call(cell, endpoint, asked)
                    .await
                    .is_ok_and(|r| r.status().is_success());
            }
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            answer(status, &json!({ "name": name, "ready": ready }))
        }
        (&Method::GET, []) => {
            let (parts, _) = req.into_parts();
            let req = Request::from_http(http_parts(parts), Bytes::new())
                .with_method_name(METADATA_METHOD);
            json_errors(convert::into_http(router::call(cell, endpoint, req).await))
        }
        (&Method::POST, ["infer"]) => {
            let (parts, body) = req.into_parts();
            let limit = endpoint.config.max_body_bytes.unwrap_or(rules.max_bytes);
            let read = match body::check_declared(&parts.headers, limit) {
                Ok(()) => body::collect(body, limit, rules.idle).await,
                Err(too_large) => Err(too_large),
            };
            let body = match read {
                Ok(body) => body,
                Err(e) => return convert::plain(e.to_http()),
            };
            let started = std::time::Instant::now();
            let method = crate::metrics::method_index(&parts.method);
            // The backend sees the HTTP request: a binary one says in a header where its
            // JSON part ends, and the path may name a version.
            let req = Request::from_http(http_parts(parts), body);
            let response = json_errors(convert::into_http(router::call(cell, endpoint, req).await));
            endpoint
                .stats
                .answered(method, response.status().as_u16(), started.elapsed());
            response
        }
        (_, ["infer"]) => not_allowed(&path, "POST"),
        (_, ["ready"] | []) => not_allowed(&path, "GET"),
        _ => not_found(&path),
    }
}

/// A failed answer as the protocol writes errors, `{"error": "..."}`, when its backend (not
/// a model: "has no method `metadata`", say) answered in another form.
fn json_errors(response: http::Response<PlainBody>) -> http::Response<PlainBody> {
    let json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if response.status().is_success() || json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = body.into_whole().unwrap_or_default();
    let said = String::from_utf8_lossy(&text);
    answer(parts.status, &json!({ "error": said.trim() }))
}

/// The request's method, URI and headers, as a backend sees them.
fn http_parts(parts: http::request::Parts) -> HttpParts {
    HttpParts {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    }
}

/// Whether every backend with a share of `endpoint`'s traffic has a live replica.
fn ready(snapshot: &router::Snapshot, endpoint: &EndpointState) -> bool {
    !snapshot.held
        && endpoint
            .config
            .traffic
            .weights()
            .filter(|(_, weight)| *weight > 0.0)
            .all(|(backend, _)| {
                snapshot
                    .backends
                    .get(backend)
                    .is_some_and(|b| b.replicas.has_live())
            })
}

fn not_found(path: &str) -> http::Response<PlainBody> {
    answer(
        StatusCode::NOT_FOUND,
        &json!({ "error": format!("{path} is not an Open Inference Protocol v2 route (see docs/onnx.md)") }),
    )
}

/// A 405 naming the method `path` takes, in `Allow` too.
fn not_allowed(path: &str, allow: &'static str) -> http::Response<PlainBody> {
    let mut response = answer(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": format!("{path} takes {allow}") }),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

/// A JSON answer.
fn answer(status: StatusCode, value: &Value) -> http::Response<PlainBody> {
    let mut response = http::Response::new(PlainBody::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_v2_paths_are_the_protocols() {
        assert!(super::is_oip("/v2"));
        assert!(super::is_oip("/v2/models/m/infer"));
        assert!(!super::is_oip("/v20"));
        assert!(!super::is_oip("/v1/models"));
    }

    #[test]
    fn a_backend_error_in_text_becomes_the_protocols_json_error() {
        let mut text = http::Response::new(super::PlainBody::new(bytes::Bytes::from(
            "backend `py` has no method `metadata`\n",
        )));
        *text.status_mut() = http::StatusCode::NOT_FOUND;
        let json = super::json_errors(text);
        assert_eq!(json.status(), http::StatusCode::NOT_FOUND);
        let body = json.into_body().into_whole().unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).ok(),
            Some(serde_json::json!({"error": "backend `py` has no method `metadata`"}))
        );
    }
}
