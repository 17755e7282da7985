//! The benchmark runner: starts each server, drives it with wrk at concurrency 1 and 64 for a
//! fixed time, runs the in-process handle benchmark, and prints one table (also as JSON)
//! with each row's throughput as a ratio of the raw-hyper row of the same run.
//!
//! The ONNX rows (issue 13) post Open Inference Protocol v2 requests to ONNX models
//! (`bench/apps/onnx/`), next to ONNX Runtime's own `session.run` time on the same input,
//! measured in the same rounds, and (with `--peers`) the same models in ONNX Runtime's
//! Python API behind uvicorn+Starlette.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use ferroserve_bench::servers::{Server, bin_dir, free_port};
use serde::Serialize;

/// Ferroserve's load benchmark against a raw-hyper baseline (and, with --peers, Ray Serve
/// and uvicorn+Starlette), in one run.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    timing: ferroserve_bench::Timing,
    /// Concurrency levels (open connections, or concurrent handle callers).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Also measure Ray Serve and uvicorn+Starlette (needs --python with them installed).
    #[arg(long)]
    peers: bool,
    /// The Python that runs the peers and the Python rows.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Only rows whose name contains one of these words (the raw-hyper row always runs).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

/// What wrk sends.
#[derive(Clone)]
enum Load {
    /// GET of a path.
    Get(String),
    /// POST of a body read from a file (an ONNX row's inference request), with a longer
    /// timeout than wrk's 2 s: a queue of 64 requests to a 60 ms model is 4 s long. JSON,
    /// or with `binary` Triton's binary tensor extension, whose JSON header's length is in
    /// the file `BODY.header`.
    Post {
        path: String,
        body: PathBuf,
        binary: bool,
    },
}

impl Load {
    fn path(&self) -> &str {
        match self {
            Self::Get(path) | Self::Post { path, .. } => path,
        }
    }

    /// The `Inference-Header-Content-Length` of a binary request.
    fn header_length(&self) -> anyhow::Result<Option<String>> {
        match self {
            Self::Post {
                body, binary: true, ..
            } => {
                let mut file = body.clone().into_os_string();
                file.push(".header");
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                Ok(Some(text.trim().to_owned()))
            }
            _ => Ok(None),
        }
    }
}

/// How a row's server is run.
enum Target {
    /// A server process on `--port PORT`, ready once GET `ready` answers 200, loaded with
    /// wrk as `load` says.
    Http {
        command: Vec<String>,
        ready: String,
        load: Load,
        startup: Duration,
        /// The shortest measured round, in seconds (a round is `--duration / --rounds`
        /// unless this is longer): a model of 60 ms per inference at 64 connections has
        /// a queue 4 s long, and needs a longer window than a no-op.
        min_round: u64,
    },
    /// The in-process handle benchmark binary.
    Handles,
    /// A command that measures something for `--seconds S` (after `--warmup W`) and prints
    /// JSON numbers like handle-bench's: ONNX Runtime's own run time. Measured at
    /// concurrency 1 only, in the rounds of the HTTP rows.
    Raw { command: Vec<String> },
}

/// The ONNX rows' models (`bench/apps/onnx/make_models.py` writes them).
const ONNX_MODELS: [&str; 3] = ["mlp", "squeezenet", "resnet50"];
/// Where the ONNX rows' models, request bodies and app files are.
const ONNX_DIR: &str = "bench/apps/onnx";

/// How a Ferroserve ONNX row is called.
#[derive(Clone, Copy, PartialEq)]
enum OnnxVariant {
    /// JSON tensors, one run per request.
    Unbatched,
    /// JSON tensors, `max_batch_size: 8`, `batch_wait_timeout_ms: 2`.
    Batched,
    /// Triton's binary tensor extension (input and output), one run per request.
    Binary,
}

fn onnx_row(model: &str, variant: OnnxVariant) -> String {
    match variant {
        OnnxVariant::Unbatched => format!("ferroserve onnx {model}, unbatched"),
        OnnxVariant::Batched => format!("ferroserve onnx {model}, batched (8, 2 ms)"),
        OnnxVariant::Binary => format!("ferroserve onnx {model}, unbatched, binary"),
    }
}

fn onnx_raw_row(model: &str) -> String {
    format!("onnx runtime {model}, raw session.run")
}

fn onnx_peer_row(model: &str) -> String {
    format!("uvicorn+starlette onnx {model}")
}

struct Row {
    name: String,
    target: Target,
    /// Another framework, measured on its own rather than interleaved with ours.
    peer: bool,
}

#[derive(Serialize, Clone)]
struct Measurement {
    name: String,
    concurrency: usize,
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    ratio_vs_raw_hyper: f64,
}

#[derive(Serialize)]
struct Report {
    date: String,
    machine: Machine,
    load_generator: String,
    duration_s: u64,
    rows: Vec<Measurement>,
    latency_overhead_us: Option<f64>,
    idle_rss_mb: Option<f64>,
    onnx: Vec<OnnxSummary>,
}

#[derive(Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    rustc: String,
}

fn rows(args: &Args, bins: &Path) -> Vec<Row> {
    let bin = |name: &str| bins.join(name).display().to_string();
    let ours = |name: &str, command: Vec<String>| Row {
        name: name.to_owned(),
        target: Target::Http {
            command,
            ready: "/noop".to_owned(),
            load: Load::Get("/noop".to_owned()),
            startup: Duration::from_secs(30),
            min_round: 0,
        },
        peer: false,
    };
    let python_app = |file: &str| {
        vec![
            bin("ferroserve"),
            "run".into(),
            format!("bench/apps/{file}"),
        ]
    };
    let bench_server =
        |replicas: &str| vec![bin("bench-server"), "--replicas".into(), replicas.into()];
    let mut rows = vec![
        ours("raw hyper (baseline)", vec![bin("raw-hyper")]),
        ours("ferroserve rust no-op, 1 replica", bench_server("1")),
        ours("ferroserve rust no-op, 2 replicas", bench_server("2")),
        ours(
            "ferroserve rust batch-friendly, unbatched",
            [bench_server("1"), vec!["--batch-friendly".into()]].concat(),
        ),
        ours(
            "ferroserve rust batch-friendly, batch 32",
            [
                bench_server("1"),
                vec![
                    "--batch-friendly".into(),
                    "--max-batch-size".into(),
                    "32".into(),
                ],
            ]
            .concat(),
        ),
        ours(
            "ferroserve python no-op, 1 replica",
            python_app("python_noop.yaml"),
        ),
        ours(
            "ferroserve python no-op, 2 replicas",
            python_app("python_noop_2.yaml"),
        ),
        ours(
            "ferroserve python no-op, batched (32)",
            python_app("python_batched.yaml"),
        ),
        Row {
            name: "ferroserve handle calls, in-process".to_owned(),
            target: Target::Handles,
            peer: false,
        },
    ];
    let infer = |model: &str, binary: bool| Load::Post {
        path: format!("/v2/models/{model}/infer"),
        body: PathBuf::from(format!(
            "{ONNX_DIR}/models/{model}.{}",
            if binary { "bin" } else { "json" }
        )),
        binary,
    };
    let model_file = |model: &str| format!("{ONNX_DIR}/models/{model}.onnx");
    let min_round = |model: &str| if model == "resnet50" { 10 } else { 0 };
    for model in ONNX_MODELS {
        for variant in [
            OnnxVariant::Unbatched,
            OnnxVariant::Batched,
            OnnxVariant::Binary,
        ] {
            let app = if variant == OnnxVariant::Batched {
                format!("{ONNX_DIR}/{model}_batched.yaml")
            } else {
                format!("{ONNX_DIR}/{model}.yaml")
            };
            rows.push(Row {
                name: onnx_row(model, variant),
                target: Target::Http {
                    command: vec![bin("ferroserve"), "run".into(), app],
                    ready: format!("/v2/models/{model}/ready"),
                    load: infer(model, variant == OnnxVariant::Binary),
                    startup: Duration::from_secs(60),
                    min_round: min_round(model),
                },
                peer: false,
            });
        }
        rows.push(Row {
            name: onnx_raw_row(model),
            target: Target::Raw {
                command: vec![
                    args.python.clone(),
                    format!("{ONNX_DIR}/ort_raw.py"),
                    "--model".into(),
                    model_file(model),
                    "--body".into(),
                    format!("{ONNX_DIR}/models/{model}.json"),
                    "--threads".into(),
                    "1".into(),
                ],
            },
            peer: false,
        });
    }
    if args.peers {
        let peer = |name: &str, script: &str, startup| Row {
            name: name.to_owned(),
            target: Target::Http {
                command: vec![args.python.clone(), format!("bench/peers/{script}")],
                ready: "/noop".to_owned(),
                load: Load::Get("/noop".to_owned()),
                startup,
                min_round: 0,
            },
            peer: true,
        };
        rows.push(peer(
            "uvicorn+starlette no-op",
            "starlette_noop.py",
            Duration::from_secs(60),
        ));
        rows.push(peer(
            "ray serve no-op",
            "ray_noop.py",
            Duration::from_secs(180),
        ));
        for model in ONNX_MODELS {
            rows.push(Row {
                name: onnx_peer_row(model),
                target: Target::Http {
                    command: vec![
                        args.python.clone(),
                        "bench/peers/starlette_onnx.py".into(),
                        "--model".into(),
                        model_file(model),
                        "--name".into(),
                        model.into(),
                        "--threads".into(),
                        "1".into(),
                    ],
                    ready: "/v2/health/ready".to_owned(),
                    load: infer(model, false),
                    startup: Duration::from_secs(60),
                    min_round: min_round(model),
                },
                peer: true,
            });
        }
    }
    rows
}

/// Whether `python` can run the ONNX rows' scripts; if so, writes their models and request
/// bodies (`make_models.py`, a few seconds). Otherwise says why.
fn onnx_setup(python: &str) -> Result<(), String> {
    let check = Command::new(python)
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !check.status.success() {
        return Err(format!(
            "{python} lacks numpy, onnx or onnxruntime (bench/run.sh --peers installs them into its venv)"
        ));
    }
    let made = Command::new(python)
        .args([
            format!("{ONNX_DIR}/make_models.py"),
            format!("{ONNX_DIR}/models"),
        ])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "{ONNX_DIR}/make_models.py failed: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    Ok(())
}

/// Waits until a server has finished the requests a load run left behind, by sending one
/// more inference, queued behind them, and waiting for its answer. wrk stops with up to
/// `-c` requests in flight; a server that runs one 60 ms inference at a time (and does not
/// drop an inference whose client left) has seconds of work left, which would otherwise
/// count against the next round. GET rows are left as they were.
fn drain(port: u16, load: &Load) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let Load::Post { path, body, .. } = load else {
        return Ok(());
    };
    let body = std::fs::read(body).with_context(|| format!("reading {}", body.display()))?;
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let kind = match load.header_length()? {
        Some(length) => {
            format!("application/octet-stream\r\nInference-Header-Content-Length: {length}")
        }
        None => "application/json".to_owned(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .context("draining the server")?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "POST {path} answered: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    Ok(())
}

/// Parses wrk's latency values: `55.00us`, `1.20ms`, `2.00s`.
fn parse_duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// One row's numbers at one concurrency.
#[derive(Clone, Copy)]
struct Numbers {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Failed requests: non-2xx answers, socket errors and timeouts.
    errors: u64,
}

/// Runs wrk.
fn wrk(port: u16, load: &Load, concurrency: usize, seconds: u64) -> anyhow::Result<Numbers> {
    let url = format!("http://127.0.0.1:{port}{}", load.path());
    let mut command = Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{concurrency}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Load::Post { body, .. } = load {
        command
            .args(["--timeout", "60s", "-s", &format!("{ONNX_DIR}/post.lua")])
            .arg(&url)
            .arg("--")
            .arg(body);
        if let Some(length) = load.header_length()? {
            command.arg(length);
        }
    } else {
        command.arg(&url);
    }
    let output = command
        .output()
        .context("cannot run wrk (bench/run.sh installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", n] => rps = n.parse().ok(),
            ["50%", v] => p50 = parse_duration_us(v),
            ["99%", v] => p99 = parse_duration_us(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                let counts = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok());
                errors += counts.sum::<u64>();
            }
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(requests_per_sec), Some(p50_us), Some(p99_us)) => Ok(Numbers {
            requests_per_sec,
            p50_us,
            p99_us,
            errors,
        }),
        _ => bail!("cannot read wrk's output:\n{text}"),
    }
}

fn handles(bins: &Path, concurrency: usize, args: &Args) -> anyhow::Result<Numbers> {
    let output = Command::new(bins.join("handle-bench"))
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--duration",
            &args.timing.duration.to_string(),
            "--warmup",
            &args.timing.warmup.to_string(),
        ])
        .output()
        .context("cannot run handle-bench")?;
    if !output.status.success() {
        bail!(
            "handle-bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    numbers_of("handle-bench", &output.stdout)
}

/// The numbers a measuring command printed as JSON.
fn numbers_of(what: &str, stdout: &[u8]) -> anyhow::Result<Numbers> {
    let v: serde_json::Value =
        serde_json::from_slice(stdout).with_context(|| format!("{what} printed no JSON"))?;
    let get = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{what} output lacks {k}"))
    };
    Ok(Numbers {
        requests_per_sec: get("requests_per_sec")?,
        p50_us: get("p50_us")?,
        p99_us: get("p99_us")?,
        errors: 0,
    })
}

/// Runs a [`Target::Raw`] command for `seconds`.
fn raw(command: &[String], seconds: u64, warmup: u64) -> anyhow::Result<Numbers> {
    let (program, rest) = command.split_first().context("an empty command")?;
    let output = Command::new(program)
        .args(rest)
        .args([
            "--seconds",
            &seconds.to_string(),
            "--warmup",
            &warmup.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            rest.first().unwrap_or(program),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    numbers_of(rest.first().unwrap_or(program), &output.stdout)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Idle RSS of the stock binary serving the README's example app.
fn idle_rss(bins: &Path) -> anyhow::Result<f64> {
    let command = vec![
        bins.join("ferroserve").display().to_string(),
        "run".to_owned(),
        "examples/hello.yaml".to_owned(),
    ];
    let port = free_port()?;
    let server = Server::start(
        &command,
        port,
        "/-/healthz",
        Duration::from_secs(30),
        "python3",
    )?;
    std::thread::sleep(Duration::from_secs(1));
    rss_mb(server.pid()).context("cannot read VmRSS")
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: command_line("uname", &["-sr"]),
        rustc: command_line("rustc", &["--version"]),
    }
}

fn print_table(report: &Report) {
    println!(
        "\nFerroserve benchmark — {} — {} cores ({}) — {} — {} s per row",
        report.date,
        report.machine.cores,
        report.machine.cpu,
        report.load_generator,
        report.duration_s
    );
    println!(
        "{:<48} {:>5} {:>12} {:>10} {:>10} {:>9} {:>7}",
        "row", "conc", "req/s", "p50", "p99", "vs raw", "errors"
    );
    let us = |v: f64| {
        if v < 100.0 {
            format!("{v:.1} µs")
        } else {
            format!("{v:.0} µs")
        }
    };
    for row in &report.rows {
        println!(
            "{:<48} {:>5} {:>12.0} {:>10} {:>10} {:>9.3} {:>7}",
            row.name,
            row.concurrency,
            row.requests_per_sec,
            us(row.p50_us),
            us(row.p99_us),
            row.ratio_vs_raw_hyper,
            row.errors
        );
    }
    if let Some(overhead) = report.latency_overhead_us {
        println!(
            "latency overhead at concurrency 1 (p50 ferroserve 1 replica − p50 raw hyper): {overhead:+.0} µs"
        );
    }
    if let Some(rss) = report.idle_rss_mb {
        println!("idle RSS of `ferroserve run examples/hello.yaml`: {rss:.1} MB");
    }
    print_onnx(&report.onnx);
}

/// The median of some numbers (by throughput), or `None` for none.
fn median(mut rounds: Vec<Numbers>) -> Option<Numbers> {
    rounds.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    let errors = rounds.iter().map(|r| r.errors).sum();
    let mut middle = *rounds.get(rounds.len() / 2)?;
    middle.errors = errors;
    Some(middle)
}

/// One thing measured in the rounds: a server, or a raw command.
enum Subject<'a> {
    Http {
        port: u16,
        load: &'a Load,
        min_round: u64,
        _server: Server,
    },
    Raw(&'a [String]),
}

/// Loads each server in turn, round after round, so that drift in the machine's speed
/// hits every row alike; returns each (row, concurrency)'s rounds. Raw rows take their
/// turn in the rounds at concurrency 1.
fn measure_http(rows: &[&Row], args: &Args) -> anyhow::Result<Vec<(String, usize, Vec<Numbers>)>> {
    let mut subjects = Vec::new();
    for row in rows {
        let subject = match &row.target {
            Target::Http {
                command,
                ready,
                load,
                startup,
                min_round,
            } => {
                let port = free_port()?;
                let server = Server::start(command, port, ready, *startup, &args.python)
                    .with_context(|| format!("starting `{}`", row.name))?;
                Subject::Http {
                    port,
                    load,
                    min_round: *min_round,
                    _server: server,
                }
            }
            Target::Raw { command } => Subject::Raw(command),
            Target::Handles => continue,
        };
        subjects.push((row.name.as_str(), subject));
    }
    let seconds = (args.timing.duration / args.timing.rounds.max(1)).max(1);
    let mut out = Vec::new();
    for &c in &args.concurrency {
        let here: Vec<&(&str, Subject<'_>)> = subjects
            .iter()
            .filter(|(_, s)| c == 1 || matches!(s, Subject::Http { .. }))
            .collect();
        for (_, subject) in &here {
            if let Subject::Http { port, load, .. } = subject {
                wrk(*port, load, c, args.timing.warmup)?;
                drain(*port, load)?;
            }
        }
        let mut rounds: Vec<Vec<Numbers>> = vec![Vec::new(); here.len()];
        for round in 0..args.timing.rounds.max(1) {
            for (i, (name, subject)) in here.iter().enumerate() {
                let n = match subject {
                    Subject::Http {
                        port,
                        load,
                        min_round,
                        ..
                    } => {
                        let n = wrk(*port, load, c, seconds.max(*min_round))?;
                        drain(*port, load)?;
                        n
                    }
                    Subject::Raw(command) => raw(command, seconds, args.timing.warmup.min(1))?,
                };
                eprintln!(
                    "   {name}, c={c}, round {}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {} errors",
                    round + 1,
                    n.requests_per_sec,
                    n.p50_us,
                    n.p99_us,
                    n.errors
                );
                rounds[i].push(n);
            }
        }
        for ((name, _), rounds) in here.iter().zip(rounds) {
            out.push(((*name).to_owned(), c, rounds));
        }
    }
    Ok(out)
}

/// One ONNX model's serving overhead and its standing against the Python peer.
#[derive(Serialize)]
struct OnnxSummary {
    model: String,
    /// ONNX Runtime's own time per `session.run` (1 / its runs per second), one thread.
    raw_us: Option<f64>,
    /// Ferroserve's time per request at concurrency 1 (1 / requests per second), unbatched.
    ferroserve_c1_us: Option<f64>,
    /// `ferroserve_c1_us / raw_us`: the target is at most 1.05 for CPU-bound models.
    ferroserve_c1_vs_raw: Option<f64>,
    /// The same with Triton's binary tensor extension instead of JSON.
    ferroserve_binary_c1_us: Option<f64>,
    ferroserve_binary_c1_vs_raw: Option<f64>,
    /// The Python peer's time per request at concurrency 1.
    peer_c1_us: Option<f64>,
    /// Ferroserve's requests/s over the peer's at concurrency 64, unbatched and batched:
    /// the target is at least 5 for the tiny MLP.
    vs_peer_c64_unbatched: Option<f64>,
    vs_peer_c64_batched: Option<f64>,
}

fn onnx_summaries(measured: &[Measurement]) -> Vec<OnnxSummary> {
    let rps = |name: &str, c: usize| {
        measured
            .iter()
            .find(|m| m.name == name && m.concurrency == c)
            .map(|m| m.requests_per_sec)
    };
    let per_request = |name: &str| rps(name, 1).map(|r| 1e6 / r);
    ONNX_MODELS
        .iter()
        .map(|model| {
            let raw_us = per_request(&onnx_raw_row(model));
            let ferroserve_c1_us = per_request(&onnx_row(model, OnnxVariant::Unbatched));
            let ferroserve_binary_c1_us = per_request(&onnx_row(model, OnnxVariant::Binary));
            let peer = rps(&onnx_peer_row(model), 64);
            let vs_peer = |variant| {
                rps(&onnx_row(model, variant), 64)
                    .zip(peer)
                    .map(|(f, p)| f / p)
            };
            OnnxSummary {
                model: (*model).to_owned(),
                raw_us,
                ferroserve_c1_us,
                ferroserve_c1_vs_raw: ferroserve_c1_us.zip(raw_us).map(|(f, r)| f / r),
                ferroserve_binary_c1_us,
                ferroserve_binary_c1_vs_raw: ferroserve_binary_c1_us
                    .zip(raw_us)
                    .map(|(f, r)| f / r),
                peer_c1_us: per_request(&onnx_peer_row(model)),
                vs_peer_c64_unbatched: vs_peer(OnnxVariant::Unbatched),
                vs_peer_c64_batched: vs_peer(OnnxVariant::Batched),
            }
        })
        .filter(|s| {
            s.raw_us.is_some()
                || s.ferroserve_c1_us.is_some()
                || s.ferroserve_binary_c1_us.is_some()
                || s.peer_c1_us.is_some()
        })
        .collect()
}

fn print_onnx(summaries: &[OnnxSummary]) {
    let us = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} µs"));
    let times = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"));
    for s in summaries {
        println!(
            "onnx {}: per request at c=1: session.run {}, ferroserve {} ({} of raw; binary {}, {}), python peer {}; req/s at c=64 vs the python peer: {} unbatched, {} batched",
            s.model,
            us(s.raw_us),
            us(s.ferroserve_c1_us),
            times(s.ferroserve_c1_vs_raw),
            us(s.ferroserve_binary_c1_us),
            times(s.ferroserve_binary_c1_vs_raw),
            us(s.peer_c1_us),
            times(s.vs_peer_c64_unbatched),
            times(s.vs_peer_c64_batched),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = bin_dir()?;
    let all = rows(&args, &bins);
    let mut selected: Vec<&Row> = all
        .iter()
        .filter(|row| {
            row.name.starts_with("raw hyper")
                || args.only.is_empty()
                || args.only.iter().any(|w| row.name.contains(w.as_str()))
        })
        .collect();
    if selected.iter().any(|row| row.name.contains("onnx"))
        && let Err(why) = onnx_setup(&args.python)
    {
        eprintln!("== the ONNX rows are left out: {why}");
        selected.retain(|row| !row.name.contains("onnx"));
    }
    let mut results: Vec<(String, usize, Vec<Numbers>)> = Vec::new();
    // Ferroserve's rows and the baseline, interleaved; then each peer on its own (their
    // runtimes use CPU even when idle); then the in-process handle benchmark.
    let ours: Vec<&Row> = selected.iter().copied().filter(|r| !r.peer).collect();
    eprintln!(
        "== {} HTTP rows, interleaved, {} rounds",
        ours.len(),
        args.timing.rounds
    );
    results.extend(measure_http(&ours, &args)?);
    for peer in selected.iter().filter(|r| r.peer) {
        eprintln!("== {}", peer.name);
        results.extend(measure_http(&[peer], &args)?);
    }
    for row in selected
        .iter()
        .filter(|r| matches!(r.target, Target::Handles))
    {
        eprintln!("== {}", row.name);
        for &c in &args.concurrency {
            let n = handles(&bins, c, &args)?;
            eprintln!(
                "   c={c}: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs",
                n.requests_per_sec, n.p50_us, n.p99_us
            );
            results.push((row.name.clone(), c, vec![n]));
        }
    }
    let mut measured: Vec<Measurement> = Vec::new();
    for row in &selected {
        for &c in &args.concurrency {
            let Some((_, _, rounds)) = results.iter().find(|(n, rc, _)| *n == row.name && *rc == c)
            else {
                continue;
            };
            let Some(n) = median(rounds.clone()) else {
                continue;
            };
            let raw = results
                .iter()
                .find(|(name, rc, _)| name.starts_with("raw hyper") && *rc == c)
                .and_then(|(_, _, rounds)| median(rounds.clone()))
                .map_or(n.requests_per_sec, |r| r.requests_per_sec);
            measured.push(Measurement {
                name: row.name.to_owned(),
                concurrency: c,
                requests_per_sec: n.requests_per_sec,
                p50_us: n.p50_us,
                p99_us: n.p99_us,
                errors: n.errors,
                ratio_vs_raw_hyper: n.requests_per_sec / raw,
            });
        }
    }
    let p50 = |name: &str| {
        measured
            .iter()
            .find(|m| m.name.starts_with(name) && m.concurrency == 1)
            .map(|m| m.p50_us)
    };
    let latency_overhead_us = p50("ferroserve rust no-op, 1 replica")
        .zip(p50("raw hyper"))
        .map(|(f, r)| f - r);
    let onnx = onnx_summaries(&measured);
    let report = Report {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        load_generator: format!(
            "{} -t1",
            command_line(
                "sh",
                &["-c", "wrk --version 2>&1 | head -1 | cut -d' ' -f1-2"]
            )
        ),
        duration_s: args.timing.duration,
        rows: measured,
        latency_overhead_us,
        idle_rss_mb: idle_rss(&bins).ok(),
        onnx,
    };
    print_table(&report);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("JSON: {}", args.out.display());
    Ok(())
}
