//! Streamed answers between nodes: the chunks of a replica's stream framed in the HTTP/2 body (so that each chunk, and an error that ends the stream, arrive as sent), and read back as a stream.
//!
//! Each frame is a tag byte (`0` a chunk, `1` an error), a little-endian `u32` length, and
//! that many bytes: the chunk, or the error's message. The stream's end is the end of the
//! HTTP/2 stream. HTTP/2 flow control carries a slow reader's pace back to the replica: the
//! owning node polls the stream only as its window allows.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body::Body;

use crate::error::BackendError;
use crate::response::Chunks;

const CHUNK: u8 = 0;
const ERROR: u8 = 1;
const HEADER: usize = 5;

fn frame(tag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&[tag]);
    // A chunk is bounded by what one frame of the worker protocol carries (1 GiB).
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(payload);
    out.freeze()
}

/// `chunks` as the frames of an HTTP/2 body; an error is the last frame.
pub(crate) fn framed(mut chunks: Chunks) -> Chunks {
    let mut ended = false;
    Chunks::new(futures_util::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        chunks.poll_next_unpin(cx).map(|item| {
            item.map(|item| {
                Ok(match item {
                    Ok(chunk) => frame(CHUNK, &chunk),
                    Err(e) => {
                        ended = true;
                        frame(ERROR, e.message().as_bytes())
                    }
                })
            })
        })
    }))
}

/// The chunks framed in `body`; a chunk larger than `max_chunk` bytes, or a body that
/// breaks off, ends the stream with an error.
pub(crate) struct Unframed<B> {
    body: B,
    buffer: BytesMut,
    max_chunk: usize,
    done: bool,
}

impl<B> Unframed<B> {
    pub(crate) fn new(body: B, max_chunk: usize) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            max_chunk,
            done: false,
        }
    }

    /// The next whole frame in the buffer, if there is one.
    fn next_frame(&mut self) -> Option<Result<Bytes, BackendError>> {
        if self.buffer.len() < HEADER {
            return None;
        }
        let tag = self.buffer[0];
        let len = u32::from_le_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.max_chunk || tag > ERROR {
            self.done = true;
            return Some(Err(BackendError::msg(format!(
                "a peer sent a stream frame of {len} bytes (tag {tag}), over the {} allowed",
                self.max_chunk
            ))));
        }
        if self.buffer.len() < HEADER + len {
            self.buffer.reserve(HEADER + len - self.buffer.len());
            return None;
        }
        self.buffer.advance(HEADER);
        let payload = self.buffer.split_to(len).freeze();
        if tag == ERROR {
            self.done = true;
            return Some(Err(BackendError::msg(String::from_utf8_lossy(&payload))));
        }
        Some(Ok(payload))
    }
}

impl<B> Stream for Unframed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Item = Result<Bytes, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.next_frame() {
                return Poll::Ready(Some(item));
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(BackendError::replica_died(format!(
                        "the stream from the other node broke off: {e}"
                    )))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if !this.buffer.is_empty() {
                        return Poll::Ready(Some(Err(BackendError::msg(
                            "the stream from the other node ended inside a frame",
                        ))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// The frames of `items`, cut into pieces of `cut` bytes, read back.
    async fn round_trip(
        items: Vec<Result<Bytes, BackendError>>,
        cut: usize,
    ) -> Vec<Result<Bytes, String>> {
        let wire: Vec<u8> = framed(Chunks::new(futures_util::stream::iter(items)))
            .map(|f| f.expect("framing never fails"))
            .collect::<Vec<Bytes>>()
            .await
            .concat();
        let pieces: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = wire
            .chunks(cut)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(pieces));
        Unframed::new(body, 1 << 20)
            .map(|r| r.map_err(|e| e.message().to_owned()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn chunks_and_errors_arrive_as_sent_however_the_body_is_cut() {
        let items = || {
            vec![
                Ok(Bytes::from_static(b"first")),
                Ok(Bytes::from_static(b"")),
                Ok(Bytes::from(vec![7u8; 3000])),
                Err(BackendError::msg("the model fell over")),
            ]
        };
        for cut in [1, 3, 5, 64, 10_000] {
            let got = round_trip(items(), cut).await;
            assert_eq!(got.len(), 4, "cut {cut}");
            assert_eq!(got[0].as_deref().ok(), Some(&b"first"[..]));
            assert_eq!(got[1].as_deref().ok(), Some(&b""[..]));
            assert_eq!(got[2].as_ref().map(Bytes::len).ok(), Some(3000));
            assert_eq!(
                got[3].as_ref().err().map(String::as_str),
                Some("the model fell over")
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_or_broken_frame_ends_the_stream() {
        let mut huge = vec![CHUNK];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let body = http_body_util::Full::new(Bytes::from(huge));
        let got: Vec<_> = Unframed::new(body, 1024).collect().await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
        let cut = http_body_util::Full::new(Bytes::from_static(&[CHUNK, 9, 0, 0, 0, 1]));
        let got: Vec<_> = Unframed::new(cut, 1024).collect().await;
        assert!(matches!(&got[..], [Err(e)] if e.message().contains("inside a frame")));
    }
}
