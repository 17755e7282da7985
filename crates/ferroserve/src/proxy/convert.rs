//! Conversion between the wire and Ferroserve: HTTP requests in, responses out (errors through `ServeError::to_http`).

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;

use std::borrow::Cow;

use crate::error::ServeError;
use crate::request::{CALL_METHOD_HEADER, HttpParts, Request, SHARD_KEY_HEADER};
use crate::response::{Response, ResponseBody};

/// The body type of every response the proxy writes.
pub(crate) type PlainBody = Full<Bytes>;

/// The request a replica sees, from the HTTP request's parts and its collected body.
pub(crate) fn into_request(
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Request, ServeError> {
    let method_name = match parts
        .headers
        .get(&CALL_METHOD_HEADER)
        .map(HeaderValue::to_str)
    {
        None => None,
        Some(Ok(name)) => Some(Cow::Owned(name.trim().to_owned())),
        Some(Err(_)) => {
            return Err(ServeError::BadRequest(
                "the X-SERVE-CALL-METHOD header is not valid text".to_owned(),
            ));
        }
    };
    let shard_key = parts
        .headers
        .get(&SHARD_KEY_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut request = Request::from_http(
        HttpParts {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
        },
        body,
    );
    if let Some(name) = method_name {
        request.set_method_name(name);
    }
    if let Some(key) = shard_key {
        request = request.with_shard_key(key);
    }
    Ok(request)
}

/// The wire form of a replica's answer or error.
pub(crate) fn into_http(result: Result<Response, ServeError>) -> http::Response<PlainBody> {
    match result {
        Ok(response) => {
            let (status, headers, body) = response.into_parts();
            match body {
                ResponseBody::Bytes(bytes) => {
                    let mut response = http::Response::new(Full::new(bytes));
                    *response.status_mut() = status;
                    *response.headers_mut() = headers;
                    response
                }
                ResponseBody::Value(_) => ServeError::Internal(
                    "the backend answered with a Rust value, which cannot be sent over HTTP; \
                     answer with text, bytes or JSON"
                        .to_owned(),
                )
                .to_http(),
            }
        }
        Err(e) => e.to_http(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http::header::CONTENT_TYPE;

    #[test]
    fn unusual_status_codes_pass_through() {
        let status = StatusCode::from_u16(123).expect("valid code");
        let r = into_http(Ok(Response::text("Hello, world!").with_status(status)));
        assert_eq!(r.status().as_u16(), 123);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn rust_values_cannot_go_over_http() {
        let r = into_http(Ok(Response::value(3u8)));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
