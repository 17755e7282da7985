//! HTTP middlewares: what `http.middlewares` in YAML (or `HttpOptions::middleware`) asks the proxy to wrap around every request.

use std::time::Duration;

use serde::Deserialize;

use crate::layer::CustomLayer;

/// CORS options, as Starlette's `CORSMiddleware` takes them. `"*"` allows any value; with
/// `allow_credentials` it answers with the request's own origin, method or headers instead,
/// since browsers refuse `*` together with credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsOptions {
    /// Origins allowed to call (`["*"]` for any).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods allowed (`["*"]` for any); default `GET`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers allowed (`["*"]` for any).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Whether credentials (cookies, authorization) are allowed.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long, in seconds, a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Response headers the browser may expose to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
}

/// One middleware around every HTTP request; the first in a list is the outermost.
#[derive(Debug, Clone)]
pub enum Middleware {
    /// Cross-origin resource sharing: answers preflight requests and adds the CORS headers.
    Cors(CorsOptions),
    /// Compresses response bodies with gzip, brotli or deflate, as the client accepts.
    Compression,
    /// Sets `x-request-id` (a UUID) unless the caller sent one, and passes it to the
    /// backend and back on the response.
    RequestId,
    /// Answers `504` when a request takes longer than this.
    Timeout(Duration),
    /// Answers `413` when a request body is larger than this many bytes.
    BodyLimit(usize),
    /// Answers `400` to a request whose `Host` is not one of these (`*` allows any,
    /// `*.example.com` any subdomain), as Starlette's `TrustedHostMiddleware`.
    TrustedHost(Vec<String>),
    /// Redirects (`307`) every request to `https://` the same host and path, unless it says
    /// it came over HTTPS (`X-Forwarded-Proto: https`), as Starlette's
    /// `HTTPSRedirectMiddleware`.
    HttpsRedirect,
    /// Any tower layer, added by an embedding Rust program.
    Custom(CustomLayer),
}

impl PartialEq for Middleware {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Cors(a), Self::Cors(b)) => a == b,
            (Self::Compression, Self::Compression)
            | (Self::RequestId, Self::RequestId)
            | (Self::HttpsRedirect, Self::HttpsRedirect) => true,
            (Self::TrustedHost(a), Self::TrustedHost(b)) => a == b,
            (Self::Timeout(a), Self::Timeout(b)) => a == b,
            (Self::BodyLimit(a), Self::BodyLimit(b)) => a == b,
            (Self::Custom(a), Self::Custom(b)) => a.same_as(b),
            _ => false,
        }
    }
}

/// An empty options map: `compression: {}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoOptions {}

/// `trusted_host: {allowed_hosts: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustedHostOptions {
    allowed_hosts: Vec<String>,
}

/// One item of `http.middlewares` as YAML spells it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum MiddlewareFile {
    Cors(CorsOptions),
    Compression(NoOptions),
    RequestId(NoOptions),
    Timeout(f64),
    BodyLimit(usize),
    TrustedHost(TrustedHostOptions),
    HttpsRedirect(NoOptions),
}

impl MiddlewareFile {
    /// The middleware, or what is wrong with its value.
    pub(crate) fn into_middleware(self) -> Result<Middleware, String> {
        Ok(match self {
            Self::Cors(options) => Middleware::Cors(options),
            Self::Compression(NoOptions {}) => Middleware::Compression,
            Self::RequestId(NoOptions {}) => Middleware::RequestId,
            Self::Timeout(seconds) => Middleware::Timeout(
                super::limits::seconds(seconds).map_err(|m| format!("timeout {m}"))?,
            ),
            Self::BodyLimit(bytes) => Middleware::BodyLimit(bytes),
            Self::TrustedHost(TrustedHostOptions { allowed_hosts }) => {
                if allowed_hosts.is_empty() {
                    return Err(
                        "trusted_host.allowed_hosts lists no host (\"*\" allows any)".into(),
                    );
                }
                Middleware::TrustedHost(allowed_hosts)
            }
            Self::HttpsRedirect(NoOptions {}) => Middleware::HttpsRedirect,
        })
    }
}
