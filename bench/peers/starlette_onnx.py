"""The ONNX peer baseline: a model in ONNX Runtime's Python API behind uvicorn + Starlette (one
process), answering the Open Inference Protocol v2 JSON that Ferroserve's ONNX rows answer, at
the same path: POST /v2/models/NAME/infer; GET /v2/health/ready.

The session has the thread settings of a Ferroserve replica with `onnx_threads: N`:
intra_op_num_threads=N, inter_op_num_threads=1, sequential execution, all graph
optimisations. The handler calls `session.run` on the event loop, so one inference runs at
a time, as in one Ferroserve replica.
"""

import argparse

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
}


def make_app(model, name, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    outputs = [(o.name, DATATYPES.get(o.type, "FP32")) for o in session.get_outputs()]

    async def infer(request):
        body = await request.json()
        feeds = {}
        for tensor in body.get("inputs", []):
            tensor_name = tensor.get("name")
            dtype = DTYPES.get(tensor.get("datatype"))
            if tensor_name not in inputs or dtype is None:
                return JSONResponse({"error": f"input `{tensor_name}`: unknown"}, 400)
            try:
                feeds[tensor_name] = np.asarray(tensor["data"], dtype=dtype).reshape(
                    tensor["shape"]
                )
            except (KeyError, ValueError, TypeError) as e:
                return JSONResponse({"error": f"input `{tensor_name}`: {e}"}, 400)
        try:
            results = session.run(None, feeds)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's errors are one class per status
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(
            {
                "model_name": name,
                "outputs": [
                    {
                        "name": output,
                        "datatype": datatype,
                        "shape": list(value.shape),
                        "data": value.ravel().tolist(),
                    }
                    for (output, datatype), value in zip(outputs, results)
                ],
            }
        )

    async def ready(request):
        return PlainTextResponse("")

    return Starlette(
        routes=[
            Route(f"/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="the .onnx file")
    parser.add_argument("--name", required=True, help="the model's name in the URL")
    parser.add_argument("--threads", type=int, default=1, help="intra_op_num_threads")
    args = parser.parse_args()
    app = make_app(args.model, args.name, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
