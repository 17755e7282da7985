//! Scenarios under load: overload, a killed worker, SIGTERM, and the soak.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

use super::common::{client, spawn_cli};
use super::kit::{
    RawAnswer, Tally, children, closed_loop, ms, open_loop, pct, python_dir, raw_request, report,
    rss_kb,
};

/// The overload backend: `nap` sleeps this long, `MCQ` at a time, `QUEUE` more waiting.
const SERVICE: Duration = Duration::from_millis(10);
const MCQ: usize = 4;
const QUEUE: usize = 8;

/// One Python replica whose `nap` takes [`SERVICE`], offered `factor` times what it serves
/// (measured first) by open-loop clients for 10 s.
pub(crate) async fn overload(scenario: &str, factor: f64) {
    let yaml = format!(
        "backends:\n  nap: {{python: 'rogue:Rogue', working_dir: '{}', max_concurrent_queries: {MCQ}, max_queued_requests: {QUEUE}}}\n\
         endpoints:\n  nap: {{route: /nap, backend: nap}}\n",
        python_dir().display()
    );
    let server = spawn_cli(&yaml);
    let http = client();
    let url = format!("{}?ms={}", server.url("/nap"), SERVICE.as_millis());
    let nap = {
        let (http, url) = (http.clone(), url.clone());
        move || http.get(&url).header("X-SERVE-CALL-METHOD", "nap")
    };
    // Capacity: as many closed loops as the replica runs at once, for 3 s (after 1 s of warm-up).
    let calibrate = |seconds| {
        let nap = nap.clone();
        closed_loop(
            MCQ,
            move |_| nap(),
            Duration::ZERO,
            sleep(Duration::from_secs(seconds)),
        )
    };
    calibrate(1).await;
    let measured = calibrate(3).await;
    let capacity = measured.iter().filter(|o| o.status == 200).count() as f64 / 3.0;
    let run = Duration::from_secs(10);
    let outcomes = open_loop(capacity * factor, run, nap).await;

    let (mut ok, mut shed, mut errors) = (Vec::new(), Vec::new(), Tally::default());
    for o in &outcomes {
        match (o.status, o.retry_after) {
            (200, _) => ok.push(o.latency),
            (503, true) => shed.push(o.latency),
            (status, _) => errors.add(&format!("{status} {}", o.body.trim())),
        }
    }
    let total = outcomes.len();
    let served_rate = ok.len() as f64 / run.as_secs_f64();
    let shed_p99 = pct(&mut shed, 99);
    let bound = SERVICE * QUEUE as u32 / 2;
    let figures = format!(
        "capacity {capacity:.0} req/s; offered {:.0} req/s ({total} requests); served {served_rate:.0} req/s ({} 2xx, p50 {}, p99 {}); \
         shed {:.1} % with 503 + Retry-After (p50 {}, p99 {}); other answers {}",
        capacity * factor,
        ok.len(),
        ms(pct(&mut ok, 50)),
        ms(pct(&mut ok, 99)),
        shed.len() as f64 * 100.0 / total.max(1) as f64,
        ms(pct(&mut shed, 50)),
        ms(shed_p99),
        errors.items().iter().map(|(_, n)| n).sum::<usize>(),
    );
    report(
        scenario,
        &format!(
            "open-loop load at {factor}x the measured capacity for 10 s; one Python replica, `async def` sleeping {} ms, max_concurrent_queries {MCQ}, max_queued_requests {QUEUE}",
            SERVICE.as_millis()
        ),
        &figures,
        &[
            (
                errors.items().is_empty(),
                format!(
                    "answers other than 200 or 503 + Retry-After: {}",
                    errors.show()
                ),
            ),
            (
                shed_p99 < bound,
                format!("p99 of the 503s {shed_p99:?}, not under {bound:?}"),
            ),
            (
                served_rate >= capacity * 0.8,
                format!("served {served_rate:.0} req/s of a capacity of {capacity:.0}"),
            ),
        ],
    );
}

/// `kill -9` of one of two Python workers while 32 connections send requests.
pub(crate) async fn kill_worker(scenario: &str) {
    let yaml = format!(
        "backends:\n  crashy: {{python: 'crashy:Crashy', working_dir: '{}', num_replicas: 2}}\n\
         endpoints:\n  crashy: {{route: /crashy, backend: crashy}}\n",
        python_dir().display()
    );
    let server = spawn_cli(&yaml);
    let server_pid = server.child.id();
    let http = client();
    let url = server.url("/crashy?slow=1");
    let pid_of = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["pid"].as_u64())
    };
    let mut pids = BTreeSet::new();
    while pids.len() < 2 {
        let body = http.get(&url).send().await.expect("an answer");
        pids.extend(pid_of(&body.text().await.expect("a body")));
    }
    let victim = *pids.first().expect("a pid");
    let killed_at = Arc::new(std::sync::OnceLock::new());
    let until = {
        let (killed_at, pids) = (killed_at.clone(), pids.clone());
        async move {
            sleep(Duration::from_millis(500)).await;
            let killed = std::process::Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status()
                .expect("kill runs");
            assert!(killed.success());
            let _ = killed_at.set(Instant::now());
            // Until a new worker runs, then 1 s more.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline
                && children(server_pid)
                    .iter()
                    .all(|p| pids.contains(&u64::from(*p)))
            {
                sleep(Duration::from_millis(20)).await;
            }
            sleep(Duration::from_secs(1)).await;
        }
    };
    let started = Instant::now();
    let outcomes = closed_loop(32, move |_| http.get(&url), Duration::ZERO, until).await;
    let elapsed = started.elapsed();
    let killed_at = *killed_at.get().expect("killed");
    let mut failed = Tally::default();
    let mut back = None;
    for o in &outcomes {
        if o.status != 200 {
            failed.add(&o.status.to_string());
        } else if pid_of(&o.body).is_some_and(|p| !pids.contains(&p)) {
            let at = o.at.saturating_duration_since(killed_at);
            back = Some(back.map_or(at, |b: Duration| b.min(at)));
        }
    }
    let non_2xx: usize = failed.items().iter().map(|(_, n)| n).sum();
    let figures = format!(
        "{non_2xx} non-2xx of {} requests in {elapsed:.1?} ({}); the new worker's first answer {} after the kill",
        outcomes.len(),
        if non_2xx == 0 {
            "none".to_owned()
        } else {
            failed.show()
        },
        back.map_or("never".to_owned(), |b| format!("{b:.2?}")),
    );
    report(
        scenario,
        "kill -9 of one of 2 Python workers (crashy, 5 ms per call) under 32 connections",
        &figures,
        &[
            (non_2xx < 32, format!("{non_2xx} non-2xx")),
            (back.is_some(), "the replica did not come back".to_owned()),
            (
                outcomes.len() > 1000,
                format!("only {} requests", outcomes.len()),
            ),
        ],
    );
}

/// 32 keep-alive connections send requests to a Rust `echo` app; SIGTERM after 2 s.
pub(crate) async fn sigterm_under_load(scenario: &str) {
    let mut server = spawn_cli(
        "backends:\n  echo: {builtin: echo}\nendpoints:\n  echo: {route: /echo, backend: echo}\n",
    );
    let addr = server.addr;
    let termed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let termed = termed.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let request = b"GET /echo HTTP/1.1\r\nHost: chaos\r\n\r\n";
                loop {
                    let Ok(mut stream) = TcpStream::connect(addr).await else {
                        if termed.load(Ordering::SeqCst) {
                            return tally;
                        }
                        tally.add("connect failed before SIGTERM");
                        sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    loop {
                        match raw_request(&mut stream, request).await {
                            RawAnswer::Status(status, close) => {
                                tally.add(&status.to_string());
                                if close {
                                    break;
                                }
                            }
                            RawAnswer::Lost(why) => {
                                tally.add(&format!(
                                    "lost: written on an open connection, then {why}"
                                ));
                                break;
                            }
                            RawAnswer::Unsent(why) => {
                                tally.add(&format!("not sent: {why}"));
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    sleep(Duration::from_secs(2)).await;
    let pid = server.child.id().to_string();
    termed.store(true, Ordering::SeqCst);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let termed_at = Instant::now();
    let mut tally = Tally::default();
    for c in clients {
        tally.merge(c.await.expect("a client does not panic"));
    }
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("wait works") {
            break Some(exit);
        }
        if termed_at.elapsed() > Duration::from_secs(40) {
            break None;
        }
        sleep(Duration::from_millis(5)).await;
    };
    let to_exit = termed_at.elapsed();
    let lost: usize = tally
        .items()
        .iter()
        .filter(|(l, _)| l.starts_with("lost") || l.starts_with("connect failed"))
        .map(|(_, n)| n)
        .sum();
    let others: usize = tally
        .items()
        .iter()
        .filter(|(l, _)| l.parse::<u16>().is_ok_and(|s| s != 200))
        .map(|(_, n)| n)
        .sum();
    let code = exit.and_then(|e| e.code());
    let figures = format!(
        "{}; exit code {}; exited {to_exit:.2?} after SIGTERM",
        tally.show(),
        code.map_or("none (killed or still running)".to_owned(), |c| c
            .to_string()),
    );
    report(
        scenario,
        "SIGTERM to the server while 32 keep-alive connections send requests to a Rust `echo` app (raw HTTP/1.1 clients)",
        &figures,
        &[
            (
                lost == 0,
                format!("{lost} requests sent and never answered"),
            ),
            (others == 0, format!("{others} non-200 answers")),
            (code == Some(0), format!("exit code {code:?}")),
            (
                to_exit < Duration::from_secs(5),
                format!("exit took {to_exit:?}"),
            ),
            (tally.get("200") > 1000, "the load ran".to_owned()),
        ],
    );
}

/// A server with a Rust `echo` and a Python backend under 16 connections for
/// `CHAOS_SOAK_SECONDS` (600 by default), its memory sampled every 10 s.
pub(crate) async fn soak(scenario: &str) {
    let seconds: u64 = std::env::var("CHAOS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let yaml = format!(
        "backends:\n  echo: {{builtin: echo, num_replicas: 2}}\n  py: {{python: 'rogue:Rogue', working_dir: '{}'}}\n\
         endpoints:\n  echo: {{route: /echo, methods: [GET, POST], backend: echo}}\n  py: {{route: /py, backend: py}}\n",
        python_dir().display()
    );
    let server = spawn_cli(&yaml);
    let pid = server.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let http = client();
    let loops: Vec<_> = (0..16)
        .map(|c| {
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            // 12 connections to `echo` with a 1 kB body, 4 to Python (`nap` of 1 ms).
            let request = if c < 12 {
                http.post(server.url("/echo")).body("x".repeat(1024))
            } else {
                http.get(server.url("/py?ms=1"))
                    .header("X-SERVE-CALL-METHOD", "nap")
            };
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = request.try_clone().expect("a cloneable request");
                    let ok = match request.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    let counter = if ok { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    // (seconds in, server RSS, workers' RSS), every 10 s.
    let workers_kb = || children(pid).into_iter().filter_map(rss_kb).sum::<u64>();
    let started = Instant::now();
    let mut samples = vec![(0, rss_kb(pid).expect("the server runs"), workers_kb())];
    while started.elapsed() < Duration::from_secs(seconds) {
        sleep(Duration::from_secs(10)).await;
        let server_kb = rss_kb(pid).unwrap_or_default();
        samples.push((started.elapsed().as_secs(), server_kb, workers_kb()));
        println!(
            "soak: {samples:?}",
            samples = samples.last().expect("a sample")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("a load loop does not panic");
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The baseline: the first sample a minute in (halfway through a shorter run).
    let base_at = 60.min(seconds / 2);
    let &(_, base, base_workers) = samples
        .iter()
        .find(|s| s.0 >= base_at)
        .expect("a baseline sample");
    let &(_, end, end_workers) = samples.last().expect("samples");
    let max = samples.iter().map(|s| s.1).max().unwrap_or_default();
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    let figures = format!(
        "{served} requests served ({:.0} req/s), {failed} failed; server RSS start {}, at {base_at} s {}, end {}, max {}; \
         Python worker RSS at {base_at} s {}, end {}",
        served as f64 / elapsed,
        mb(samples[0].1),
        mb(base),
        mb(end),
        mb(max),
        mb(base_workers),
        mb(end_workers),
    );
    let limit = base + base / 5 + 10 * 1024;
    report(
        scenario,
        &format!(
            "{seconds} s of 16 connections (12 POST 1 kB to a Rust `echo` with 2 replicas, 4 to a Python `async def`; 2 ms pause between requests), RSS sampled every 10 s"
        ),
        &figures,
        &[
            (failed == 0, format!("{failed} requests failed")),
            (
                end <= limit,
                format!("end RSS {} over {}", mb(end), mb(limit)),
            ),
        ],
    );
}
