//! The loader against mutated app files: a fixed-seed mutation loop (100,000 files) that must
//! end in `Ok` or a located error every time, never a panic, an abort or a hang, and the
//! inputs that once broke it as regression tests.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::AppConfig;
use crate::config::ModelOnly as Names;

/// Every key the loader knows, in one file.
const FULL: &str = "\
http:
  host: 127.0.0.1
  port: 8000
  middlewares:
    - request_id: {}
    - cors: {allow_origins: [\"*\"], allow_methods: [GET, post], allow_headers: [x-a], allow_credentials: true, max_age: 600, expose_headers: [x-b]}
    - compression: {}
    - timeout: 30
    - body_limit: 1048576
backends:
  echo: {builtin: echo, num_replicas: 2, max_concurrent_queries: 8, max_queued_requests: 10}
  model: {rust: model, max_batch_size: 8, batch_wait_timeout_ms: 5, init_args: [1, 2], user_config: {a: 1}}
  hello:
    builtin: static
    init_args: {body: hi}
  counter:
    python: stateful:Counter
    working_dir: .
    python_executable: python3
    env: {MODEL: small}
    start_timeout_s: 2.5
endpoints:
  api:
    route: /api
    methods: [GET, POST]
    traffic: {echo: 0.25, model: 0.75}
    shadow: {hello: 0.1}
  inner: {backend: counter}
";

const SEEDS: [&str; 5] = [
    FULL,
    include_str!("../../../../../examples/hello.yaml"),
    include_str!("../../../../../examples/cors.yaml"),
    include_str!("../../../../../examples/embedded.yaml"),
    include_str!("../../../../../examples/python/app.yaml"),
];

/// Numbers and scalars that have broken parsers and converters before.
const INTERESTING: [&str; 28] = [
    "0",
    "-1",
    "1e20",
    "-1e20",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775808",
    "4294967296",
    "2147483647",
    "65536",
    "1e308",
    "1e-320",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "0o777",
    "~",
    "null",
    "true",
    "''",
    "[]",
    "{}",
    "&a [*a]",
    "*nope",
    "!!binary aGk=",
    "\"\\uD800\"",
];

/// One mutation of `source`, chosen by `rng`.
fn mutate(rng: &mut fastrand::Rng, source: &str) -> String {
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let at = rng.usize(..lines.len());
    match rng.u8(..8) {
        // A value becomes an interesting scalar.
        0 | 1 => {
            let line = &lines[at];
            if let Some(colon) = line.find(": ") {
                let value = INTERESTING[rng.usize(..INTERESTING.len())];
                lines[at] = format!("{}: {value}", &line[..colon]);
            }
        }
        // A number anywhere becomes an interesting one.
        2 => {
            let line = &lines[at];
            if let Some(start) = line.find(|c: char| c.is_ascii_digit()) {
                let end = line[start..]
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .map_or(line.len(), |e| start + e);
                let value = INTERESTING[rng.usize(..12)];
                lines[at] = format!("{}{value}{}", &line[..start], &line[end..]);
            }
        }
        3 => {
            let copy = lines[at].clone();
            lines.insert(rng.usize(..=lines.len()), copy);
        }
        4 => {
            lines.remove(at);
        }
        5 => {
            let other = rng.usize(..lines.len());
            lines.swap(at, other);
        }
        // A byte of YAML's syntax lands somewhere.
        6 => {
            let line = &mut lines[at];
            let special = b": -[]{},#&*!|>'\"%@`\t?";
            let byte = char::from(special[rng.usize(..special.len())]);
            let mut chars: Vec<char> = line.chars().collect();
            let pos = rng.usize(..=chars.len());
            chars.insert(pos, byte);
            *line = chars.into_iter().collect();
        }
        // Deep nesting.
        _ => {
            let depth = rng.usize(1..2000);
            lines[at] = format!(
                "{}{}{}",
                lines[at],
                "[".repeat(depth),
                "]".repeat(rng.usize(..=depth))
            );
        }
    }
    lines.join("\n")
}

/// Loads `source`: whether it was accepted (panics only if the loader did).
fn load(source: &str) -> bool {
    AppConfig::from_yaml(source, "app.yaml", &Names).is_ok()
}

#[test]
fn a_hundred_thousand_mutated_files_never_panic_abort_or_hang() {
    const FILES: usize = 100_000;
    let (done, finished) = mpsc::channel();
    // On a thread, so that a hang fails the test instead of stalling it.
    let fuzz = std::thread::Builder::new()
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let mut rng = fastrand::Rng::with_seed(0x5eed_f022);
            let mut slowest = Duration::ZERO;
            let mut accepted = 0;
            for i in 0..FILES {
                let seed = SEEDS[i % SEEDS.len()];
                let mut source = mutate(&mut rng, seed);
                for _ in 0..rng.usize(..3) {
                    source = mutate(&mut rng, &source);
                }
                let started = Instant::now();
                match std::panic::catch_unwind(|| load(&source)) {
                    Ok(ok) => accepted += usize::from(ok),
                    Err(_) => {
                        let _ = done.send(Err(source));
                        return;
                    }
                }
                slowest = slowest.max(started.elapsed());
            }
            let _ = done.send(Ok((slowest, accepted)));
        })
        .expect("a thread");
    match finished.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok((slowest, accepted))) => {
            assert!(
                slowest < Duration::from_secs(1),
                "one file took {slowest:?}"
            );
            // Both ways are exercised: the mutations reach the checks past the parser.
            assert!(
                (FILES / 20..FILES * 19 / 20).contains(&accepted),
                "{accepted} of {FILES} accepted"
            );
        }
        Ok(Err(source)) => panic!("the loader panicked on:\n{source}"),
        Err(_) => panic!("the loader hung (no result after 300 s)"),
    }
    fuzz.join().expect("the fuzz thread ends");
}

/// The files that panicked, aborted or hung the loader or the server before the limits.
#[test]
fn what_broke_it_once_is_refused_with_the_key_and_range() {
    let cases = [
        (
            "http:\n  middlewares:\n    - timeout: 1e20\n",
            "http.middlewares[0]",
        ),
        (
            "backends:\n  a:\n    python: m:C\n    start_timeout_s: 9223372036854775807\n",
            "backends.a.start_timeout_s",
        ),
        (
            "backends:\n  a:\n    builtin: echo\n    num_replicas: 9223372036854775807\n",
            "backends.a.num_replicas",
        ),
        (
            "backends:\n  a:\n    builtin: echo\n    num_replicas: 4294967296\n",
            "backends.a.num_replicas",
        ),
        (
            "backends:\n  a:\n    builtin: echo\n    num_replicas: 2147483647\n",
            "backends.a.num_replicas",
        ),
        (
            "backends:\n  a:\n    builtin: echo\n    max_queued_requests: 18446744073709551615\n",
            "backends.a.max_queued_requests",
        ),
        (
            "backends:\n  a:\n    builtin: echo\n    batch_wait_timeout_ms: 18446744073709551615\n",
            "backends.a.batch_wait_timeout_ms",
        ),
    ];
    for (source, key) in cases {
        let err = AppConfig::from_yaml(source, "app.yaml", &Names).expect_err(source);
        assert_eq!(err.key, key, "{err}");
        assert!(err.line > 0, "{err}");
        assert!(
            err.message.contains("between") || err.message.contains("at most"),
            "the error names the range: {err}"
        );
    }
}
