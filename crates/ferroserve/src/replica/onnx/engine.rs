//! The small trait a model runs behind: what it declares and one blocking run. ONNX Runtime (`session`) is the engine today; another (a pure-Rust one, say) is one more implementation.

use crate::tensor::{Tensor, TensorSpec};

/// An opened model.
pub(super) trait Engine: Send + Sync + 'static {
    /// Its name in the protocol's metadata (`platform`), e.g. `onnxruntime_onnx`.
    fn platform(&self) -> &'static str;
    /// The inputs it takes.
    fn inputs(&self) -> &[TensorSpec];
    /// The outputs it answers with (those the protocol can carry).
    fn outputs(&self) -> &[TensorSpec];
    /// Whether the engine can take these inputs, beyond their types and shapes (checked
    /// per request, before requests are stacked); the error names the input.
    fn check(&self, inputs: &[Tensor]) -> Result<(), String> {
        let _ = inputs;
        Ok(())
    }
    /// One inference, blocking: `inputs` (checked, in the declared order) in, every output
    /// of [`Engine::outputs`] out; an error says why the model could not run on them.
    /// `wanted` is asked once the engine is free to run, just before it does: `false`
    /// (its caller has gone) skips the run.
    fn run(&self, inputs: Vec<Tensor>, wanted: &dyn Fn() -> bool) -> Result<Vec<Tensor>, String>;
}

/// Whether `engine` can take stacked requests: every input and output has a dynamic first
/// dimension.
pub(super) fn batchable(engine: &dyn Engine) -> bool {
    engine
        .inputs()
        .iter()
        .chain(engine.outputs())
        .all(TensorSpec::batchable)
}
