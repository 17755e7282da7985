//! Scenarios of hostile input: slow clients, bad HTTP, mutated app files, a worker that
//! breaks the frame protocol.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::common::{
    client, ferroserve_bin, slow_client, spawn_cli, spawn_listening, write_config,
};
use super::kit::{Rng, Tally, ms, pct, python_dir, report, rss_kb, send_garbage, timed};

const ECHO: &str = "\
backends:
  echo: {builtin: echo}
endpoints:
  echo: {route: /echo, methods: [GET, POST], backend: echo}
";

/// 2,000 slowloris connections against a server limited to 1,024 descriptors, with the
/// default 10 s header timeout, while a normal client sends requests for 15 s.
pub(crate) async fn slowloris(scenario: &str) {
    const SLOW: usize = 2000;
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise the test's fd limit");
    assert!(
        soft >= 4096,
        "the scenario needs 4096 descriptors, has {soft}"
    );
    let (dir, path) = write_config(ECHO);
    let bin = ferroserve_bin();
    let args = [
        "--nofile=1024:1024",
        bin.to_str().expect("utf-8 path"),
        "run",
        path.to_str().expect("utf-8 path"),
        "--port",
        "0",
    ];
    // The attack shares the server's 2 cores: 2 server threads, as in tests/slowloris.rs.
    let threads = [("FERROSERVE_THREADS", "2")];
    let server = spawn_listening(Path::new("prlimit"), &args, &threads, Some(dir));
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_client(server.addr, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = client();
    let (mut latencies, mut failures) = (Vec::new(), Tally::default());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let o = timed(http.get(server.url("/echo"))).await;
        latencies.push(o.latency);
        if o.status != 200 {
            failures.add(&format!("{} {}", o.status, o.body.trim()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut lives = Vec::new();
    for s in slow {
        lives.extend(s.await.expect("no panic"));
    }
    let total = latencies.len();
    let ok = total - failures.items().iter().map(|(_, n)| n).sum::<usize>();
    let p99 = pct(&mut latencies, 99);
    let longest = lives.iter().max().copied().unwrap_or_default();
    let log = server.stderr.lock().expect("lock").clone();
    let accept_errors = log.matches("accept failed").count();
    let figures = format!(
        "normal client {ok}/{total} 2xx ({:.1} %), p50 {}, p99 {}; {} slow connections closed, life p50 {:.2?} p99 {:.2?} longest {longest:.2?}; {accept_errors} accept-error log lines",
        ok as f64 * 100.0 / total.max(1) as f64,
        ms(pct(&mut latencies, 50)),
        ms(p99),
        lives.len(),
        pct(&mut lives, 50),
        pct(&mut lives, 99),
    );
    report(
        scenario,
        "2,000 slowloris connections (a header byte every 500 ms, reconnecting) against the server under `prlimit --nofile=1024:1024`, default 10 s header timeout; a normal client for 15 s",
        &figures,
        &[
            (
                ok * 100 >= total * 99,
                format!("normal client failures: {}", failures.show()),
            ),
            (
                p99 < Duration::from_millis(100),
                format!("normal client p99 {p99:?}"),
            ),
            (
                lives.len() >= SLOW,
                format!("only {} slow connections closed", lives.len()),
            ),
            (
                longest <= Duration::from_secs(21),
                format!("a slow connection lived {longest:?}"),
            ),
            (
                accept_errors <= 20,
                format!("{accept_errors} accept-error lines"),
            ),
        ],
    );
}

/// One malformed request, and its kind.
fn bad_request(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let head = |extra: &str| format!("POST /echo HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    match rng.below(4) {
        0 => {
            let n = 1 + rng.below(2048);
            ("garbage", rng.bytes(n))
        }
        1 => {
            let n = 1 + rng.below(8);
            let method = String::from_utf8_lossy(&rng.bytes(n)).into_owned();
            let lines = [
                "GET\r\n\r\n".to_owned(),
                "GET /echo HTTP/9.9\r\nHost: x\r\n\r\n".to_owned(),
                "G\0T /echo HTTP/1.1\r\n\r\n".to_owned(),
                "GET /echo\r\nHost: x\r\n\r\n".to_owned(),
                "GET  /echo  HTTP/1.1\r\n\r\n".to_owned(),
                "GET /ec ho HTTP/1.1\r\n\r\n".to_owned(),
                "GET http://[::1 HTTP/1.1\r\n\r\n".to_owned(),
                format!("{method} /echo HTTP/1.1\r\nHost: x\r\n\r\n"),
                format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)),
                "\r\n\r\n\r\n".to_owned(),
                "GET /echo HTTP/1.1\r\nHost x\r\n\r\n".to_owned(),
                "GET /echo HTTP/1.1\r\n Host: x\r\n\r\n".to_owned(),
                "GET /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_owned(),
                "GET /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_owned(),
                "GET /echo HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_owned(),
                "GET /echo HTTP/1.1\r\nX-\u{1}: y\r\n\r\n".to_owned(),
            ];
            let mut bytes = rng.pick(&lines).clone().into_bytes();
            if rng.below(2) == 0 {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            ("malformed line", bytes)
        }
        2 => {
            let bytes = if rng.below(2) == 0 {
                let many: String = (0..101 + rng.below(2000))
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect();
                head(&many).into_bytes()
            } else {
                let big = "v".repeat(100_000 + rng.below(1 << 20));
                head(&format!("X-Big: {big}\r\n")).into_bytes()
            };
            ("oversized headers", bytes)
        }
        _ => {
            let chunked = "Transfer-Encoding: chunked\r\n";
            let bodies = [
                (chunked, "zz\r\nhello\r\n0\r\n\r\n"),
                (chunked, "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
                (chunked, "5\r\nhelloXX0\r\n\r\n"),
                (chunked, "5;\u{1}\u{2}=\"\r\nhello\r\n0\r\n\r\n"),
                (chunked, "3\r\nab"),
                (chunked, "-5\r\nhello\r\n0\r\n\r\n"),
                (
                    "Transfer-Encoding: chunked, gzip\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                ),
                (
                    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                ),
                ("Transfer-Encoding: gzip\r\n", "hello"),
            ];
            let (headers, body) = rng.pick(&bodies);
            let mut bytes = head(headers).into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            if rng.below(3) == 0 {
                let n = rng.below(256);
                bytes.extend(rng.bytes(n));
            }
            ("bad chunked", bytes)
        }
    }
}

/// 10,000 connections sending malformed HTTP (fixed seed), 32 at a time.
pub(crate) async fn bad_http(scenario: &str) {
    const CONNECTIONS: usize = 10_000;
    const AT_ONCE: usize = 50;
    let server = spawn_cli(ECHO);
    let pid = server.child.id();
    let http = client();
    let warm = timed(http.post(server.url("/echo")).body("warm")).await;
    assert_eq!(warm.status, 200);
    let before = rss_kb(pid).expect("the server runs");
    let started = Instant::now();
    let tasks: Vec<_> = (0..AT_ONCE)
        .map(|t| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut rng = Rng::new(0xbad_4770 + t as u64);
                let (mut by_answer, mut by_kind) = (Tally::default(), Tally::default());
                for _ in 0..CONNECTIONS / AT_ONCE {
                    let (kind, payload) = bad_request(&mut rng);
                    let answer = send_garbage(
                        addr,
                        &payload,
                        Duration::from_millis(200),
                        Duration::from_secs(15),
                    )
                    .await;
                    by_kind.add(&format!("{kind}: {answer}"));
                    by_answer.add(&answer);
                }
                (by_answer, by_kind)
            })
        })
        .collect();
    let (mut answers, mut kinds) = (Tally::default(), Tally::default());
    for t in tasks {
        let (a, k) = t.await.expect("no panic");
        answers.merge(a);
        kinds.merge(k);
    }
    let elapsed = started.elapsed();
    let after_ok = timed(http.post(server.url("/echo")).body("still here")).await;
    let after = rss_kb(pid).unwrap_or_default();
    let server_errors: Vec<_> = answers
        .items()
        .iter()
        .filter(|(l, _)| l.starts_with('5') || l.starts_with("no answer"))
        .collect();
    println!("bad HTTP, by kind: {}", kinds.show());
    let figures = format!(
        "{} connections in {elapsed:.1?}: {}; then a normal request: {}; server RSS {:.1} MB before, {:.1} MB after",
        answers.items().iter().map(|(_, n)| n).sum::<usize>(),
        answers.show(),
        after_ok.status,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    report(
        scenario,
        "10,000 connections (50 at a time), each sending random bytes, a malformed request line or header, oversized headers (101-2,100 headers, or one of 100 kB-1.1 MB) or a bad chunked body; half-closing if no whole answer came within 200 ms",
        &figures,
        &[
            (
                after_ok.status == 200,
                format!("after: {} {}", after_ok.status, after_ok.body),
            ),
            (
                server_errors.is_empty(),
                format!("5xx or no answer: {server_errors:?}"),
            ),
            (
                after <= before + 50 * 1024,
                format!("RSS grew by {} kB", after.saturating_sub(before)),
            ),
        ],
    );
}

/// Numbers and scalars that have broken loaders before (as `config/yaml/fuzz.rs`).
const INTERESTING: [&str; 16] = [
    "0",
    "-1",
    "1e20",
    "9223372036854775808",
    "18446744073709551616",
    "4294967296",
    "2147483647",
    "1e308",
    ".nan",
    "-.inf",
    "~",
    "''",
    "[]",
    "{}",
    "&a [*a]",
    "*nope",
];

/// One mutation of an app file: an interesting value, a syntax character, a deleted or
/// duplicated line.
fn mutate(rng: &mut Rng, source: &str) -> String {
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    let at = rng.below(lines.len());
    match rng.below(5) {
        0 | 1 => {
            if let Some(colon) = lines[at].find(": ") {
                lines[at] = format!("{}: {}", &lines[at][..colon], rng.pick(&INTERESTING));
            }
        }
        2 => {
            let line = lines[at].clone();
            lines.insert(rng.below(lines.len() + 1), line);
        }
        3 => {
            lines.remove(at);
        }
        _ => {
            let special = b": -[]{},#&*!|>'\"%@`\t?";
            let byte = char::from(*rng.pick(special));
            let mut chars: Vec<char> = lines[at].chars().collect();
            chars.insert(rng.below(chars.len() + 1), byte);
            lines[at] = chars.into_iter().collect();
        }
    }
    lines.join("\n")
}

/// `ferroserve check` on `path` with a 5 s limit: how it ended.
fn check(path: &Path) -> String {
    let err = path.with_extension("err");
    let mut child = Command::new(ferroserve_bin())
        .arg("check")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("an error file"))
        .spawn()
        .expect("ferroserve runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            return "timeout".to_owned();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    match status.code() {
        Some(0) => "ok".to_owned(),
        Some(1) if stderr.lines().any(|l| l.starts_with("error: ")) => "refused".to_owned(),
        Some(code) => format!("exit {code} without `error:`"),
        None => format!("killed by a signal: {status}"),
    }
}

/// `ferroserve check` on 300 mutated app files.
pub(crate) fn config_fuzz(scenario: &str) {
    const FILES: usize = 300;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<String> = [
        "hello.yaml",
        "cors.yaml",
        "embedded.yaml",
        "python/app.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join("examples").join(f)).expect("an example"))
    .collect();
    // The Python modules next to the files, so that imports can succeed.
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(python_dir()).expect("examples/python") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a name").to_owned();
        if path.extension().is_some_and(|e| e == "py") && name != "slow_import.py" {
            std::fs::copy(&path, dir.path().join(name)).expect("copied");
        }
    }
    let mut rng = Rng::new(0xc0_f16);
    let files: Vec<_> = (0..FILES)
        .map(|i| {
            let mut source = mutate(&mut rng, &seeds[i % seeds.len()]);
            for _ in 0..rng.below(3) {
                source = mutate(&mut rng, &source);
            }
            let path = dir.path().join(format!("app{i}.yaml"));
            std::fs::write(&path, source).expect("written");
            path
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(String, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(FILES / 2)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| {
                            let t = Instant::now();
                            (check(p), t.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("no panic"))
            .collect()
    });
    let mut tally = Tally::default();
    results.iter().for_each(|(r, _)| tally.add(r));
    let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
    let bad = FILES - tally.get("ok") - tally.get("refused");
    report(
        scenario,
        "`ferroserve check` (with Python imports) on 300 mutated app files from examples/*.yaml and examples/python/app.yaml (overflowing numbers, YAML syntax characters, deleted and duplicated lines; fixed seed), 5 s limit each",
        &format!(
            "{}; slowest {slowest:.2?}; {:.1?} in all",
            tally.show(),
            started.elapsed()
        ),
        &[(
            bad == 0,
            format!("{bad} runs neither exit 0 nor exit 1 with `error:`"),
        )],
    );
}

/// 50 calls of `rogue.py`'s `fuzz_frames`, each breaking the frame stream its own way: 5
/// on each of 10 one-replica backends, round-robin (a backend's restarts back off: 0.1 s,
/// doubling with each death in the last minute), while a client per backend calls its
/// plain method every 5 ms.
pub(crate) async fn worker_protocol_fuzz(scenario: &str) {
    const BACKENDS: usize = 10;
    const ROUNDS: usize = 5;
    let dir = python_dir();
    let (mut backends, mut endpoints) = (String::new(), String::new());
    for b in 0..BACKENDS {
        backends += &format!(
            "  rogue{b}: {{python: 'rogue:Rogue', working_dir: '{}'}}\n",
            dir.display()
        );
        endpoints += &format!("  rogue{b}: {{route: /rogue{b}, backend: rogue{b}}}\n");
    }
    let mut server = spawn_cli(&format!("backends:\n{backends}endpoints:\n{endpoints}"));
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    // Each backend's plain caller: (status, when) of every call.
    let callers: Vec<_> = (0..BACKENDS)
        .map(|b| {
            let (http, url, stop) = (
                http.clone(),
                server.url(&format!("/rogue{b}")),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let o = timed(http.get(&url)).await;
                    seen.push((o.status, o.at));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    let (mut fuzzed, mut reasons) = (Tally::default(), Tally::default());
    let started = Instant::now();
    for round in 0..ROUNDS {
        for b in 0..BACKENDS {
            let url = server.url(&format!("/rogue{b}"));
            let down = Instant::now();
            while timed(http.get(&url)).await.status != 200 {
                assert!(
                    down.elapsed() < Duration::from_secs(60),
                    "rogue{b} not restarted"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let seed = round * BACKENDS + b;
            let request = http
                .get(format!("{url}?seed={seed}"))
                .header("X-SERVE-CALL-METHOD", "fuzz_frames");
            let o = timed(request).await;
            fuzzed.add(&o.status.to_string());
            reasons.add(&if o.body.contains("over the limit") {
                "a frame over a limit".to_owned()
            } else if o.body.contains("early eof") {
                "the stream ended inside a frame".to_owned()
            } else if o.body.contains("process died") {
                "the worker exited".to_owned()
            } else {
                format!("other: {}", o.body.trim())
            });
        }
    }
    // The last deaths' restarts too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (mut statuses, mut outages) = (Tally::default(), Vec::new());
    for caller in callers {
        let mut down_since = None;
        for (status, at) in caller.await.expect("no panic") {
            statuses.add(&status.to_string());
            match (status, down_since) {
                (200, Some(since)) => {
                    outages.push(at.duration_since(since));
                    down_since = None;
                }
                (200, None) => {}
                (_, None) => down_since = Some(at),
                (_, Some(_)) => {}
            }
        }
    }
    let alive = server.child.try_wait().expect("wait works").is_none();
    let after = timed(http.get(server.url("/rogue0"))).await;
    let log = server.stderr.lock().expect("lock").clone();
    let killed = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("restarting it"))
        .count();
    let unexpected = statuses
        .items()
        .iter()
        .any(|(s, _)| !["200", "502", "503"].contains(&s.as_str()));
    let figures = format!(
        "fuzzing calls answered {}; why: {}; {killed} worker deaths logged; outages seen by the plain callers: {}, p50 {} max {} (restart backoff included); plain callers got {}; {elapsed:.1?} in all; server alive: {alive}, then answers {}",
        fuzzed.show(),
        reasons.show(),
        outages.len(),
        ms(pct(&mut outages, 50)),
        ms(pct(&mut outages, 100)),
        statuses.show(),
        after.status,
    );
    report(
        scenario,
        "50 calls (5 on each of 10 one-replica Python backends) of a method that writes random frames (random kinds, ids no call has, non-JSON meta), then random bytes, a header over a limit or a truncated frame, to its worker's socket; a client per backend calling its plain method every 5 ms",
        &figures,
        &[
            (
                fuzzed.get("502") == BACKENDS * ROUNDS,
                format!("fuzzing calls: {}", fuzzed.show()),
            ),
            (
                killed == BACKENDS * ROUNDS,
                format!("{killed} worker deaths logged"),
            ),
            (
                !unexpected,
                format!("plain callers got {}", statuses.show()),
            ),
            (
                alive && after.status == 200,
                "the server does not serve afterwards".to_owned(),
            ),
        ],
    );
}
