//! The report: each row's median numbers, the machine, idle memory, and the printed table.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ferroserve_bench::servers::{Server, free_port};
use serde::Serialize;

use crate::model::{ModelSummary, print_model};
use crate::onnx::{OnnxSummary, print_onnx};

#[derive(Serialize, Clone)]
pub(crate) struct Measurement {
    pub(crate) name: String,
    pub(crate) concurrency: usize,
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) errors: u64,
    pub(crate) ratio_vs_raw_hyper: f64,
    /// The server's cold start: from its spawn until it was ready, in seconds.
    pub(crate) cold_start_s: Option<f64>,
    /// The PSS of the server's processes after the load, in MB.
    pub(crate) pss_mb: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_generator: String,
    pub(crate) duration_s: u64,
    pub(crate) rows: Vec<Measurement>,
    pub(crate) latency_overhead_us: Option<f64>,
    pub(crate) idle_rss_mb: Option<f64>,
    pub(crate) onnx: Vec<OnnxSummary>,
    pub(crate) model: Option<ModelSummary>,
}

#[derive(Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) rustc: String,
}

pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
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
pub(crate) fn idle_rss(bins: &Path) -> anyhow::Result<f64> {
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

pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn machine() -> Machine {
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

pub(crate) fn print_table(report: &Report) {
    println!(
        "\nFerroserve benchmark — {} — {} cores ({}) — {} — {} s per row",
        report.date,
        report.machine.cores,
        report.machine.cpu,
        report.load_generator,
        report.duration_s
    );
    println!(
        "{:<48} {:>5} {:>12} {:>10} {:>10} {:>9} {:>7} {:>8} {:>9}",
        "row", "conc", "req/s", "p50", "p99", "vs raw", "errors", "start", "PSS"
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
            "{:<48} {:>5} {:>12.0} {:>10} {:>10} {:>9.3} {:>7} {:>8} {:>9}",
            row.name,
            row.concurrency,
            row.requests_per_sec,
            us(row.p50_us),
            us(row.p99_us),
            row.ratio_vs_raw_hyper,
            row.errors,
            row.cold_start_s
                .map_or_else(|| "—".to_owned(), |s| format!("{s:.2} s")),
            row.pss_mb
                .map_or_else(|| "—".to_owned(), |m| format!("{m:.0} MB")),
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
    if let Some(model) = &report.model {
        print_model(model);
    }
}
