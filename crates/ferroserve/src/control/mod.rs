//! The control API: its own HTTP listener (by default `127.0.0.1:8265`), speaking JSON, to deploy an app, read its status and change it while it serves; a bearer token off loopback.

mod api;
mod dashboard;
mod stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::backend::Registry;
use crate::error::ServeError;
use crate::proxy::convert::{PlainBody, plain};
use crate::serve::Serve;

/// Ray's dashboard and REST port.
pub const DEFAULT_CONTROL_PORT: u16 = 8265;
/// The largest request body the control API reads (an app file): 16 MiB.
const MAX_BODY: usize = 16 << 20;
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most connections the control API serves at once; past it, new ones are closed.
const MAX_CONNECTIONS: usize = 256;

/// Where the control API listens, and the token it asks for.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The host to bind (`127.0.0.1` by default).
    pub host: String,
    /// The port (8265 by default; 0 picks a free one).
    pub port: u16,
    /// The bearer token callers must send; required when `host` is not loopback.
    pub token: Option<String>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_CONTROL_PORT,
            token: None,
        }
    }
}

/// The running control API.
pub struct ControlServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    shutdown_asked: Arc<Notify>,
}

/// What every request shares.
struct Shared {
    serve: Arc<Serve>,
    registry: Registry,
    token: Option<String>,
    shutdown_asked: Arc<Notify>,
}

impl ControlServer {
    /// Starts the control API for `serve`; `rust:` backends in apps it is given come from
    /// `registry`. Binding off loopback without a token is refused.
    pub async fn start(
        options: &ControlOptions,
        serve: Arc<Serve>,
        registry: Registry,
    ) -> Result<Self, ServeError> {
        let addr = format!("{}:{}", options.host, options.port);
        let is_loopback = matches!(options.host.as_str(), "localhost")
            || options
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !is_loopback && options.token.is_none() {
            return Err(ServeError::invalid(
                "control_host",
                format!(
                    "the control API would listen on {addr}, off loopback, with no token: set \
                     --control-token (or FERROSERVE_CONTROL_TOKEN), or bind it to 127.0.0.1"
                ),
            ));
        }
        let listener = TcpListener::bind(&addr).await.map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "port {} is already in use (the control API; pick another with --control-port or FERROSERVE_CONTROL_PORT)",
                    options.port
                )
            } else {
                e.to_string()
            };
            ServeError::CannotListen {
                addr: addr.clone(),
                reason,
            }
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        let shutdown_asked = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            serve,
            registry,
            token: options.token.clone(),
            shutdown_asked: shutdown_asked.clone(),
        });
        tokio::spawn(accept(listener, shared, stopped));
        Ok(Self {
            local_addr,
            stop,
            shutdown_asked,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Ends when a caller asks the server to stop (`POST /api/shutdown`).
    pub async fn shutdown_asked(&self) {
        self.shutdown_asked.notified().await;
    }

    /// Stops accepting calls.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            tracing::warn!(
                "the control API has {MAX_CONNECTIONS} connections open; closing a new one"
            );
            continue;
        };
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(answer(&shared, req).await) }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("control connection: {e}");
            }
            drop(permit);
        });
    }
}

/// Whether a request without a token may come from a web page other than the dashboard:
/// its `Host` is not a loopback name (a page on another domain that resolves to
/// 127.0.0.1: DNS rebinding), or it carries an `Origin` (browsers send one with every
/// cross-site write) other than `http://HOST` itself (the dashboard's own calls; Chrome
/// sends `Origin` on same-origin writes too). The API runs code it is given, so no other
/// web page may reach it.
fn from_a_browser(headers: &http::HeaderMap) -> Option<&'static str> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !loopback_host(host) {
        return Some("a request for a host name that is not loopback (DNS rebinding)");
    }
    let origin = headers.get(header::ORIGIN)?;
    let same_origin = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.strip_prefix("http://"))
        .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host));
    (!same_origin).then_some("a request with an Origin header from another web page")
}

/// Whether a `Host` header (`name` or `name:port`, `[v6]:port`) names this machine:
/// `localhost` or a loopback address.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((name, rest)) if rest.is_empty() || rest.starts_with(':') => name,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Serves the dashboard's files; otherwise checks the token, reads the body (at most
/// [`MAX_BODY`]), and routes: a streamed call's answer streams, every other is whole.
async fn answer(shared: &Shared, req: http::Request<Incoming>) -> http::Response<PlainBody> {
    // The dashboard's page and files hold no data: no token (the page asks for it).
    if let Some(page) = dashboard::answer(req.method(), req.uri().path(), req.headers()) {
        return plain(page);
    }
    let (parts, body) = match admitted(shared, req).await {
        Ok(admitted) => admitted,
        Err(refused) => return plain(refused),
    };
    if parts.method == http::Method::POST && parts.uri.path() == stream::PATH {
        return stream::call(shared, &body).await;
    }
    plain(api::route(shared, &parts, &body).await)
}

/// The request's parts and body, once its token (or its origin) is checked and its body
/// read; else the answer that refuses it.
async fn admitted(
    shared: &Shared,
    req: http::Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), http::Response<Full<Bytes>>> {
    if shared.token.is_none()
        && let Some(why) = from_a_browser(req.headers())
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "refused {why}: without a token the control API takes calls from this machine's tools and its own dashboard only (set --control-token to call it from elsewhere)"
            ),
        ));
    }
    if let Some(token) = &shared.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required: send `Authorization: Bearer TOKEN` (ferroserve: --token or FERROSERVE_CONTROL_TOKEN)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(response);
        }
    }
    let (parts, body) = req.into_parts();
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
                ));
            }
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the body did not arrive within {BODY_TIMEOUT:?}"),
                ));
            }
        };
    Ok((parts, body))
}

/// Whether two secrets are equal, in a time that does not tell how much of them matched.
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// A JSON answer.
fn json(status: StatusCode, value: &impl serde::Serialize) -> http::Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: &str) -> http::Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A [`ServeError`] as a JSON error with its status.
fn serve_error(e: &ServeError) -> http::Response<Full<Bytes>> {
    let status = e.status();
    let mut response = error(status, &e.to_string());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("a header"));
        if let Some(origin) = origin {
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("a header"),
            );
        }
        headers
    }

    #[test]
    fn tools_on_this_machine_are_let_in() {
        for host in [
            "127.0.0.1:8265",
            "localhost:8265",
            "LOCALHOST",
            "[::1]:8265",
            "127.3.4.5",
        ] {
            assert_eq!(from_a_browser(&headers(host, None)), None, "{host}");
        }
    }

    #[test]
    fn the_dashboard_calling_its_own_server_is_let_in() {
        for host in ["127.0.0.1:8265", "localhost:41234", "[::1]:8265"] {
            let origin = format!("http://{host}");
            assert_eq!(
                from_a_browser(&headers(host, Some(&origin))),
                None,
                "{origin}"
            );
        }
        let origin = Some("http://localhost:8265");
        assert_eq!(from_a_browser(&headers("LocalHost:8265", origin)), None);
    }

    #[test]
    fn other_web_pages_are_refused() {
        for (host, origin) in [
            ("127.0.0.1:8265", "https://evil.example"),
            ("127.0.0.1:8265", "http://127.0.0.1:3000"),
            ("127.0.0.1:8265", "http://localhost:8265"),
            ("127.0.0.1:8265", "https://127.0.0.1:8265"),
            ("127.0.0.1:8265", "http://127.0.0.1:8265.evil.example"),
            ("127.0.0.1:8265", "null"),
            ("127.0.0.1:8265", ""),
            ("localhost:8265", "http://localhost:8265/"),
        ] {
            assert!(
                from_a_browser(&headers(host, Some(origin))).is_some(),
                "{origin} calling {host}"
            );
        }
    }

    #[test]
    fn names_that_are_not_loopback_are_refused_even_from_their_own_origin() {
        for host in [
            "evil.example:8265",
            "10.0.0.1:8265",
            "[::2]:8265",
            "[::1]x",
            "localhost.evil.example",
            "",
        ] {
            assert!(from_a_browser(&headers(host, None)).is_some(), "{host}");
            let origin = format!("http://{host}");
            assert!(
                from_a_browser(&headers(host, Some(&origin))).is_some(),
                "{origin}"
            );
        }
    }
}
