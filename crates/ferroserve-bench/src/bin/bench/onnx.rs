//! The ONNX rows (issue 13): their models, row names, set-up, and per-model summary.

use std::process::Command;

use serde::Serialize;

use crate::report::Measurement;

/// The ONNX rows' models (`bench/apps/onnx/make_models.py` writes them).
pub(crate) const ONNX_MODELS: [&str; 3] = ["mlp", "squeezenet", "resnet50"];
/// Where the ONNX rows' models, request bodies and app files are.
pub(crate) const ONNX_DIR: &str = "bench/apps/onnx";

/// How a Ferroserve ONNX row is called.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum OnnxVariant {
    /// JSON tensors, one run per request.
    Unbatched,
    /// JSON tensors, `max_batch_size: 8`, `batch_wait_timeout_ms: 2`.
    Batched,
    /// Triton's binary tensor extension (input and output), one run per request.
    Binary,
}

pub(crate) fn onnx_row(model: &str, variant: OnnxVariant) -> String {
    match variant {
        OnnxVariant::Unbatched => format!("ferroserve onnx {model}, unbatched"),
        OnnxVariant::Batched => format!("ferroserve onnx {model}, batched (8, 2 ms)"),
        OnnxVariant::Binary => format!("ferroserve onnx {model}, unbatched, binary"),
    }
}

pub(crate) fn onnx_raw_row(model: &str) -> String {
    format!("onnx runtime {model}, raw session.run")
}

pub(crate) fn onnx_peer_row(model: &str) -> String {
    format!("uvicorn+starlette onnx {model}")
}

/// Whether `python` can run the ONNX rows' scripts; if so, writes their models and request
/// bodies (`make_models.py`, a few seconds). Otherwise says why.
pub(crate) fn onnx_setup(python: &str) -> Result<(), String> {
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

/// One ONNX model's serving overhead and its standing against the Python peer.
#[derive(Serialize)]
pub(crate) struct OnnxSummary {
    pub(crate) model: String,
    /// ONNX Runtime's own time per `session.run` (1 / its runs per second), one thread.
    pub(crate) raw_us: Option<f64>,
    /// Ferroserve's time per request at concurrency 1 (1 / requests per second), unbatched.
    pub(crate) ferroserve_c1_us: Option<f64>,
    /// `ferroserve_c1_us / raw_us`: the target is at most 1.05 for CPU-bound models.
    ferroserve_c1_vs_raw: Option<f64>,
    /// The same with Triton's binary tensor extension instead of JSON.
    pub(crate) ferroserve_binary_c1_us: Option<f64>,
    ferroserve_binary_c1_vs_raw: Option<f64>,
    /// The Python peer's time per request at concurrency 1.
    pub(crate) peer_c1_us: Option<f64>,
    /// Ferroserve's requests/s over the peer's at concurrency 64, unbatched and batched:
    /// the target is at least 5 for the tiny MLP.
    vs_peer_c64_unbatched: Option<f64>,
    vs_peer_c64_batched: Option<f64>,
}

pub(crate) fn onnx_summaries(measured: &[Measurement]) -> Vec<OnnxSummary> {
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

pub(crate) fn print_onnx(summaries: &[OnnxSummary]) {
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
