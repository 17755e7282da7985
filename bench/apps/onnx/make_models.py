"""Writes the ONNX models and request bodies of the benchmark's ONNX rows into a directory.

    python3 bench/apps/onnx/make_models.py DIR

- DIR/mlp.onnx: a tiny MLP, y = relu(x @ W1 + b1) @ W2 + b2, input `x` float [N, 16],
  output `y` float [N, 4] (opset 17, weights from a fixed seed).
- DIR/squeezenet.onnx, DIR/resnet50.onnx: the `light_squeezenet` and `light_resnet50`
  models of the `onnx` wheel (onnx/backend/test/data/light/), input float [N, 3, 224, 224],
  with the first dimension of the input and output made dynamic (`N`), so that they can be
  batched. The light models compute every weight with ConstantOfShape instead of storing
  it: the same operators and the same amount of arithmetic as the real models, in a
  100 kB file. resnet50's final Reshape to [1, 2048] becomes [-1, 2048] for the same
  reason.
- DIR/NAME.json: one Open Inference Protocol v2 request for each model, batch of one,
  inputs uniform in [0, 1) from a fixed seed, written with 4 decimals (about 1 MB for the
  image models).
- DIR/NAME.bin: the same request in Triton's binary tensor extension, as tritonclient sends
  it by default: a JSON header (`binary_data_size` on the input, `binary_data_output` on
  the request), then the input's little-endian bytes (602 kB for the image models);
  DIR/NAME.bin.header holds the header's length, for `Inference-Header-Content-Length`.

Every model is checked: it runs in ONNX Runtime with a batch of 1 and of 3, and the rows of
the batch of 3 match single runs. Needs `pip install onnx onnxruntime numpy`.
"""

import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

SEED = 13


def mlp():
    """The tests' tiny MLP (tests/onnx/make_models.py): the same graph and weights."""
    import importlib.util

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
    path = os.path.join(root, "tests", "onnx", "make_models.py")
    spec = importlib.util.spec_from_file_location("tests_make_models", path)
    tests_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests_models)
    return tests_models.mlp()


def light(name):
    """The onnx wheel's `light_NAME` model with a dynamic batch dimension."""
    here = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    path = os.path.join(here, f"light_{name}.onnx")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: this onnx wheel has no light models")
    model = onnx.load(path)
    initializers = {i.name: i for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    for value in inputs + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in initializers:
            continue
        target = numpy_helper.to_array(initializers[node.input[1]])
        if target.size and target[0] == 1:
            fixed = target.copy()
            fixed[0] = -1
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))
    onnx.checker.check_model(model)
    return model


def request(model, rng):
    """An OIP v2 request body with a batch of one for `model`'s only input, and the input."""
    (value,) = [
        i
        for i in model.graph.input
        if i.name not in {init.name for init in model.graph.initializer}
    ]
    shape = [1] + [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
    data = np.round(rng.random(shape), 4).astype(np.float32)
    body = {
        "inputs": [
            {
                "name": value.name,
                "shape": shape,
                "datatype": "FP32",
                "data": [float(f"{v:.4f}") for v in data.ravel()],
            }
        ]
    }
    return body, value.name, data


def binary_request(name, data):
    """The same input in Triton's binary tensor extension: (header length, body)."""
    raw = np.ascontiguousarray(data, dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(data.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return len(head), head + raw


def verify(model, name, data):
    """Runs `model` on a batch of 1 and of 3 (ONNX Runtime, one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    three = np.concatenate([data, data * 0.5, data * 0.25])
    batch = session.run(None, {name: three})[0]
    for i in range(3):
        single = session.run(None, {name: three[i : i + 1]})[0]
        if not np.allclose(batch[i : i + 1], single, atol=1e-5):
            raise SystemExit(f"{model.graph.name}: batched and single runs differ")


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for name, make in [
        ("mlp", mlp),
        ("squeezenet", lambda: light("squeezenet")),
        ("resnet50", lambda: light("resnet50")),
    ]:
        model = make()
        body, input_name, data = request(model, rng)
        verify(model, input_name, data)
        onnx.save(model, os.path.join(out, f"{name}.onnx"))
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(body, f, separators=(",", ":"))
        header_length, binary = binary_request(input_name, data)
        with open(os.path.join(out, f"{name}.bin"), "wb") as f:
            f.write(binary)
        with open(os.path.join(out, f"{name}.bin.header"), "w") as f:
            f.write(str(header_length))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
