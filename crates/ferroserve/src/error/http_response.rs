//! The one place a [`ServeError`] becomes an HTTP response: its status, its message, and the headers its class asks for.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use http_body_util::Full;

use super::ServeError;

/// The media type of every error body, and of Ferroserve's own plain-text answers.
pub(crate) const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A plain-text response with this status.
pub(crate) fn text_response(status: StatusCode, message: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    response
}

impl ServeError {
    /// The HTTP response for this error: [`ServeError::status`], the message as plain text,
    /// `Retry-After` when overloaded and `Allow` when the method is not allowed.
    ///
    /// ```
    /// use ferroserve::ServeError;
    /// let response = ServeError::EndpointNotFound("api".into()).to_http();
    /// assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    /// ```
    pub fn to_http(&self) -> http::Response<Full<Bytes>> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, "{self}");
        }
        let mut response = text_response(status, format!("{self}\n"));
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if let Self::MethodNotAllowed { allow, .. } = self
            && let Ok(allow) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(ALLOW, allow);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RETRY_AFTER as AFTER;

    #[test]
    fn overload_answers_503_with_retry_after() {
        let r = ServeError::Overloaded {
            backend: "b".into(),
            queued: 10,
            retry_after: AFTER,
        }
        .to_http();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn every_client_error_has_its_status_and_reason() {
        let cases = [
            (
                ServeError::RouteNotFound("/x".into()),
                404,
                "no endpoint serves path `/x`; GET /-/routes lists the routes served\n",
            ),
            (
                ServeError::ReservedRouteNotFound("/-/x".into()),
                404,
                "`/-/x` is not one of Ferroserve's routes (/-/routes, /-/healthz)\n",
            ),
            (
                ServeError::MethodNotAllowed {
                    target: "endpoint `e`".into(),
                    allow: "GET, POST".into(),
                    method: Some("PUT".into()),
                },
                405,
                "endpoint `e` allows GET, POST, not PUT\n",
            ),
            (
                ServeError::Timeout {
                    after: std::time::Duration::from_millis(1500),
                    set_by: "the timeout middleware",
                },
                504,
                "no answer within the 1.5s the timeout middleware allows\n",
            ),
            (
                ServeError::PayloadTooLarge { limit: 1024 },
                413,
                "the request body is larger than the 1024 bytes allowed here\n",
            ),
        ];
        for (error, status, body) in cases {
            let r = error.to_http();
            assert_eq!(r.status().as_u16(), status, "{error}");
            assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                r.into_body(),
            ))
            .expect("a full body is ready")
            .expect("infallible")
            .to_bytes();
            assert_eq!(bytes, body.as_bytes());
        }
        let r = ServeError::MethodNotAllowed {
            target: "/-/routes".into(),
            allow: "GET".into(),
            method: None,
        }
        .to_http();
        assert_eq!(r.headers()[ALLOW], "GET");
    }
}
