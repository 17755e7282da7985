//! The streaming benchmark: a Python generator of 100 small chunks under Ferroserve, and the
//! same generator under uvicorn+Starlette's `StreamingResponse`, driven by one HTTP/1.1
//! client at a fixed concurrency in interleaved rounds; streams and chunks per second, time
//! to the first chunk and to the whole answer, as a table and as JSON.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use ferroserve_bench::servers::{Server, bin_dir, free_port};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// Streams under Ferroserve against uvicorn+Starlette, in one run.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    timing: ferroserve_bench::Timing,
    /// Streams open at once (one connection each)
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The Python that runs Ferroserve's workers and the peer (with uvicorn and Starlette)
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the uvicorn+Starlette row
    #[arg(long)]
    no_peer: bool,
    /// Where the JSON goes
    #[arg(long, default_value = "target/bench/streaming.json")]
    out: PathBuf,
}

/// Chunks in every answer of both servers.
const CHUNKS: usize = 100;
/// Bytes in every answer: `token 0\n` to `token 99\n`.
const ANSWER_BYTES: usize = 10 * 8 + 90 * 9;
const PATH: &str = "/tokens";

/// One round's figures for one row.
#[derive(Clone, Copy, Serialize)]
struct Numbers {
    streams_per_sec: f64,
    chunks_per_sec: f64,
    first_chunk_p50_us: f64,
    first_chunk_p99_us: f64,
    whole_p50_us: f64,
    whole_p99_us: f64,
    errors: u64,
}

#[derive(Serialize)]
struct Row {
    name: String,
    concurrency: usize,
    #[serde(flatten)]
    numbers: Numbers,
    rounds: Vec<Numbers>,
}

/// What one connection saw: each stream's time to its first chunk and to its end.
#[derive(Default)]
struct Seen {
    first: Vec<Duration>,
    whole: Vec<Duration>,
    errors: u64,
}

/// Streams from `port` one after another until `until`.
async fn one_connection(port: u16, until: Instant) -> Seen {
    let mut seen = Seen::default();
    let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        seen.errors += 1;
        return seen;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        seen.errors += 1;
        return seen;
    };
    tokio::spawn(connection);
    while Instant::now() < until {
        let Ok(req) = http::Request::get(PATH)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
        else {
            break;
        };
        let started = Instant::now();
        let Ok(response) = sender.send_request(req).await else {
            seen.errors += 1;
            return seen;
        };
        let ok = response.status() == http::StatusCode::OK;
        let mut body = response.into_body();
        let (mut first, mut bytes) = (None, 0);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                seen.errors += 1;
                return seen;
            };
            if let Some(data) = frame.data_ref() {
                if first.is_none() && !data.is_empty() {
                    first = Some(started.elapsed());
                }
                bytes += data.len();
            }
        }
        match first {
            Some(first) if ok && bytes == ANSWER_BYTES => {
                seen.first.push(first);
                seen.whole.push(started.elapsed());
            }
            _ => seen.errors += 1,
        }
    }
    seen
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// `concurrency` connections streaming from `port` for `seconds`.
fn load(port: u16, concurrency: usize, seconds: u64) -> anyhow::Result<Numbers> {
    // One client thread, as wrk -t1 in the other benchmarks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let seen = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            tasks.spawn(one_connection(port, until));
        }
        let mut all = Seen::default();
        while let Some(joined) = tasks.join_next().await {
            let seen = joined.unwrap_or_else(|_| Seen {
                errors: 1,
                ..Seen::default()
            });
            all.first.extend(seen.first);
            all.whole.extend(seen.whole);
            all.errors += seen.errors;
        }
        all
    });
    let took = started.elapsed().as_secs_f64();
    let (mut first, mut whole) = (seen.first, seen.whole);
    first.sort_unstable();
    whole.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let streams_per_sec = whole.len() as f64 / took;
    #[allow(clippy::cast_precision_loss)]
    Ok(Numbers {
        streams_per_sec,
        chunks_per_sec: streams_per_sec * CHUNKS as f64,
        first_chunk_p50_us: percentile(&first, 0.5),
        first_chunk_p99_us: percentile(&first, 0.99),
        whole_p50_us: percentile(&whole, 0.5),
        whole_p99_us: percentile(&whole, 0.99),
        errors: seen.errors,
    })
}

fn median(mut rounds: Vec<Numbers>) -> Option<Numbers> {
    rounds.sort_by(|a, b| a.streams_per_sec.total_cmp(&b.streams_per_sec));
    let errors = rounds.iter().map(|r| r.errors).sum();
    let mut middle = *rounds.get(rounds.len() / 2)?;
    middle.errors = errors;
    Some(middle)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.timing.rounds == 0 || args.timing.duration < args.timing.rounds {
        bail!("--duration must be at least --rounds seconds");
    }
    let bins = bin_dir()?;
    let ferroserve = bins.join("ferroserve").to_string_lossy().into_owned();
    let mut rows: Vec<(String, Vec<String>)> = vec![(
        format!("ferroserve python generator, {CHUNKS} chunks"),
        vec![
            ferroserve,
            "run".into(),
            "bench/apps/python_stream.yaml".into(),
        ],
    )];
    if !args.no_peer {
        rows.push((
            format!("uvicorn+Starlette StreamingResponse, {CHUNKS} chunks"),
            vec![
                args.python.clone(),
                "bench/peers/starlette_stream.py".into(),
            ],
        ));
    }
    let per_round = args.timing.duration / args.timing.rounds;
    let mut measured: Vec<Vec<Numbers>> = vec![Vec::new(); rows.len()];
    for round in 1..=args.timing.rounds {
        for (i, (name, command)) in rows.iter().enumerate() {
            let port = free_port()?;
            let server = Server::start(command, port, PATH, Duration::from_secs(60), &args.python)
                .with_context(|| format!("starting {name}"))?;
            load(port, args.concurrency, args.timing.warmup)?;
            let numbers = load(port, args.concurrency, per_round)?;
            eprintln!(
                "   {name}, c={}, round {round}: {:.0} streams/s, {:.0} chunks/s, first chunk p50 {:.0} µs p99 {:.0} µs, {} errors",
                args.concurrency,
                numbers.streams_per_sec,
                numbers.chunks_per_sec,
                numbers.first_chunk_p50_us,
                numbers.first_chunk_p99_us,
                numbers.errors
            );
            measured[i].push(numbers);
            drop(server);
        }
    }
    let mut report = Vec::new();
    for ((name, _), rounds) in rows.iter().zip(measured) {
        let numbers = median(rounds.clone()).context("no round measured")?;
        report.push(Row {
            name: name.clone(),
            concurrency: args.concurrency,
            numbers,
            rounds,
        });
    }
    let peer = report.get(1).map(|r| r.numbers.chunks_per_sec);
    println!(
        "{:<48} {:>5} {:>10} {:>11} {:>12} {:>12} {:>10} {:>7} {:>6}",
        "row",
        "conc",
        "streams/s",
        "chunks/s",
        "first p50",
        "first p99",
        "whole p50",
        "vs peer",
        "errors"
    );
    for row in &report {
        let n = &row.numbers;
        let ratio = peer.map_or_else(
            || "-".to_owned(),
            |p| format!("{:.2}", n.chunks_per_sec / p),
        );
        println!(
            "{:<48} {:>5} {:>10.0} {:>11.0} {:>9.0} µs {:>9.0} µs {:>7.0} µs {:>7} {:>6}",
            row.name,
            row.concurrency,
            n.streams_per_sec,
            n.chunks_per_sec,
            n.first_chunk_p50_us,
            n.first_chunk_p99_us,
            n.whole_p50_us,
            ratio,
            n.errors
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("JSON: {}", args.out.display());
    Ok(())
}
