//! The model rows (issue 16): one scikit-learn iris model served by Ferroserve and by five
//! Python servers, each in its own idiomatic form (`bench/apps/iris/`), and the targets
//! Ferroserve must meet against them, as ratios of the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::report::Measurement;
use crate::rows::{Ready, Row, Target};
use crate::wrk::Load;

/// Where the model's apps, peers and request body are.
const IRIS_DIR: &str = "bench/apps/iris";

/// Ferroserve's model row with two replicas: the one held to the targets.
pub(crate) const OURS: &str = "ferroserve python iris, 2 replicas";
/// Ferroserve's model row with one replica (the cold-start target's reference).
pub(crate) const OURS_ONE: &str = "ferroserve python iris, 1 replica";
/// The peers' model rows: (row name, script, its arguments, startup time allowed).
const PEERS: [(&str, &str, &[&str], u64); 5] = [
    (
        "fastapi+uvicorn iris, 2 workers",
        "fastapi_iris.py",
        &[],
        60,
    ),
    (
        "fastapi+granian iris, 2 workers",
        "fastapi_iris.py",
        &["--server", "granian"],
        60,
    ),
    ("bentoml iris, 2 workers", "bentoml_iris.py", &[], 120),
    ("litserve iris, 2 workers", "litserve_iris.py", &[], 120),
    ("ray serve iris, 2 replicas", "ray_iris.py", &[], 180),
];
/// The no-op in the FastAPI app, one worker, under uvicorn and under Granian: the no-op
/// targets' peers (against `ferroserve python no-op, 1 replica`).
const NOOP_UVICORN: &str = "fastapi+uvicorn no-op, 1 worker";
const NOOP_GRANIAN: &str = "fastapi+granian no-op, 1 worker";
const NOOP_OURS: &str = "ferroserve python no-op, 1 replica";

/// The model rows: Ferroserve's two, and with `--peers` the five peers' and the two
/// FastAPI no-op rows.
pub(crate) fn model_rows(python: &str, peers: bool, bins: &Path) -> Vec<Row> {
    let load = Load::Post {
        path: "/predict".to_owned(),
        body: PathBuf::from(format!("{IRIS_DIR}/body.json")),
        binary: false,
    };
    let answer = serde_json::json!({ "class": 2 });
    let row = |name: &str, command: Vec<String>, startup: u64, peer: bool| Row {
        name: name.to_owned(),
        target: Target::Http {
            command,
            ready: Ready::Answers(answer.clone()),
            load: load.clone(),
            startup: Duration::from_secs(startup),
            min_round: 0,
        },
        peer,
    };
    let ferroserve = |app: &str| {
        vec![
            bins.join("ferroserve").display().to_string(),
            "run".to_owned(),
            format!("{IRIS_DIR}/{app}"),
        ]
    };
    let mut rows = vec![
        row(OURS, ferroserve("iris.yaml"), 60, false),
        row(OURS_ONE, ferroserve("iris_1.yaml"), 60, false),
    ];
    if !peers {
        return rows;
    }
    let script = |file: &str, more: &[&str]| {
        let mut command = vec![python.to_owned(), format!("{IRIS_DIR}/{file}")];
        command.extend(more.iter().map(|a| (*a).to_owned()));
        command
    };
    for (name, file, more, startup) in PEERS {
        rows.push(row(name, script(file, more), startup, true));
    }
    for (name, server) in [(NOOP_UVICORN, "uvicorn"), (NOOP_GRANIAN, "granian")] {
        rows.push(Row {
            name: name.to_owned(),
            target: Target::Http {
                command: script("fastapi_iris.py", &["--server", server, "--workers", "1"]),
                ready: Ready::Get("/noop".to_owned()),
                load: Load::Get("/noop".to_owned()),
                startup: Duration::from_secs(60),
                min_round: 0,
            },
            peer: true,
        });
    }
    rows
}

/// Whether `python` can train the model (it needs scikit-learn); otherwise says why.
pub(crate) fn model_setup(python: &str) -> Result<(), String> {
    let check = Command::new(python)
        .arg(format!("{IRIS_DIR}/iris_model.py"))
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !check.status.success() {
        return Err(format!(
            "{python} cannot train the iris model (bench/run.sh --peers installs scikit-learn into its venv): {}",
            String::from_utf8_lossy(&check.stderr).trim()
        ));
    }
    Ok(())
}

/// Ferroserve's standing on the model and the no-op against the best peer of the run,
/// each with the target.
#[derive(Serialize)]
pub(crate) struct ModelSummary {
    /// The peer with the most requests/s on the model at c=1, and the ratio of ours to it
    /// (target ≥ 1.2, with a lower p50).
    pub(crate) best_peer_c1: Option<String>,
    pub(crate) vs_best_peer_c1: Option<f64>,
    pub(crate) p50_c1_us: Option<f64>,
    pub(crate) best_peer_p50_c1_us: Option<f64>,
    /// The same at c=64 (target ≥ 2).
    pub(crate) best_peer_c64: Option<String>,
    pub(crate) vs_best_peer_c64: Option<f64>,
    /// The Python no-op at c=64 against FastAPI under uvicorn (target ≥ 3) and under
    /// Granian (target > 1).
    pub(crate) noop_c64_vs_uvicorn: Option<f64>,
    pub(crate) noop_c64_vs_granian: Option<f64>,
    /// Cold start with two replicas over cold start with one (target ≤ 1.1).
    pub(crate) cold_start_2_vs_1: Option<f64>,
}

/// The summary, if the run measured Ferroserve's model row.
pub(crate) fn model_summary(measured: &[Measurement]) -> Option<ModelSummary> {
    let find = |name: &str, c: usize| {
        measured
            .iter()
            .find(|m| m.name == name && m.concurrency == c)
    };
    let ours = |c| find(OURS, c);
    find(OURS, 1).or_else(|| find(OURS, 64))?;
    let best = |c: usize| {
        PEERS
            .iter()
            .filter_map(|(name, ..)| find(name, c))
            .max_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec))
    };
    let ratio = |a: Option<&Measurement>, b: Option<&Measurement>| {
        a.zip(b)
            .map(|(a, b)| a.requests_per_sec / b.requests_per_sec)
    };
    let (best1, best64) = (best(1), best(64));
    Some(ModelSummary {
        best_peer_c1: best1.map(|m| m.name.clone()),
        vs_best_peer_c1: ratio(ours(1), best1),
        p50_c1_us: ours(1).map(|m| m.p50_us),
        best_peer_p50_c1_us: best1.map(|m| m.p50_us),
        best_peer_c64: best64.map(|m| m.name.clone()),
        vs_best_peer_c64: ratio(ours(64), best64),
        noop_c64_vs_uvicorn: ratio(find(NOOP_OURS, 64), find(NOOP_UVICORN, 64)),
        noop_c64_vs_granian: ratio(find(NOOP_OURS, 64), find(NOOP_GRANIAN, 64)),
        cold_start_2_vs_1: ours(1)
            .and_then(|m| m.cold_start_s)
            .zip(find(OURS_ONE, 1).and_then(|m| m.cold_start_s))
            .map(|(two, one)| two / one),
    })
}

/// Prints each target: the ratio measured, the target, and whether it is met.
pub(crate) fn print_model(s: &ModelSummary) {
    let line = |what: &str, value: Option<f64>, target: &str, met: fn(f64) -> bool| match value {
        Some(v) => println!(
            "model target: {what}: {v:.2}× (target {target}: {})",
            if met(v) { "met" } else { "MISSED" }
        ),
        None => println!("model target: {what}: not measured in this run"),
    };
    let peer = |p: &Option<String>| p.clone().unwrap_or_else(|| "the best peer".to_owned());
    line(
        &format!("iris c=1 vs {}", peer(&s.best_peer_c1)),
        s.vs_best_peer_c1,
        "≥ 1.2",
        |v| v >= 1.2,
    );
    if let (Some(ours), Some(theirs)) = (s.p50_c1_us, s.best_peer_p50_c1_us) {
        println!(
            "model target: iris c=1 p50: {ours:.0} µs against {theirs:.0} µs (target lower: {})",
            if ours < theirs { "met" } else { "MISSED" }
        );
    }
    line(
        &format!("iris c=64 vs {}", peer(&s.best_peer_c64)),
        s.vs_best_peer_c64,
        "≥ 2",
        |v| v >= 2.0,
    );
    line(
        "python no-op c=64 vs fastapi+uvicorn",
        s.noop_c64_vs_uvicorn,
        "≥ 3",
        |v| v >= 3.0,
    );
    line(
        "python no-op c=64 vs fastapi+granian",
        s.noop_c64_vs_granian,
        "> 1",
        |v| v > 1.0,
    );
    line(
        "iris cold start, 2 replicas vs 1",
        s.cold_start_2_vs_1,
        "≤ 1.1",
        |v| v <= 1.1,
    );
}
