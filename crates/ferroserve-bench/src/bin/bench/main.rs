//! The benchmark runner: starts each server, drives it with wrk at concurrency 1 and 64 for a
//! fixed time, runs the in-process handle benchmark, and prints one table (also as JSON)
//! with each row's throughput as a ratio of the raw-hyper row of the same run.
//!
//! The ONNX rows (issue 13) post Open Inference Protocol v2 requests to ONNX models
//! (`bench/apps/onnx/`), next to ONNX Runtime's own `session.run` time on the same input,
//! measured in the same rounds, and (with `--peers`) the same models in ONNX Runtime's
//! Python API behind uvicorn+Starlette.

mod measure;
mod model;
mod onnx;
mod report;
mod rows;
mod wrk;

use std::path::PathBuf;

use clap::Parser;
use ferroserve_bench::servers::bin_dir;

use crate::measure::{Footprint, handles, measure_http, median};
use crate::model::{model_setup, model_summary};
use crate::onnx::{onnx_setup, onnx_summaries};
use crate::report::{Measurement, Report, command_line, idle_rss, machine, print_table};
use crate::rows::{Row, Target, rows};
use crate::wrk::Numbers;

/// Whether rows' Python side can run with this interpreter; if not, why.
type Setup = fn(&str) -> Result<(), String>;

/// Ferroserve's load benchmark against a raw-hyper baseline (and, with --peers, Ray Serve
/// and uvicorn+Starlette), in one run.
#[derive(Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) timing: ferroserve_bench::Timing,
    /// Concurrency levels (open connections, or concurrent handle callers).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub(crate) concurrency: Vec<usize>,
    /// Also measure Ray Serve and uvicorn+Starlette (needs --python with them installed).
    #[arg(long)]
    pub(crate) peers: bool,
    /// The Python that runs the peers and the Python rows.
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
    /// Only rows whose name contains one of these words (the raw-hyper row always runs).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/results.json")]
    pub(crate) out: PathBuf,
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
    // Rows whose Python side cannot run here are left out, saying why.
    let setups: [(&str, Setup); 2] = [("onnx", onnx_setup), ("iris", model_setup)];
    for (word, setup) in setups {
        if selected.iter().any(|row| row.name.contains(word))
            && let Err(why) = setup(&args.python)
        {
            eprintln!("== the {word} rows are left out: {why}");
            selected.retain(|row| !row.name.contains(word));
        }
    }
    let mut results: Vec<(String, usize, Vec<Numbers>)> = Vec::new();
    let mut footprints: Vec<Footprint> = Vec::new();
    // Ferroserve's rows and the baseline, interleaved; then each peer on its own (their
    // runtimes use CPU even when idle); then the in-process handle benchmark.
    let ours: Vec<&Row> = selected.iter().copied().filter(|r| !r.peer).collect();
    eprintln!(
        "== {} HTTP rows, interleaved, {} rounds",
        ours.len(),
        args.timing.rounds
    );
    let (numbers, costs) = measure_http(&ours, &args)?;
    results.extend(numbers);
    footprints.extend(costs);
    for peer in selected.iter().filter(|r| r.peer) {
        eprintln!("== {}", peer.name);
        // A peer that cannot start or fails under load is reported, and the run goes on.
        match measure_http(&[peer], &args) {
            Ok((numbers, costs)) => {
                results.extend(numbers);
                footprints.extend(costs);
            }
            Err(e) => eprintln!("   {} left out: {e:#}", peer.name),
        }
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
            let footprint = footprints.iter().find(|f| f.name == row.name);
            measured.push(Measurement {
                cold_start_s: footprint.map(|f| f.cold_start_s),
                pss_mb: footprint.and_then(|f| f.pss_mb),
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
    let model = model_summary(&measured);
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
        model,
    };
    print_table(&report);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("JSON: {}", args.out.display());
    Ok(())
}
