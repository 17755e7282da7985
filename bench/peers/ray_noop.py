"""The peer baseline: the same no-op handler as a Ray Serve deployment on one local node."""

import argparse
import signal
import time

import ray
from ray import serve


# Same concurrency cap as a Ferroserve replica (max_concurrent_queries: 100); Ray's default
# of 5 makes it collapse at 64 connections (about 40 requests/s here).
@serve.deployment(max_ongoing_requests=100)
class Noop:
    async def __call__(self, request):
        return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level="warning")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Noop.bind(), route_prefix="/noop")

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()
