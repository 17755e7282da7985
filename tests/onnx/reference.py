"""Runs a model in Python ONNX Runtime, for comparing with Ferroserve's answers.

    python3 tests/onnx/reference.py MODEL.onnx INPUTS.json

INPUTS.json is an Open Inference Protocol v2 request body:
{"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": [...]}]}, with
flat row-major data. Prints {"outputs": [{"name", "datatype", "shape", "data"}]}, every
output of the model in its order, data flat row-major (floats at full float64 precision
of the float32 values, integers exact). Needs `pip install onnxruntime numpy`.
"""

import json
import sys

import numpy as np
import onnxruntime as ort

DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
}
DATATYPE_OF = {np.dtype(v): k for k, v in DTYPES.items()}


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} MODEL.onnx INPUTS.json", file=sys.stderr)
        return 2
    with open(argv[2], encoding="utf-8") as f:
        request = json.load(f)
    feeds = {}
    for tensor in request["inputs"]:
        array = np.array(tensor["data"], dtype=DTYPES[tensor["datatype"]])
        feeds[tensor["name"]] = array.reshape(tensor["shape"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        argv[1], sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        {
            "name": name,
            "datatype": DATATYPE_OF[result.dtype],
            "shape": list(result.shape),
            "data": result.reshape(-1).tolist(),
        }
        for name, result in zip(names, results)
    ]
    json.dump({"outputs": outputs}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
