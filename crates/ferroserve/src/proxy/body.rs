//! Request bodies under a limit: refused at once when their declared length is over it, cut off as soon as more arrives than it allows — never buffered whole first.

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{BodyTooLarge, ServeError};
use crate::layer::{BoxError, ProxyBody, box_error};

/// `PayloadTooLarge` when `headers` declare a body of more than `limit` bytes.
pub(crate) fn check_declared(headers: &HeaderMap, limit: usize) -> Result<(), ServeError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(ServeError::PayloadTooLarge {
            limit: limit as u64,
        }),
        _ => Ok(()),
    }
}

/// `body`, failing with [`BodyTooLarge`] once more than `limit` bytes have arrived.
pub(crate) fn limited(body: ProxyBody, limit: usize) -> ProxyBody {
    Limited::new(body, limit)
        .map_err(move |e| over_limit(e, limit))
        .boxed_unsync()
}

/// A [`LengthLimitError`] as the [`BodyTooLarge`] it means; any other error as it is.
fn over_limit(error: BoxError, limit: usize) -> BoxError {
    if error.is::<LengthLimitError>() {
        Box::new(BodyTooLarge {
            limit: limit as u64,
        })
    } else {
        error
    }
}

/// Reads a whole body of at most `limit` bytes: 413 past it (or past a limit set further
/// out), 400 when the body cannot be read.
pub(crate) async fn collect<B>(body: B, limit: usize) -> Result<Bytes, ServeError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body.map_err(box_error), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            let e = over_limit(e, limit);
            Err(match e.downcast_ref::<BodyTooLarge>() {
                Some(too_large) => ServeError::PayloadTooLarge {
                    limit: too_large.limit,
                },
                None => ServeError::BadRequest(format!("could not read the request body: {e}")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(n: usize, size: usize) -> ProxyBody {
        let stream = futures_util::stream::iter((0..n).map(move |_| {
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b'x'; size])))
        }));
        StreamBody::new(stream).boxed_unsync()
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole() {
        let body = collect(Full::new(Bytes::from_static(b"hello")), 5).await;
        assert_eq!(body.expect("at the limit"), "hello");
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_off_at_the_limit() {
        let err = collect(chunks(100, 1024), 10_000)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ServeError::PayloadTooLarge { limit: 10_000 }),
            "{err}"
        );
        // A limit further out (a body_limit middleware) is named as that limit.
        let err = collect(limited(chunks(100, 1024), 2048), 1 << 20)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ServeError::PayloadTooLarge { limit: 2048 }),
            "{err}"
        );
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_at_once() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, http::HeaderValue::from_static("1073741824"));
        let err = check_declared(&headers, 64 << 20).expect_err("1 GB");
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        headers.insert(CONTENT_LENGTH, http::HeaderValue::from_static("10"));
        assert!(check_declared(&headers, 10).is_ok());
    }
}
