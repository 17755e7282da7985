//! Streaming answers from Rust backends: chunks go out as they are made, a client that
//! leaves drops the stream and frees the replica slot, handles read the chunks, and
//! server-sent events reach `curl -N`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve::{BackendConfig, BackendError, BackendFactory, Response, Serve};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use common::{base_url, client, serve, serve_backend};

/// Sets its flag when dropped: tells the test the stream was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A backend streaming `"chunk N\n"` for N in 0..count, each after a permit of `gate`:
/// the test decides when each chunk is made.
fn gated(gate: Arc<Semaphore>, count: usize, dropped: Arc<AtomicBool>) -> BackendFactory {
    BackendFactory::function(move |_req| {
        let (gate, dropped) = (gate.clone(), dropped.clone());
        async move {
            let flag = DropFlag(dropped);
            let chunks = futures_util::stream::unfold(0, move |n| {
                let gate = gate.clone();
                async move {
                    if n == count {
                        return None;
                    }
                    gate.acquire().await.ok()?.forget();
                    Some((
                        Ok::<_, BackendError>(Bytes::from(format!("chunk {n}\n"))),
                        n + 1,
                    ))
                }
            })
            .map(move |chunk| {
                let _ = &flag;
                chunk
            });
            Ok(Response::stream(chunks))
        }
    })
}

async fn gated_server(
    count: usize,
    config: BackendConfig,
) -> (Serve, Arc<Semaphore>, Arc<AtomicBool>) {
    let serve = serve().await;
    let gate = Arc::new(Semaphore::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let factory = gated(gate.clone(), count, dropped.clone());
    serve_backend(&serve, "gen", factory, config, "/gen", &[]).await;
    (serve, gate, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_arrives_before_the_stream_ends() {
    let (serve, gate, dropped) = gated_server(3, BackendConfig::default()).await;
    gate.add_permits(1);
    let mut response = client()
        .get(format!("{}/gen", base_url(&serve)))
        .send()
        .await
        .expect("headers come before the end");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first chunk comes while the rest waits")
        .expect("read")
        .expect("a chunk");
    assert_eq!(&first[..], b"chunk 0\n");
    // The stream cannot end yet: its next chunks wait for permits.
    assert!(!dropped.load(Ordering::SeqCst));
    gate.add_permits(2);
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("read") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"chunk 1\nchunk 2\n");
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_drops_the_stream_and_frees_the_slot() {
    // One slot: a stream that kept it would queue the next request for ever.
    let config = BackendConfig::default().max_concurrent_queries(1);
    let (serve, gate, dropped) = gated_server(1_000_000, config).await;
    let url = format!("{}/gen", base_url(&serve));
    gate.add_permits(1);
    let mut response = client().get(&url).send().await.expect("headers");
    let first = response.chunk().await.expect("read").expect("a chunk");
    assert_eq!(&first[..], b"chunk 0\n");
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the stream was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slot is free: the next request gets its first chunk.
    gate.add_permits(1);
    let mut again = tokio::time::timeout(Duration::from_secs(5), client().get(&url).send())
        .await
        .expect("not queued behind the stream that was dropped")
        .expect("headers");
    let chunk = again.chunk().await.expect("read").expect("a chunk");
    assert_eq!(&chunk[..], b"chunk 0\n");
    drop(again);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_slows_the_stream() {
    // A stream that could make chunks without end, read by nobody: it is polled only as
    // far as the socket buffers take, not to the end.
    let made = Arc::new(AtomicUsize::new(0));
    let serve = serve().await;
    let counter = made.clone();
    let endless = BackendFactory::function(move |_req| {
        let counter = counter.clone();
        async move {
            let chunks = futures_util::stream::repeat_with(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<_, BackendError>(Bytes::from(vec![b'x'; 16 * 1024]))
            });
            Ok(Response::stream(chunks))
        }
    });
    serve_backend(
        &serve,
        "endless",
        endless,
        BackendConfig::default(),
        "/endless",
        &[],
    )
    .await;
    let response = client()
        .get(format!("{}/endless", base_url(&serve)))
        .send()
        .await
        .expect("headers");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = made.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = made.load(Ordering::Relaxed);
    // 16 KiB chunks: a few megabytes of socket and connection buffers at most.
    assert!(
        stalled < 1024,
        "{stalled} chunks made for a client that reads none"
    );
    assert_eq!(stalled, later, "the stream went on without a reader");
    drop(response);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_read_the_chunks_in_order() {
    let (serve, gate, _dropped) = gated_server(4, BackendConfig::default()).await;
    gate.add_permits(4);
    let answer = serve
        .get_handle("gen")
        .expect("endpoint")
        .remote(())
        .await
        .expect("an answer");
    assert!(answer.is_stream());
    let chunks: Vec<Bytes> = answer
        .into_chunks()
        .map(|c| c.expect("a chunk"))
        .collect()
        .await;
    assert_eq!(
        chunks,
        ["chunk 0\n", "chunk 1\n", "chunk 2\n", "chunk 3\n"]
            .map(|s: &'static str| Bytes::from_static(s.as_bytes()))
    );
    // Or read whole.
    gate.add_permits(4);
    let whole = serve
        .get_handle("gen")
        .expect("endpoint")
        .remote(())
        .await
        .expect("an answer")
        .collected(1024)
        .await
        .expect("within the limit");
    assert_eq!(
        whole.body_text().expect("text"),
        "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_cuts_the_answer_short() {
    let serve = serve().await;
    let failing = BackendFactory::function(|_req| async {
        let chunks = futures_util::stream::iter([
            Ok(Bytes::from_static(b"partial")),
            Err(BackendError::msg("the model ran out of memory")),
        ]);
        Ok(Response::stream(chunks))
    });
    serve_backend(
        &serve,
        "failing",
        failing,
        BackendConfig::default(),
        "/failing",
        &[],
    )
    .await;
    // The headers may or may not be out when the error comes: either way the client sees a
    // failed answer, never a complete one.
    let read = async {
        let response = client()
            .get(format!("{}/failing", base_url(&serve)))
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        response.bytes().await
    };
    assert!(read.await.is_err(), "the answer was not cut short");
    let error = serve
        .get_handle("failing")
        .expect("endpoint")
        .remote(())
        .await
        .expect("headers")
        .collected(1024)
        .await
        .expect_err("the error reaches the handle caller");
    assert!(
        error
            .message()
            .contains("backend `failing` (replica `failing#")
            && error.message().ends_with("the model ran out of memory"),
        "{}",
        error.message()
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_server_sent_events_as_they_come() {
    let serve = serve().await;
    let events = BackendFactory::function(|_req| async {
        let events = futures_util::stream::iter(0..3).then(|n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BackendError>(ferroserve::response::sse_event(
                Some("token"),
                &format!("t{n}"),
            ))
        });
        Ok(Response::event_stream(events))
    });
    serve_backend(
        &serve,
        "events",
        events,
        BackendConfig::default(),
        "/events",
        &[],
    )
    .await;
    let url = format!("{}/events", base_url(&serve));
    let out = tokio::process::Command::new("curl")
        .args(["-sN", "--max-time", "10", "-D", "-", &url])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/event-stream"), "{text}");
    assert!(lower.contains("cache-control: no-cache"), "{text}");
    assert!(
        text.ends_with(
            "event: token\ndata: t0\n\nevent: token\ndata: t1\n\nevent: token\ndata: t2\n\n"
        ),
        "{text}"
    );
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_header_timeout_is_not_taken_for_an_idle_connection() {
    // The connection sweeper closes connections idle for the header timeout: a connection
    // whose answer still streams is busy, with middlewares or without.
    for middlewares in [vec![], vec![ferroserve::Middleware::RequestId]] {
        let mut options =
            ferroserve::HttpOptions::new("127.0.0.1", 0).header_timeout(Duration::from_millis(300));
        for m in middlewares.clone() {
            options = options.middleware(m);
        }
        let serve = Serve::start(options).await.expect("starts");
        let slow = BackendFactory::function(|_req| async {
            let chunks = futures_util::stream::iter(0..10).then(|n| async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, BackendError>(Bytes::from(format!("{n}\n")))
            });
            Ok(Response::stream(chunks))
        });
        serve_backend(&serve, "slow", slow, BackendConfig::default(), "/slow", &[]).await;
        let body = client()
            .get(format!("{}/slow", base_url(&serve)))
            .send()
            .await
            .expect("headers")
            .text()
            .await
            .unwrap_or_else(|e| panic!("cut short ({} middlewares): {e}", middlewares.len()));
        assert_eq!(body, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        serve.shutdown().await;
    }
}
