"""Writes the small ONNX models of tests/onnx_repository.rs, one file per argument.

    python3 tests/onnx/make_repository.py PATH=KIND:CONSTANT ...

- KIND `add_f32`: y = x + CONSTANT, input `x` float [N, 4], output `y` float [N, 4].
- KIND `add_i64`: b = a + CONSTANT, input `a` int64 [N, 2], output `b` int64 [N, 2].

Both have a dynamic first dimension on every input and output (batchable), opset 17, IR
version 8, checked with onnx.checker. Parent folders are made. Needs `pip install onnx`.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import _model  # noqa: E402  (opset 17, IR 8, checked)


def add(kind, constant):
    if kind == "add_f32":
        x, y, elem, width, dtype = "x", "y", TensorProto.FLOAT, 4, np.float32
    elif kind == "add_i64":
        x, y, elem, width, dtype = "a", "b", TensorProto.INT64, 2, np.int64
    else:
        raise SystemExit(f"unknown kind {kind!r}: add_f32 or add_i64")
    graph = helper.make_graph(
        [helper.make_node("Add", [x, "c"], [y], name="add")],
        kind,
        [helper.make_tensor_value_info(x, elem, ["N", width])],
        [helper.make_tensor_value_info(y, elem, ["N", width])],
        initializer=[numpy_helper.from_array(np.full((width,), constant, dtype=dtype), "c")],
    )
    return _model(graph)


def main(args):
    if not args:
        raise SystemExit(__doc__)
    for arg in args:
        path, _, spec = arg.rpartition("=")
        kind, _, constant = spec.partition(":")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        onnx.save(add(kind, float(constant) if kind == "add_f32" else int(constant)), path)


if __name__ == "__main__":
    main(sys.argv[1:])
