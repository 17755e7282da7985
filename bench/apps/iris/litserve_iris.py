"""The iris model as a LitServe API (two workers on the CPU), on POST /predict.

    python litserve_iris.py --port 8000
"""

import argparse

import litserve as ls

from iris_model import predict, train


class IrisAPI(ls.LitAPI):
    def setup(self, device):
        self.model = train()

    def decode_request(self, request):
        return request["features"]

    def predict(self, features):
        return predict(self.model, features)

    def encode_response(self, output):
        return {"class": output}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ls.LitServer(IrisAPI(), accelerator="cpu", workers_per_device=2)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
