"""Writes the ONNX test models of tests/onnx.rs into a directory.

    python3 tests/onnx/make_models.py DIR

- DIR/mlp.onnx: a small MLP, y = relu(x @ W1 + b1) @ W2 + b2, input `x` float [N, 16],
  output `y` float [N, 4] (MatMul, Add, Relu, MatMul, Add; weights from a fixed seed).
- DIR/scale_any.onnx: y = x * 2 + 1, input `x` float [N, M], output `y` float [N, M]
  (Mul, Add): any inner width, for batching tests that must not mix widths.
- DIR/lookup.onnx: y = table[ids] (Gather, axis 0) of a fixed [10, 2] float table, input
  `ids` int64 [N, 1], output `y` float [N, 1, 2]: an index past 9 makes the run fail.
- DIR/slow.onnx: y = 40 chained MatMuls of x with a fixed [512, 512] matrix, input `x`
  float [N, 512], output `y` float [N, 512]: about 20 MFLOP a row, for tests that need a
  run to take a while.
- DIR/mul_int64.onnx: b = a * [2, -3, 5] + [7, 0, -1], input `a` int64 [N, 3], output `b`
  int64 [N, 3] (Mul, Add).

All are opset 17, IR version 8, checked with onnx.checker. Needs `pip install onnx numpy`.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
SEED = 13


def _model(graph):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ferroserve-tests",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp():
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0.0, 0.5, size=(16, 32)).astype(np.float32)
    b1 = rng.normal(0.0, 0.1, size=(32,)).astype(np.float32)
    w2 = rng.normal(0.0, 0.5, size=(32, 4)).astype(np.float32)
    b2 = rng.normal(0.0, 0.1, size=(4,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="matmul1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="matmul2"),
        helper.make_node("Add", ["h3", "b2"], ["y"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    return _model(graph)


def scale_any():
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"], name="mul"),
        helper.make_node("Add", ["doubled", "one"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "scale_any",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        ],
    )
    return _model(graph)


def lookup():
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0, name="gather")],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _model(graph)


def slow():
    rng = np.random.default_rng(SEED)
    w = (rng.normal(0.0, 1.0, size=(512, 512)) / 512**0.5).astype(np.float32)
    nodes = []
    last = "x"
    for i in range(40):
        out = "y" if i == 39 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [last, "w"], [out], name=f"matmul{i}"))
        last = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _model(graph)


def mul_int64():
    scale = np.array([2, -3, 5], dtype=np.int64)
    shift = np.array([7, 0, -1], dtype=np.int64)
    nodes = [
        helper.make_node("Mul", ["a", "scale"], ["scaled"], name="mul"),
        helper.make_node("Add", ["scaled", "shift"], ["b"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "mul_int64",
        [helper.make_tensor_value_info("a", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3])],
        initializer=[
            numpy_helper.from_array(scale, "scale"),
            numpy_helper.from_array(shift, "shift"),
        ],
    )
    return _model(graph)


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    for name, make in [("mlp", mlp), ("mul_int64", mul_int64), ("scale_any", scale_any), ("lookup", lookup), ("slow", slow)]:
        onnx.save(make(), os.path.join(out, f"{name}.onnx"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
