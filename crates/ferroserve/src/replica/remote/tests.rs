//! A remote replica whose node is gone: a quick 502 naming the node, and ejection after five; deadlines set by a caller's timeout; a connection a call broke on is not used again.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::request::Arg;

/// An address where nothing listens.
async fn nobody() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn a_node_that_is_gone_fails_fast_and_is_ejected_after_five() {
    let client = Arc::new(PeerClient::new(nobody().await, PeerLimits::default()));
    let ejections = Arc::new(Ejections::default());
    ejections.set_replicas(1);
    let replica = RemoteReplica::new("b", "a", "b#1", client, ejections);
    assert_eq!(replica.id(), "a/b#1");
    for i in 0..5 {
        assert!(replica.is_alive(), "call {i}");
        let started = std::time::Instant::now();
        let err = replica
            .call(Request::from_arg(Arg::from("x")))
            .await
            .expect_err("nobody listens");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
        assert!(err.to_string().contains("node `a`"), "{err}");
        assert!(err.to_string().contains("not sent"), "{err}");
    }
    assert!(!replica.is_alive(), "ejected");
    let err = replica.check_health().await.expect_err("unreachable");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_refused_call_counts_for_nothing() {
    let client = Arc::new(PeerClient::new(nobody().await, PeerLimits::default()));
    let replica = RemoteReplica::new("b", "a", "b#1", client, Arc::default());
    for _ in 0..10 {
        let err = replica
            .call(Request::from_arg(Arg::value(1u8)))
            .await
            .expect_err("a Rust value");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
    assert!(replica.is_alive(), "the caller's mistake ejects nothing");
}

#[tokio::test]
async fn the_earliest_deadline_travels() {
    assert_eq!(remaining(), None);
    let soon = Instant::now() + Duration::from_secs(2);
    let later = Instant::now() + Duration::from_secs(60);
    let left = with_deadline(soon, with_deadline(later, async { remaining() })).await;
    assert!(
        left.is_some_and(|d| d <= Duration::from_secs(2) && d > Duration::from_secs(1)),
        "{left:?}"
    );
}

/// A peer that resets the stream of every call on its first connection (the connection
/// stays up) and answers `ok` on any later one; and how many connections it took.
async fn resetting_peer() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let service = hyper::service::service_fn(move |_| async move {
                if first {
                    // hyper resets the stream of a call whose service fails.
                    return Err(std::io::Error::other("reset"));
                }
                Ok(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_call_that_broke_on_a_connection_sends_the_next_on_a_new_one() {
    let (addr, connections) = resetting_peer().await;
    let client = PeerClient::new(addr, PeerLimits::default());
    let call = || {
        http::Request::post(format!("http://{addr}/call"))
            .body(bytes::Bytes::new())
            .expect("a request")
    };
    let broke = client.send(call()).await.err().expect("reset");
    assert!(matches!(broke, PeerError::Broken(_)), "{broke}");
    // The connection it broke on is not used again, even while it still looks open: the
    // next call, which would break there too, goes on a new one.
    let (status, _, _) = client.send(call()).await.expect("answered");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}
