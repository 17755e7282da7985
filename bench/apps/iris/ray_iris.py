"""The iris model as a Ray Serve deployment (two replicas) on one local node, at /predict.

    python ray_iris.py --port 8000
"""

import argparse
import signal
import time

import ray
from ray import serve

import iris_model

# The same concurrency cap as a Ferroserve replica (max_concurrent_queries: 100).
Iris = serve.deployment(num_replicas=2, max_ongoing_requests=100)(iris_model.Iris)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level="warning")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Iris.bind(), route_prefix="/predict")

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()
