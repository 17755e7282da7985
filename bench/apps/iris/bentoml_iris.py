"""The iris model as a BentoML service (two workers), served with `bentoml serve`.

    python bentoml_iris.py --port 8000
"""

import argparse
import os
import sys

import bentoml

from iris_model import predict, train


@bentoml.service(workers=2, logging={"access": {"enabled": False}})
class Iris:
    def __init__(self):
        self.model = train()

    @bentoml.api
    async def predict(self, features: list[float]) -> dict:
        return {"class": predict(self.model, features)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    command = [sys.executable, "-m", "bentoml", "serve", "bentoml_iris:Iris"]
    os.execv(sys.executable, command + ["--host", "127.0.0.1", "--port", str(args.port)])
