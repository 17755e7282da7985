//! Calling an ONNX model from Rust in process: `ndarray` arrays in, tensors out, with no
//! encoding on the way. Needs the `ndarray` feature of `ferroserve` (for `from_array` and
//! `view`). Shown in docs/onnx.md; tests/docs_onnx.rs runs it on the `iris` model of
//! make_models.py.

use std::path::Path;

use ferroserve::tensor::Tensor;
use ferroserve::{Arg, BackendConfig, BackendFactory, EndpointConfig, OnnxBackend, Serve};

/// Serves the iris model at `model` as endpoint `iris` (no route: handles only), with
/// batching on, and classifies two flowers: their labels.
pub async fn classify(serve: &Serve, model: &Path) -> Result<Vec<i64>, String> {
    let config = BackendConfig::default()
        .max_batch_size(8)
        .batch_wait_timeout_ms(2);
    let backend = BackendFactory::onnx(OnnxBackend::new(model));
    serve
        .create_backend("iris", backend, config)
        .await
        .map_err(|e| e.to_string())?;
    serve
        .create_endpoint("iris", EndpointConfig::backend("iris"))
        .await
        .map_err(|e| e.to_string())?;

    let iris = serve.get_handle("iris").map_err(|e| e.to_string())?;
    let flowers = ndarray::array![[5.1_f32, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];
    let inputs = vec![Tensor::from_array("x", &flowers)];
    let answer = iris
        .remote(Arg::value(inputs))
        .await
        .map_err(|e| e.to_string())?;
    // Tensors back; or, when the inputs do not fit the model, a 400 whose body says why.
    let outputs: Vec<Tensor> = answer
        .into_value()
        .map_err(|refused| refused.body_text().unwrap_or_default())?;
    let label = outputs
        .iter()
        .find(|t| t.name == "label")
        .ok_or("no output `label`")?;
    let labels = label.view::<i64>().ok_or("`label` is not INT64")?;
    Ok(labels.iter().copied().collect())
}
