//! The rows of the benchmark: Ferroserve's, the raw-hyper baseline, the ONNX rows and the peers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Args;
use crate::model::model_rows;
use crate::onnx::{ONNX_DIR, ONNX_MODELS, OnnxVariant, onnx_peer_row, onnx_raw_row, onnx_row};
use crate::wrk::Load;

/// When a row's server is ready to be measured.
pub(crate) enum Ready {
    /// GET of this path answers 200.
    Get(String),
    /// The row's POST load is answered 200 with this JSON: the model predicts right.
    Answers(serde_json::Value),
}

/// How a row's server is run.
pub(crate) enum Target {
    /// A server process on `--port PORT`, ready as `ready` says, loaded with wrk as `load`
    /// says.
    Http {
        command: Vec<String>,
        ready: Ready,
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

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) target: Target,
    /// Another framework, measured on its own rather than interleaved with ours.
    pub(crate) peer: bool,
}

pub(crate) fn rows(args: &Args, bins: &Path) -> Vec<Row> {
    let bin = |name: &str| bins.join(name).display().to_string();
    let ours = |name: &str, command: Vec<String>| Row {
        name: name.to_owned(),
        target: Target::Http {
            command,
            ready: Ready::Get("/noop".to_owned()),
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
                    ready: Ready::Get(format!("/v2/models/{model}/ready")),
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
    rows.extend(model_rows(&args.python, args.peers, bins));
    if args.peers {
        let peer = |name: &str, script: &str, startup| Row {
            name: name.to_owned(),
            target: Target::Http {
                command: vec![args.python.clone(), format!("bench/peers/{script}")],
                ready: Ready::Get("/noop".to_owned()),
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
                    ready: Ready::Get("/v2/health/ready".to_owned()),
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
