//! Connections stay available whatever slow clients do: 2,000 slowloris connections against
//! a server limited to 1,024 file descriptors, while a normal client sends requests.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{client, ferroserve_bin, slow_client, spawn_listening, write_config};

/// The header timeout the server runs with here (10 s by default; shorter to keep the
/// test short).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_CLIENTS: usize = 2000;

const APP: &str = "\
http:
  header_timeout_s: 2
backends:
  echo: {builtin: echo}
endpoints:
  echo: {route: /echo, backend: echo}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_shut_out_a_normal_client() {
    // This test process needs more than 2,000 descriptors itself.
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise the test's fd limit");
    assert!(
        soft >= 4096,
        "the test needs 4096 file descriptors, has {soft}"
    );
    let (dir, path) = write_config(APP);
    let server = spawn_listening(
        Path::new("prlimit"),
        &[
            "--nofile=1024:1024",
            ferroserve_bin().to_str().expect("utf-8 path"),
            "run",
            path.to_str().expect("utf-8 path"),
            "--port",
            "0",
        ],
        // The attack runs in this process, on the server's own 2 cores: with its default
        // of half the CPUs (1 thread here) the server would get a third of the machine,
        // and this measures the defence, not the CPU share. One thread is measured in
        // docs/RELIABILITY.md (every request answered; p99 from 57 ms to 4 s).
        &[("FERROSERVE_THREADS", "2")],
        Some(dir),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(server.addr, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = client();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    while started.elapsed() < HEADER_TIMEOUT * 3 {
        let sent = Instant::now();
        let answer =
            tokio::time::timeout(Duration::from_secs(5), http.get(server.url("/echo")).send())
                .await;
        latencies.push(sent.elapsed());
        match answer {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => failures.push(r.status().to_string()),
            Ok(Err(e)) => failures.push(format!("{e:?}")),
            Err(_) => failures.push("no answer in 5 s".to_owned()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut lifetimes = Vec::new();
    for client in slow {
        lifetimes.extend(client.await.expect("no panic"));
    }

    latencies.sort();
    let total = latencies.len();
    let p99 = latencies[total * 99 / 100];
    let ok = total - failures.len();
    lifetimes.sort();
    let n = lifetimes.len();
    eprintln!(
        "normal client: {ok}/{total} 2xx, p50 {:?}, p99 {p99:?}; slow connections closed: {n}, p50 {:?} p90 {:?} p99 {:?} max {:?}",
        latencies[total / 2],
        lifetimes[n / 2],
        lifetimes[n * 9 / 10],
        lifetimes[n * 99 / 100],
        lifetimes[n - 1]
    );
    assert!(
        ok * 100 >= total * 99,
        "{ok} of {total} succeeded; failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    // Slow connections are closed within the header timeout: most far sooner, dropped to
    // make room at the cap. Seen from the client, a connection's life also includes its wait
    // in the listen backlog, at most about one timeout more.
    assert!(n >= SLOW_CLIENTS, "{n} closed");
    assert!(
        lifetimes[n * 99 / 100] <= HEADER_TIMEOUT + Duration::from_secs(1),
        "p99 of slow connections' lives: {:?}",
        lifetimes[n * 99 / 100]
    );
    assert!(
        lifetimes[n - 1] <= HEADER_TIMEOUT * 2 + Duration::from_secs(1),
        "a slow connection lived {:?}",
        lifetimes[n - 1]
    );
    let log = server.stderr.lock().expect("lock").clone();
    let accept_errors = log.matches("accept failed").count();
    assert!(
        accept_errors <= 10,
        "accept errors are logged at most once a second: {accept_errors}"
    );
}
