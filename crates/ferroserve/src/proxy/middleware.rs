//! The middleware stack: the tower layers that `http.middlewares` asks for, built around the proxy's handler at start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{self, Either};
use http::{HeaderName, HeaderValue, Method};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower::util::ServiceExt;
use tower_http::ServiceBuilderExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_http::request_id::MakeRequestUuid;

use crate::config::{CorsOptions, Middleware};
use crate::error::ServeError;
use crate::layer::{IntoProxyResponse, ProxyBody, ProxyLayer, ProxyService};
use crate::router::SnapshotCell;

use super::body::{self, BodyRules};

/// The proxy's handler alone, as a [`ProxyService`].
fn handler(cell: Arc<SnapshotCell>, rules: BodyRules) -> ProxyService {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        let cell = cell.clone();
        async move { Ok::<_, Infallible>(super::handle(&cell, rules, req).await.into_proxy()) }
    }))
}

/// The handler wrapped in `middlewares` (the first outermost); `None` when there are none,
/// so the proxy can take its unboxed fast path.
pub(crate) fn build(
    middlewares: &[Middleware],
    cell: &Arc<SnapshotCell>,
    rules: BodyRules,
) -> Result<Option<ProxyService>, ServeError> {
    if middlewares.is_empty() {
        return Ok(None);
    }
    let mut service = handler(cell.clone(), rules);
    for middleware in middlewares.iter().rev() {
        service = match middleware {
            Middleware::Cors(options) => cors(options)?.wrap_service(service),
            Middleware::Compression => CompressionLayer::new().wrap_service(service),
            Middleware::RequestId => ServiceBuilder::new()
                .set_x_request_id(MakeRequestUuid)
                .propagate_x_request_id()
                .wrap_service(service),
            Middleware::Timeout(after) => timeout(service, *after),
            Middleware::BodyLimit(bytes) => body_limit(service, *bytes),
            Middleware::TrustedHost(hosts) => trusted_host(service, hosts.clone().into()),
            Middleware::HttpsRedirect => https_redirect(service),
            Middleware::Custom(layer) => layer.wrap(service),
        };
    }
    Ok(Some(service))
}

/// Answers `504` (through [`ServeError::Timeout`]) when `inner` takes longer than `after`;
/// the request is dropped, which frees its replica slot.
fn timeout(inner: ProxyService, after: Duration) -> ProxyService {
    // Combinators, not async blocks: see `Answering::call` in `crate::layer`.
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        tokio::time::timeout(after, inner.clone().oneshot(req)).map(move |answer| {
            Ok::<_, Infallible>(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => ServeError::Timeout {
                    after,
                    set_by: "the timeout middleware",
                }
                .to_http()
                .into_proxy(),
            })
        })
    }))
}

/// Whether `host` (without its port) is allowed by `pattern`: `*`, `*.example.com` (any
/// subdomain), or the host itself; case does not matter.
fn host_allowed(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern.eq_ignore_ascii_case(host)
        || pattern.strip_prefix('*').is_some_and(|suffix| {
            suffix.starts_with('.')
                && host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        })
}

/// Answers `400` to a request whose `Host` header no pattern of `hosts` allows.
fn trusted_host(inner: ProxyService, hosts: Arc<[String]>) -> ProxyService {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        if hosts.iter().any(|pattern| host_allowed(pattern, name)) {
            Either::Left(inner.clone().oneshot(req))
        } else {
            let refused = ServeError::BadRequest(format!(
                "invalid host header `{host}`: the trusted_host middleware allows {}",
                hosts.join(", ")
            ));
            Either::Right(future::ready(Ok(refused.to_http().into_proxy())))
        }
    }))
}

/// Redirects every request not marked `X-Forwarded-Proto: https` to `https://` the same
/// host, path and query (`307`, so the method and body are kept).
fn https_redirect(inner: ProxyService) -> ProxyService {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        let headers = req.headers();
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        if secure {
            return Either::Left(inner.clone().oneshot(req));
        }
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{name}{path}");
        let mut response = crate::error::text_response(
            http::StatusCode::TEMPORARY_REDIRECT,
            format!("see {location}\n"),
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(http::header::LOCATION, value);
        }
        Either::Right(future::ready(Ok(response.into_proxy())))
    }))
}

/// Answers `413` (through [`ServeError::PayloadTooLarge`]) for a body over `limit` bytes:
/// at once when its `Content-Length` says so, else as soon as reading it passes the limit.
fn body_limit(inner: ProxyService, limit: usize) -> ProxyService {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<ProxyBody>| {
        match body::check_declared(req.headers(), limit) {
            Err(too_large) => Either::Left(future::ready(Ok(too_large.to_http().into_proxy()))),
            Ok(()) => Either::Right(inner.clone().oneshot(req.map(|b| body::limited(b, limit)))),
        }
    }))
}

fn header_values(key: &str, values: &[String]) -> Result<Vec<HeaderValue>, ServeError> {
    values
        .iter()
        .map(|v| {
            HeaderValue::from_str(v)
                .map_err(|_| ServeError::invalid(key, format!("`{v}` is not a valid header value")))
        })
        .collect()
}

fn header_names(key: &str, values: &[String]) -> Result<Vec<HeaderName>, ServeError> {
    values
        .iter()
        .map(|v| {
            HeaderName::from_bytes(v.as_bytes())
                .map_err(|_| ServeError::invalid(key, format!("`{v}` is not a header name")))
        })
        .collect()
}

fn is_any(values: &[String]) -> bool {
    values.iter().any(|v| v == "*")
}

/// The CORS layer for `options`, as Starlette's CORSMiddleware behaves.
fn cors(options: &CorsOptions) -> Result<CorsLayer, ServeError> {
    let credentials = options.allow_credentials;
    let origins = if is_any(&options.allow_origins) {
        if credentials {
            AllowOrigin::mirror_request()
        } else {
            AllowOrigin::any()
        }
    } else {
        AllowOrigin::list(header_values(
            "http.middlewares.cors.allow_origins",
            &options.allow_origins,
        )?)
    };
    let methods = if options.allow_methods.is_empty() {
        AllowMethods::list([Method::GET])
    } else if is_any(&options.allow_methods) {
        if credentials {
            AllowMethods::mirror_request()
        } else {
            AllowMethods::any()
        }
    } else {
        let methods = options
            .allow_methods
            .iter()
            .map(|m| {
                crate::config::parse_method(m)
                    .map_err(|e| ServeError::invalid("http.middlewares.cors.allow_methods", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowMethods::list(methods)
    };
    let headers = if is_any(&options.allow_headers) {
        if credentials {
            AllowHeaders::mirror_request()
        } else {
            AllowHeaders::any()
        }
    } else {
        AllowHeaders::list(header_names(
            "http.middlewares.cors.allow_headers",
            &options.allow_headers,
        )?)
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .allow_credentials(credentials)
        .expose_headers(ExposeHeaders::list(header_names(
            "http.middlewares.cors.expose_headers",
            &options.expose_headers,
        )?));
    if let Some(seconds) = options.max_age {
        layer = layer.max_age(std::time::Duration::from_secs(seconds));
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn host_patterns_match_as_starlettes_do() {
        assert!(host_allowed("*", "anything"));
        assert!(host_allowed("Example.com", "example.COM"));
        assert!(host_allowed("*.example.com", "api.example.com"));
        assert!(!host_allowed("*.example.com", "example.com"));
        assert!(!host_allowed("*.example.com", "evilexample.com"));
        assert!(!host_allowed("example.com", "api.example.com"));
    }
}
