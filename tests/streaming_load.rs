//! 1,000 concurrent streams of 1,000 chunks each, from one Python worker, through the real
//! `ferroserve` binary: every byte arrives, and the server's memory stays bounded while
//! the clients pause half-way (the generators wait for them; nothing piles up in the
//! server).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Process, spawn_cli};

const STREAMS: usize = 1000;
const CHUNKS: usize = 1000;
const CHUNK: usize = 1024;

fn app() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");
    format!(
        "backends:
  streamer:
    python: streaming:Streamer
    working_dir: {dir}
    max_concurrent_queries: {STREAMS}
endpoints:
  streamer: {{route: /stream, backend: streamer}}
"
    )
}

/// The server's resident memory, in kB.
fn rss_kb(server: &Process) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_of_a_thousand_chunks_keep_memory_bounded() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let server = spawn_cli(&app());
    let url = server.url(&format!("/stream?n={CHUNKS}&size={CHUNK}"));
    let idle = rss_kb(&server);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let received = Arc::new(AtomicU64::new(0));
    let started_all = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (http, url, received, started_all) = (
            http.clone(),
            url.clone(),
            received.clone(),
            started_all.clone(),
        );
        clients.spawn(async move {
            let mut response = http
                .get(&url)
                .header("X-SERVE-CALL-METHOD", "sized")
                .send()
                .await
                .map_err(|e| format!("headers: {e:?}"))?;
            assert_eq!(response.status(), 200);
            let mut bytes = 0usize;
            let first = response
                .chunk()
                .await
                .map_err(|e| format!("first chunk: {e:?}"))?;
            bytes += first.map_or(0, |c| c.len());
            // Every client pauses with its stream open until all have started.
            started_all.wait().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| format!("after {bytes} bytes: {e:?}"))?
            {
                bytes += chunk.len();
            }
            received.fetch_add(bytes as u64, Ordering::Relaxed);
            Ok::<usize, String>(bytes)
        });
    }
    // Memory while every stream is open and no client reads.
    tokio::time::timeout(Duration::from_secs(90), started_all.wait())
        .await
        .expect("every stream started within 90 s");
    let mut peak = rss_kb(&server);
    let mut sampling = tokio::time::interval(Duration::from_millis(100));
    while !clients.is_empty() {
        tokio::select! {
            joined = clients.join_next() => {
                match joined.expect("a client").expect("a client finished") {
                    Ok(bytes) => assert_eq!(bytes, CHUNKS * CHUNK, "a stream lost bytes"),
                    Err(e) => {
                        let said = server.stderr.lock().expect("lock").clone();
                        let tail: Vec<&str> = said.lines().rev().take(20).collect();
                        panic!("a stream failed: {e}\nthe server's last lines, newest first:\n{}", tail.join("\n"));
                    }
                }
            }
            _ = sampling.tick() => peak = peak.max(rss_kb(&server)),
        }
    }
    let took = started.elapsed();
    let total = received.load(Ordering::Relaxed);
    assert_eq!(total, (STREAMS * CHUNKS * CHUNK) as u64);
    eprintln!(
        "{STREAMS} streams x {CHUNKS} chunks of {CHUNK} B: {:.0} MB in {took:.1?}; \
         server RSS {} MB idle, {} MB at peak",
        total as f64 / 1e6,
        idle / 1024,
        peak / 1024
    );
    // A gigabyte went through; the server held a small part of it at any time.
    assert!(
        peak < idle + 150 * 1024,
        "peak RSS {peak} kB against {idle} kB idle"
    );
}
