"""Conformance cases for the ONNX backend, run with Triton's own Python client.

    python3 tests/onnx/conformance.py prepare DIR
    python3 tests/onnx/conformance.py check URL DIR

`prepare` writes a model repository, DIR/models/<name>/1/model.onnx, and DIR/cases.json
(each case's inputs and expected outputs as .npy files under DIR/data/<name>/):

- `node` cases of the `onnx` wheel (backend/test/data/node): their own inputs and outputs,
  across the datatypes (FP32, FP16, INT64, BOOL, BYTES);
- `light_squeezenet` of the `onnx` wheel (backend/test/data/light), on seeded inputs;
- `logreg_iris.onnx` of the `onnxruntime` wheel (its `probabilities` output is a sequence
  of maps, which the protocol cannot carry: only `label` is expected);
- a scikit-learn logistic regression on iris, converted by skl2onnx with zipmap=False;
- the tiny MLP of make_models.py.

Outputs with no reference data are what Python ONNX Runtime computes on the same inputs.

`check` runs tritonclient[http] against a server on URL (host:port) serving that
repository: server and model health, model metadata (names, datatypes, shapes against
what ONNX Runtime reads from the model), and inference in binary and in JSON mode, each
output against the expected within float tolerance. It prints a line per case and exits
non-zero if any check failed.

Needs: onnx, onnxruntime, numpy, scikit-learn, skl2onnx, tritonclient[http].
"""

import json
import os
import shutil
import sys

import numpy as np

NODE_CASES = [
    "test_add",
    "test_relu",
    "test_matmul_2d",
    "test_softmax_axis_0",
    "test_gather_0",
    "test_argmax_default_axis_example",
    "test_cast_FLOAT_to_FLOAT16",
    "test_equal",
    "test_and2d",
    "test_not_2d",
    "test_where_example",
    "test_string_concat",
]
SEED = 7
IR_VERSION = 10
OPSET = 21


def _save(folder, arrays):
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, (name, array) in enumerate(arrays):
        path = os.path.join(folder, f"{i}.npy")
        np.save(path, array, allow_pickle=array.dtype == object)
        names.append([name, path])
    return names


def _ort_outputs(model_path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.type.startswith("tensor")]
    return list(zip(wanted, session.run(wanted, dict(feeds))))


def _random_feeds(model_path, batch=2):
    import onnxruntime as ort

    rng = np.random.default_rng(SEED)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = []
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        feeds.append((i.name, rng.random(shape, dtype=np.float32)))
    return feeds


def prepare(out):
    import onnx
    from onnx import numpy_helper

    onnx_data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    cases = []

    def add(name, model_src, inputs, outputs):
        folder = os.path.join(out, "models", name, "1")
        os.makedirs(folder, exist_ok=True)
        model = os.path.join(folder, "model.onnx")
        if isinstance(model_src, bytes):
            with open(model, "wb") as f:
                f.write(model_src)
        else:
            shutil.copyfile(model_src, model)
        if outputs is None:
            outputs = _ort_outputs(model, inputs)
        data = os.path.join(out, "data", name)
        cases.append(
            {
                "name": name,
                "model": model,
                "inputs": _save(os.path.join(data, "in"), inputs),
                "outputs": _save(os.path.join(data, "out"), outputs),
            }
        )

    for case in NODE_CASES:
        folder = os.path.join(onnx_data, "node", case)
        model = onnx.load(os.path.join(folder, "model.onnx"))
        data = os.path.join(folder, "test_data_set_0")

        def read(kind, names):
            arrays = []
            for i, name in enumerate(names):
                tensor = onnx.TensorProto()
                with open(os.path.join(data, f"{kind}_{i}.pb"), "rb") as f:
                    tensor.ParseFromString(f.read())
                arrays.append((name, numpy_helper.to_array(tensor)))
            return arrays

        initializers = {i.name for i in model.graph.initializer}
        inputs = read("input", [i.name for i in model.graph.input if i.name not in initializers])
        outputs = read("output", [o.name for o in model.graph.output])
        # The wheel's cases are written at its newest IR and opset; ONNX Runtime reads older
        # ones, and these operators mean the same there.
        model.ir_version = min(model.ir_version, IR_VERSION)
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = min(opset.version, OPSET)
        add(case.removeprefix("test_"), model.SerializeToString(), inputs, outputs)

    squeezenet = os.path.join(onnx_data, "light", "light_squeezenet.onnx")
    add("squeezenet", squeezenet, _random_feeds(squeezenet, batch=1), None)

    import onnxruntime

    iris = os.path.join(os.path.dirname(onnxruntime.__file__), "datasets", "logreg_iris.onnx")
    iris_in = np.array([[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 4.0, 1.0]],
                       dtype=np.float32)
    session = onnxruntime.InferenceSession(iris, providers=["CPUExecutionProvider"])
    iris_in = iris_in[:, : session.get_inputs()[0].shape[1]]
    add("logreg_iris", iris, [(session.get_inputs()[0].name, iris_in)], None)

    add("sklearn_iris", _sklearn_model(), [("X", iris_in_full())], None)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_models

    mlp_dir = os.path.join(out, "mlp-src")
    make_models.main(["make_models.py", mlp_dir])
    rng = np.random.default_rng(SEED)
    add("mlp", os.path.join(mlp_dir, "mlp.onnx"),
        [("x", rng.normal(size=(3, 16)).astype(np.float32))], None)

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


def iris_in_full():
    return np.array([[5.9, 3.0, 5.1, 1.8], [5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 4.0, 1.0]],
                    dtype=np.float32)


def _sklearn_model():
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)
    onx = to_onnx(
        model,
        x[:1].astype(np.float32),
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    return onx.SerializeToString()


def _close(got, want, what):
    if want.dtype == object:
        got = [g.decode() if isinstance(g, bytes) else g for g in got.ravel().tolist()]
        want = [w.decode() if isinstance(w, bytes) else w for w in want.ravel().tolist()]
        return None if got == want else f"{what}: {got} != {want}"
    if got.shape != want.shape:
        return f"{what}: shape {got.shape} != {want.shape}"
    if got.dtype != want.dtype:
        return f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind == "f":
        tolerance = 1e-2 if want.dtype == np.float16 else 1e-4
        if not np.allclose(got, want, rtol=tolerance, atol=tolerance, equal_nan=True):
            return f"{what}: largest difference {np.max(np.abs(got - want))}"
        return None
    return None if np.array_equal(got, want) else f"{what}: {got} != {want}"


def check(url, out):
    import onnxruntime as ort
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    with open(os.path.join(out, "cases.json")) as f:
        cases = json.load(f)
    client = httpclient.InferenceServerClient(url=url)
    failures = []
    if not client.is_server_live():
        failures.append("server: not live")
    if not client.is_server_ready():
        failures.append("server: not ready")
    for case in cases:
        name = case["name"]
        problems = []
        if not client.is_model_ready(name):
            problems.append("not ready")
        metadata = client.get_model_metadata(name)
        if metadata.get("versions") != ["1"]:
            problems.append(f"metadata versions: {metadata.get('versions')}")
        session = ort.InferenceSession(case["model"], providers=["CPUExecutionProvider"])
        declared = {i["name"]: i for i in metadata["inputs"]}
        for i in session.get_inputs():
            seen = declared.get(i.name)
            shape = [d if isinstance(d, int) else -1 for d in i.shape]
            if seen is None or seen["shape"] != shape:
                problems.append(f"metadata of input {i.name}: {seen}, onnxruntime {shape}")
        inputs = [(n, np.load(p, allow_pickle=True)) for n, p in case["inputs"]]
        outputs = [(n, np.load(p, allow_pickle=True)) for n, p in case["outputs"]]
        for binary in (True, False):
            mode = "binary" if binary else "json"
            items = []
            for input_name, array in inputs:
                item = httpclient.InferInput(input_name, list(array.shape),
                                             np_to_triton_dtype(array.dtype))
                item.set_data_from_numpy(array, binary_data=binary)
                items.append(item)
            asked = [httpclient.InferRequestedOutput(n, binary_data=binary) for n, _ in outputs]
            try:
                result = client.infer(name, items, outputs=asked, request_id=f"{name}-{mode}")
            except Exception as e:  # noqa: BLE001 - any client error is a failed check
                problems.append(f"{mode}: {e}")
                continue
            if result.get_response().get("model_version") != "1":
                problems.append(f"{mode}: model_version: {result.get_response()}")
            if result.get_response().get("id") != f"{name}-{mode}":
                problems.append(f"{mode}: id not echoed: {result.get_response()}")
            for output_name, want in outputs:
                got = result.as_numpy(output_name)
                if got is None:
                    problems.append(f"{mode}: no output {output_name}")
                    continue
                problem = _close(got, want, f"{mode} {output_name}")
                if problem:
                    problems.append(problem)
        # With no outputs asked for: every output, binary by the client's default.
        try:
            items = []
            for input_name, array in inputs:
                item = httpclient.InferInput(input_name, list(array.shape),
                                             np_to_triton_dtype(array.dtype))
                item.set_data_from_numpy(array)
                items.append(item)
            result = client.infer(name, items)
            for output_name, want in outputs:
                got = result.as_numpy(output_name)
                problem = None if got is not None else f"default: no output {output_name}"
                problem = problem or _close(got, want, f"default {output_name}")
                if problem:
                    problems.append(problem)
        except Exception as e:  # noqa: BLE001
            problems.append(f"default: {e}")
        print(f"{name}: {'ok' if not problems else '; '.join(problems)}")
        failures.extend(f"{name}: {p}" for p in problems)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(cases)} cases passed")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
