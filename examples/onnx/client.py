"""Triton's own Python client against Ferroserve serving the repository of make_models.py.

    pip install 'tritonclient[http]' numpy
    python3 examples/onnx/client.py localhost:8000

Checks health and metadata, then classifies two flowers with `iris`, once with binary
tensors (tritonclient's default) and once with JSON tensors, and sends text to `exclaim`.
"""

import sys

import numpy as np
import tritonclient.http as httpclient

url = sys.argv[1] if len(sys.argv) > 1 else "localhost:8000"
client = httpclient.InferenceServerClient(url=url)
print("live:", client.is_server_live(), "ready:", client.is_server_ready())
print("iris ready:", client.is_model_ready("iris"))

metadata = client.get_model_metadata("iris")
print("iris versions:", metadata["versions"])
for tensor in metadata["inputs"] + metadata["outputs"]:
    print(f"  {tensor['name']}: {tensor['datatype']} {tensor['shape']}")

flowers = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
for binary in (True, False):
    x = httpclient.InferInput("x", list(flowers.shape), "FP32")
    x.set_data_from_numpy(flowers, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("scores", binary_data=binary),
    ]
    result = client.infer("iris", [x], outputs=outputs, request_id="flowers")
    scores = [[round(float(s), 3) for s in row] for row in result.as_numpy("scores")]
    print("binary:" if binary else "json:  ", "label", result.as_numpy("label").tolist(),
          "scores", scores, "version", result.get_response()["model_version"])

text = np.array(["hello", "été"], dtype=object)
item = httpclient.InferInput("text", [2], "BYTES")
item.set_data_from_numpy(text)
shout = client.infer("exclaim", [item]).as_numpy("shout")
print("exclaim:", [s.decode() for s in shout])
