//! Measuring rows: servers loaded with wrk in interleaved rounds, raw commands, and the in-process handle benchmark.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use ferroserve_bench::servers::{Server, free_port};

use crate::Args;
use crate::rows::{Ready, Row, Target};
use crate::wrk::{Load, Numbers, answers, drain, wrk};

pub(crate) fn handles(bins: &Path, concurrency: usize, args: &Args) -> anyhow::Result<Numbers> {
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
pub(crate) fn numbers_of(what: &str, stdout: &[u8]) -> anyhow::Result<Numbers> {
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
pub(crate) fn raw(command: &[String], seconds: u64, warmup: u64) -> anyhow::Result<Numbers> {
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

/// The median of some numbers (by throughput), or `None` for none.
pub(crate) fn median(mut rounds: Vec<Numbers>) -> Option<Numbers> {
    rounds.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    let errors = rounds.iter().map(|r| r.errors).sum();
    let mut middle = *rounds.get(rounds.len() / 2)?;
    middle.errors = errors;
    Some(middle)
}

/// Each (row, concurrency)'s rounds, and the footprint of each row's server.
pub(crate) type Measured = (Vec<(String, usize, Vec<Numbers>)>, Vec<Footprint>);

/// What a row's server cost besides time per request.
pub(crate) struct Footprint {
    pub(crate) name: String,
    /// From its spawn until it was ready (for a model: answered a prediction right): the
    /// median of `COLD_STARTS` starts.
    pub(crate) cold_start_s: f64,
    /// The PSS of its processes after a second of load, alone on the machine.
    pub(crate) pss_mb: Option<f64>,
}

/// One thing measured in the rounds: a server, or a raw command.
pub(crate) enum Subject<'a> {
    Http {
        port: u16,
        load: &'a Load,
        min_round: u64,
        _server: Server,
    },
    Raw(&'a [String]),
}

/// Starts a row's server on a free port and waits until it is ready.
fn start(name: &str, target: &Target, python: &str) -> anyhow::Result<(u16, Server)> {
    let Target::Http {
        command,
        ready,
        load,
        startup,
        ..
    } = target
    else {
        bail!("`{name}` is not a server");
    };
    let port = free_port()?;
    let server = match ready {
        Ready::Get(path) => Server::start(command, port, path, *startup, python),
        Ready::Answers(expected) => Server::start_until(command, port, *startup, python, &|port| {
            answers(port, load, expected)
        }),
    }
    .with_context(|| format!("starting `{name}`"))?;
    Ok((port, server))
}

/// How many times each row's server is started to measure its cold start (the median).
const COLD_STARTS: usize = 3;

/// Each row's server alone on the machine: its cold start (the median of a few), then its
/// PSS after a second of load at the highest concurrency. Alone, because processes of other
/// rows alive at the same time would share its libraries' pages and make its PSS look
/// smaller.
fn footprints(rows: &[&Row], args: &Args) -> anyhow::Result<Vec<Footprint>> {
    let concurrency = args.concurrency.iter().copied().max().unwrap_or(1);
    let mut out = Vec::new();
    for row in rows {
        let Target::Http { load, .. } = &row.target else {
            continue;
        };
        // One start varies by a tenth or more on 2 cores: the median of a few is kept.
        let mut starts = Vec::new();
        for _ in 1..COLD_STARTS {
            let (_, server) = start(&row.name, &row.target, &args.python)?;
            starts.push(server.started().as_secs_f64());
        }
        let (port, server) = start(&row.name, &row.target, &args.python)?;
        starts.push(server.started().as_secs_f64());
        starts.sort_by(f64::total_cmp);
        wrk(port, load, concurrency, 1)?;
        drain(port, load)?;
        out.push(Footprint {
            name: row.name.clone(),
            cold_start_s: starts[starts.len() / 2],
            pss_mb: server.pss_mb(),
        });
    }
    Ok(out)
}

/// Loads each server in turn, round after round, so that drift in the machine's speed
/// hits every row alike; returns each (row, concurrency)'s rounds, and each server's
/// footprint, measured first with the server alone. Raw rows take their turn in the rounds
/// at concurrency 1.
pub(crate) fn measure_http(rows: &[&Row], args: &Args) -> anyhow::Result<Measured> {
    let footprints = footprints(rows, args)?;
    let mut subjects = Vec::new();
    for row in rows {
        let subject = match &row.target {
            Target::Http {
                load, min_round, ..
            } => {
                let (port, server) = start(&row.name, &row.target, &args.python)?;
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
        // `--warmup 0`: none (wrk takes no run of 0 s).
        for (_, subject) in here.iter().filter(|_| args.timing.warmup > 0) {
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
    Ok((out, footprints))
}
