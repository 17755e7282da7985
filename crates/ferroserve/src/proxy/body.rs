//! Request bodies under a limit: refused at once when their declared length is over it, cut off as soon as more arrives than it allows — never buffered whole first.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{BodyTooLarge, ServeError};
use crate::layer::{BoxError, ProxyBody, box_error};

/// The rules a request body is read under (and whether the request is logged).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyRules {
    /// `http.max_body_bytes` (an endpoint may set its own).
    pub(crate) max_bytes: usize,
    /// `http.body_timeout_s`: the longest pause between two pieces of a body.
    pub(crate) idle: Duration,
    /// `http.access_log`.
    pub(crate) access_log: crate::config::AccessLog,
}

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

/// Reads a whole body of at most `limit` bytes, waiting at most `idle` for each piece of
/// it: 413 past the limit (or past a limit set further out), 408 when it stalls, 400 when
/// it cannot be read.
pub(crate) async fn collect<B>(body: B, limit: usize, idle: Duration) -> Result<Bytes, ServeError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(Limited::new(body.map_err(box_error), limit));
    let mut parts: Vec<Bytes> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ServeError::BodyTimeout(idle)),
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    parts.push(data);
                }
            }
            Err(e) => {
                let e = over_limit(e, limit);
                return Err(match e.downcast_ref::<BodyTooLarge>() {
                    Some(too_large) => ServeError::PayloadTooLarge {
                        limit: too_large.limit,
                    },
                    None => ServeError::BadRequest(format!("could not read the request body: {e}")),
                });
            }
        }
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.swap_remove(0),
        _ => {
            let mut whole = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            parts.iter().for_each(|p| whole.extend_from_slice(p));
            whole.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    const IDLE: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let stalled = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, BoxError>>();
        let err = collect(StreamBody::new(stalled), 1024, Duration::from_secs(30))
            .await
            .expect_err("stalls");
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            err.to_string(),
            "the request body stalled: nothing arrived for 30s"
        );
    }

    fn chunks(n: usize, size: usize) -> ProxyBody {
        let stream = futures_util::stream::iter((0..n).map(move |_| {
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![b'x'; size])))
        }));
        StreamBody::new(stream).boxed_unsync()
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole() {
        let body = collect(Full::new(Bytes::from_static(b"hello")), 5, IDLE).await;
        assert_eq!(body.expect("at the limit"), "hello");
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_off_at_the_limit() {
        let err = collect(chunks(100, 1024), 10_000, IDLE)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ServeError::PayloadTooLarge { limit: 10_000 }),
            "{err}"
        );
        // A limit further out (a body_limit middleware) is named as that limit.
        let err = collect(limited(chunks(100, 1024), 2048), 1 << 20, IDLE)
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
