//! From a backend's kind in the desired state to the factory that makes its replicas: the one match over kinds.

use crate::backend::{BackendFactory, Registry};
use crate::builtin::builtins;
use crate::config::BackendKind;

/// The factory for `kind`: a stock backend, one `registry` holds, or a Python worker.
/// `None` when no factory has that name.
///
/// A new kind adds its YAML key and variant in `config`, a module that implements
/// `Instantiate` (as `python` does), and one arm here.
pub(crate) fn factory_of(kind: &BackendKind, registry: &Registry) -> Option<BackendFactory> {
    match kind {
        BackendKind::Builtin(name) => builtins().get(name).cloned(),
        BackendKind::Rust(name) => registry.get(name).cloned(),
        BackendKind::Python(python) => Some(BackendFactory::python(python.clone())),
        BackendKind::Onnx(onnx) => Some(BackendFactory::onnx(onnx.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PythonBackend;

    #[test]
    fn every_kind_resolves() {
        let mut registry = Registry::new();
        registry.register("mine", builtins().get("echo").cloned().expect("echo"));
        assert!(factory_of(&BackendKind::Builtin("echo".into()), &registry).is_some());
        assert!(factory_of(&BackendKind::Builtin("nope".into()), &registry).is_none());
        assert!(factory_of(&BackendKind::Rust("mine".into()), &registry).is_some());
        assert!(factory_of(&BackendKind::Rust("echo".into()), &registry).is_none());
        let python = BackendKind::Python(PythonBackend::new("m:C"));
        assert!(factory_of(&python, &registry).is_some());
    }
}
