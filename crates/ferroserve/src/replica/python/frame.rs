//! The frame codec of the worker protocol: a fixed 20-byte header (meta length, body length, request id, kind), JSON meta, raw body.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::error::BackendError;

/// Frame kinds; the same numbers as `python/ferroserve/_protocol.py`.
pub(super) mod kind {
    pub(crate) const INIT: u8 = 1;
    pub(crate) const READY: u8 = 2;
    pub(crate) const INIT_ERROR: u8 = 3;
    pub(crate) const CALL: u8 = 4;
    pub(crate) const BATCH: u8 = 5;
    pub(crate) const RECONFIGURE: u8 = 6;
    pub(crate) const REPLY: u8 = 7;
    pub(crate) const BATCH_REPLY: u8 = 8;
    pub(crate) const ERROR: u8 = 9;
    pub(crate) const HANDLE_CALL: u8 = 10;
    pub(crate) const HANDLE_REPLY: u8 = 11;
    pub(crate) const SHUTDOWN: u8 = 12;
    pub(crate) const CANCEL: u8 = 13;
    pub(crate) const HEALTH: u8 = 14;
    pub(crate) const STREAM_START: u8 = 15;
    pub(crate) const STREAM_CHUNK: u8 = 16;
    pub(crate) const STREAM_END: u8 = 17;
    pub(crate) const STREAM_ACK: u8 = 18;
    pub(crate) const HANDLE_CHUNK: u8 = 19;
    pub(crate) const HANDLE_END: u8 = 20;
    pub(crate) const HANDLE_ACK: u8 = 21;
    pub(crate) const HANDLE_CANCEL: u8 = 22;
}

const HEADER_LEN: usize = 20;

/// The largest JSON meta a worker may send in one frame: 16 MiB.
pub(super) const MAX_META: usize = 16 << 20;
/// The largest body a worker may send in one frame: 1 GiB.
pub(super) const MAX_BODY: usize = 1 << 30;

/// One frame: fixed header (meta length, body length, id, kind), JSON meta, raw body.
pub(super) struct Frame {
    pub(super) id: u64,
    pub(super) kind: u8,
    pub(super) meta: Vec<u8>,
    pub(super) body: Bytes,
}

pub(super) fn encode(id: u64, kind: u8, meta: &[u8], body: &[u8]) -> Result<Vec<u8>, BackendError> {
    let too_big = |_| BackendError::msg("a request larger than 4 GiB cannot go to a Python worker");
    let meta_len = u32::try_from(meta.len()).map_err(too_big)?;
    let body_len = u32::try_from(body.len()).map_err(too_big)?;
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + body.len());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    Ok(out)
}

pub(super) async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (meta_len, body_len) = (word(0) as usize, word(4) as usize);
    for (what, len, max) in [("meta", meta_len, MAX_META), ("body", body_len, MAX_BODY)] {
        if len > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the worker sent a frame {what} of {len} bytes, over the limit of {max}"),
            ));
        }
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[8..16]);
    let mut meta = vec![0u8; meta_len];
    reader.read_exact(&mut meta).await?;
    let mut body = vec![0u8; body_len];
    reader.read_exact(&mut body).await?;
    Ok(Some(Frame {
        id: u64::from_le_bytes(id),
        kind: header[16],
        meta,
        body: Bytes::from(body),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame kinds (and stream windows) of `python/ferroserve/_protocol.py`, by name.
    fn python_kinds() -> Vec<(String, u64)> {
        let source = include_str!("../../../../../python/ferroserve/_protocol.py");
        source
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(" = ")?;
                let value = value.split('#').next()?.trim().parse().ok()?;
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
                    .then(|| (name.to_owned(), value))
            })
            .collect()
    }

    #[test]
    fn frame_kinds_match_the_python_side() {
        let rust = [
            ("INIT", kind::INIT),
            ("READY", kind::READY),
            ("INIT_ERROR", kind::INIT_ERROR),
            ("CALL", kind::CALL),
            ("BATCH", kind::BATCH),
            ("RECONFIGURE", kind::RECONFIGURE),
            ("REPLY", kind::REPLY),
            ("BATCH_REPLY", kind::BATCH_REPLY),
            ("ERROR", kind::ERROR),
            ("HANDLE_CALL", kind::HANDLE_CALL),
            ("HANDLE_REPLY", kind::HANDLE_REPLY),
            ("SHUTDOWN", kind::SHUTDOWN),
            ("CANCEL", kind::CANCEL),
            ("HEALTH", kind::HEALTH),
            ("STREAM_START", kind::STREAM_START),
            ("STREAM_CHUNK", kind::STREAM_CHUNK),
            ("STREAM_END", kind::STREAM_END),
            ("STREAM_ACK", kind::STREAM_ACK),
            ("HANDLE_CHUNK", kind::HANDLE_CHUNK),
            ("HANDLE_END", kind::HANDLE_END),
            ("HANDLE_ACK", kind::HANDLE_ACK),
            ("HANDLE_CANCEL", kind::HANDLE_CANCEL),
        ];
        let mut python = python_kinds();
        python.sort();
        let mut rust: Vec<(String, u64)> = rust
            .iter()
            .map(|(n, v)| ((*n).to_owned(), u64::from(*v)))
            .collect();
        // The stream windows are the same on both sides too.
        use super::super::stream::{STREAM_WINDOW, STREAM_WINDOW_BYTES};
        rust.push(("STREAM_WINDOW".to_owned(), STREAM_WINDOW as u64));
        rust.push(("STREAM_WINDOW_BYTES".to_owned(), STREAM_WINDOW_BYTES as u64));
        rust.sort();
        assert_eq!(rust, python, "the Rust and Python frame kinds differ");
    }

    #[test]
    fn the_header_is_as_python_packs_it() {
        let source = include_str!("../../../../../python/ferroserve/_protocol.py");
        assert!(
            source.contains(r#"HEADER = struct.Struct("<IIQB3x")"#),
            "the Python header changed"
        );
        assert_eq!(HEADER_LEN, 4 + 4 + 8 + 1 + 3);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let bytes = encode(7, kind::CALL, br#"{"a":1}"#, b"body").expect("small frame");
        assert_eq!(bytes.len(), HEADER_LEN + 7 + 4);
        let frame = read_frame(&mut bytes.as_slice())
            .await
            .expect("reads")
            .expect("a frame");
        assert_eq!((frame.id, frame.kind), (7, kind::CALL));
        assert_eq!(frame.meta, br#"{"a":1}"#);
        assert_eq!(frame.body, "body");
        assert!(read_frame(&mut &b""[..]).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn frames_over_the_limits_are_refused_before_any_allocation() {
        // A header that declares a 4 GiB body and sends nothing more.
        let mut header = Vec::new();
        header.extend_from_slice(&2u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&1u64.to_le_bytes());
        header.extend_from_slice(&[kind::REPLY, 0, 0, 0]);
        let err = read_frame(&mut header.as_slice())
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("4294967295 bytes"), "{err}");
        let mut meta = Vec::new();
        meta.extend_from_slice(&(MAX_META as u32 + 1).to_le_bytes());
        meta.extend_from_slice(&0u32.to_le_bytes());
        meta.extend_from_slice(&1u64.to_le_bytes());
        meta.extend_from_slice(&[kind::REPLY, 0, 0, 0]);
        assert!(read_frame(&mut meta.as_slice()).await.is_err());
    }
}
