//! A shutdown that answers: requests still running when `graceful_shutdown_timeout_s` ends
//! get a 503 (not a silently closed connection), and workers get a SHUTDOWN frame, then a
//! kill.

mod common;

use std::time::{Duration, Instant};

use common::{client, fetch_json, spawn_cli};

fn app() -> String {
    format!(
        "http:\n  graceful_shutdown_timeout_s: 1\nbackends:\n  crashy:\n    python: crashy:Crashy\n    working_dir: {}\nendpoints:\n  crashy: {{route: /crashy, backend: crashy}}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python")
    )
}

fn process_exists(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_grace_get_503_and_workers_are_stopped() {
    let server = spawn_cli(&app());
    let http = client();
    let worker = fetch_json(http.get(server.url("/crashy")))
        .await
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .expect("the worker's pid");
    // A request that would take 5 s.
    let slow = {
        let request = http
            .get(server.url("/crashy"))
            .header("X-SERVE-CALL-METHOD", "slow");
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || server.terminate());

    let answer = slow
        .await
        .expect("no panic")
        .expect("an answer, not a closed connection");
    let answered_after = stopping.elapsed();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    assert_eq!(
        answer.text().await.expect("body"),
        "ferroserve is shutting down\n"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&answered_after),
        "answered {answered_after:?} after SIGTERM, with a 1 s grace"
    );

    let status = stopped.await.expect("no panic");
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(6),
        "exited {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert!(!process_exists(worker), "the worker {worker} was stopped");
}

/// Reads one response (headers and a `Content-Length` body) from a keep-alive connection.
async fn read_one(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_default();
            if raw.len() >= end + 4 + length {
                return head;
            }
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_as_the_server_stops_is_answered_with_connection_close_and_healthz_says_503()
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = spawn_cli(
        "backends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {route: /echo, backend: echo}\n",
    );
    let request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let first = read_one(&mut stream).await;
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");

    // SIGTERM; once the listener is gone the server is stopping, and this connection is idle.
    let (addr, pid) = (server.addr, server.child.id().to_string());
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // A request already on its way then is answered, and told the connection ends; the
    // liveness probe says the server is draining.
    stream
        .write_all(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let second = read_one(&mut stream).await;
    assert!(second.starts_with("http/1.1 503"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    let mut rest = Vec::new();
    let n = stream
        .read_to_end(&mut rest)
        .await
        .expect("read to the end");
    assert_eq!(n, 0, "closed after the answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait works") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.code(), Some(0));
}
