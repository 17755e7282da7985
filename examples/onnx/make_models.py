"""Writes the model repository of docs/onnx.md: two small models, made with onnx.helper.

    python3 examples/onnx/make_models.py models

models/
  iris/
    1/model.onnx    an untrained classifier (every class scores 1/3)
    2/model.onnx    the trained one: the highest version, so the one served
    config.yaml     backend keys for this model
  exclaim/
    1/model.onnx    text in, the same text with "!" appended out (BYTES)

- iris: input `x` FP32 [N, 4] (sepal length, sepal width, petal length, petal width, in
  cm); outputs `scores` FP32 [N, 3] (softmax over setosa, versicolor, virginica) and `label`
  INT64 [N] (the best class). Weights of a logistic regression fitted on the iris data set.
- exclaim: input `text` BYTES [N], output `shout` BYTES [N] (StringConcat).

Every input and output has a dynamic first dimension, so both models take batches. Needs
`pip install onnx numpy`.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# A logistic regression on the iris data set (scikit-learn, rounded): 97 % right on it.
WEIGHTS = [
    [-0.42, 0.53, -0.11],
    [0.97, -0.32, -0.65],
    [-2.52, -0.2, 2.72],
    [-1.08, -0.94, 2.03],
]
BIASES = [9.84, 2.22, -12.07]

CONFIG = """\
# Backend keys for the model `iris`, over the repository's defaults.
num_replicas: 2
onnx_threads: 1
max_batch_size: 16
batch_wait_timeout_ms: 1
"""


def _save(model, path, opset, ir_version):
    model.opset_import[0].version = opset
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


def iris(weights, biases):
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], ["scores"], axis=1),
            helper.make_node("ArgMax", ["z"], ["label"], axis=1, keepdims=0),
        ],
        "iris",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(weights, dtype=np.float32), "w"),
            numpy_helper.from_array(np.array(biases, dtype=np.float32), "b"),
        ],
    )
    return helper.make_model(graph, producer_name="ferroserve-docs")


def exclaim():
    graph = helper.make_graph(
        [helper.make_node("StringConcat", ["text", "bang"], ["shout"])],
        "exclaim",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("shout", TensorProto.STRING, ["N"])],
        initializer=[helper.make_tensor("bang", TensorProto.STRING, [], [b"!"])],
    )
    return helper.make_model(graph, producer_name="ferroserve-docs")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    untrained = [[0.0] * 3 for _ in range(4)]
    _save(iris(untrained, [0.0] * 3), os.path.join(out, "iris", "1", "model.onnx"), 17, 8)
    _save(iris(WEIGHTS, BIASES), os.path.join(out, "iris", "2", "model.onnx"), 17, 8)
    with open(os.path.join(out, "iris", "config.yaml"), "w") as f:
        f.write(CONFIG)
    # StringConcat is in opset 20 (ONNX Runtime 1.17 and later).
    _save(exclaim(), os.path.join(out, "exclaim", "1", "model.onnx"), 20, 9)
    print(f"wrote {out}/iris/1, {out}/iris/2, {out}/iris/config.yaml, {out}/exclaim/1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
