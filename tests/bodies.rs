//! Memory stays bounded whatever a client sends: a body over `max_body_bytes` (64 MiB by
//! default) is refused with 413 while it is still arriving, never buffered whole.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Process, client, spawn_cli, status_and_text};

const APP: &str = "\
backends:
  echo: {builtin: echo}
endpoints:
  echo: {route: /echo, methods: [POST], backend: echo}
  small: {route: /small, methods: [POST], backend: echo, max_body_bytes: 16}
";

/// A `VmRSS`/`VmHWM` line of the process's status, in kB.
fn memory_kb(server: &Process, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory line")
}

/// Sends a request head, then `chunk` again and again (as the body) until the server
/// answers or `limit` bytes have gone; the server's status line.
async fn push_body(server: &Process, head: &str, chunk: &[u8], limit: u64) -> String {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = stream.into_split();
    let chunk = chunk.to_vec();
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < limit {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(60), read.read(&mut answer))
        .await
        .expect("an answer before the body ends")
        .expect("readable");
    writer.abort();
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_endless_bodies_leave_memory_near_idle() {
    let server = spawn_cli(APP);
    let idle = memory_kb(&server, "VmRSS:");

    // 1 GB declared: refused from its Content-Length, before a byte of it is read.
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n";
    let status = push_body(&server, head, &[b'x'; 65536], 1 << 30).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");

    // A chunked body that never ends: cut off once 64 MiB have arrived.
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut chunk = format!("{:x}\r\n", 65536).into_bytes();
    chunk.extend_from_slice(&[b'y'; 65536]);
    chunk.extend_from_slice(b"\r\n");
    let status = push_body(&server, head, &chunk, 4 << 30).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");

    let peak = memory_kb(&server, "VmHWM:");
    assert!(
        peak < idle + 100 * 1024,
        "peak RSS {peak} kB against {idle} kB idle"
    );
    // And it still serves.
    let (status, _) = status_and_text(client().post(server.url("/echo")).body("fine")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_endpoint_can_set_its_own_limit() {
    let server = spawn_cli(APP);
    let http = client();
    let (status, reason) =
        status_and_text(http.post(server.url("/small")).body("x".repeat(17))).await;
    assert_eq!(status, 413);
    assert_eq!(
        reason,
        "the request body is larger than the 16 bytes allowed here\n"
    );
    let (status, _) = status_and_text(http.post(server.url("/small")).body("x".repeat(16))).await;
    assert_eq!(status, 200);
    // A chunked body that passes the limit on its third chunk, and never ends: answered
    // 413 while it is still arriving. (Raw, and nothing sent past what the server reads:
    // a client still writing when the server closes may see a reset before the answer.)
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunks = "8\r\nzzzzzzzz\r\n".repeat(3);
    stream
        .write_all(format!("{head}{chunks}").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered before 10 s")
        .expect("readable");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (status, _) = status_and_text(http.post(server.url("/echo")).body("x".repeat(17))).await;
    assert_eq!(status, 200, "the default limit is 64 MiB");
}

#[tokio::test]
async fn a_stalled_body_gets_408_after_the_body_timeout() {
    let server = spawn_cli(
        "http:\n  body_timeout_s: 0.5\nbackends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {route: /echo, methods: [POST], backend: echo}\n",
    );
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf!";
    stream.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered and closed before 10 s")
        .expect("readable");
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    assert!(
        answer.ends_with("the request body stalled: nothing arrived for 0.5s\n"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
}
