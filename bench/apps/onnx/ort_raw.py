"""ONNX Runtime itself, with no serving around it: times `session.run` in a loop on the input of
an Open Inference Protocol request body, and prints the numbers as JSON (requests_per_sec,
mean_us, p50_us, p99_us, runs).

    python3 bench/apps/onnx/ort_raw.py --model M.onnx --body M.json --threads 1 --seconds 4

The session has the settings of a Ferroserve replica with `onnx_threads: N` (and of the
peer): intra_op_num_threads=N, inter_op_num_threads=1, sequential, all graph optimisations.
The time is of `session.run(None, feeds)` alone; its Python call costs a few µs.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--body", required=True, help="an OIP v2 request body (JSON)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    with open(args.body) as f:
        body = json.load(f)
    feeds = {
        t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
        for t in body["inputs"]
    }

    until = time.perf_counter() + args.warmup
    while time.perf_counter() < until:
        session.run(None, feeds)

    times = []
    clock = time.perf_counter_ns
    started = clock()
    until = started + int(args.seconds * 1e9)
    while True:
        t0 = clock()
        session.run(None, feeds)
        t1 = clock()
        times.append(t1 - t0)
        if t1 >= until:
            break
    elapsed = clock() - started
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000  # noqa: E731
    print(
        json.dumps(
            {
                "requests_per_sec": len(times) / (elapsed / 1e9),
                "mean_us": sum(times) / len(times) / 1000,
                "p50_us": pick(0.5),
                "p99_us": pick(0.99),
                "runs": len(times),
            }
        )
    )


if __name__ == "__main__":
    main()
