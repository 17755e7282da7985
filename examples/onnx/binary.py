"""A binary inference request (Triton's binary tensor extension) with only the standard
library and numpy: the JSON header, then the raw little-endian bytes of the input.

    python3 examples/onnx/binary.py localhost:8000
"""

import json
import sys
import urllib.request

import numpy as np

url = sys.argv[1] if len(sys.argv) > 1 else "localhost:8000"
x = np.array([[6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
header = json.dumps({
    "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes}}],
    "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
}).encode()
request = urllib.request.Request(
    f"http://{url}/v2/models/iris/infer",
    data=header + x.astype("<f4").tobytes(),
    headers={"Inference-Header-Content-Length": str(len(header))},
)
with urllib.request.urlopen(request) as answer:
    length = int(answer.headers["Inference-Header-Content-Length"])
    body = answer.read()
outputs = json.loads(body[:length])["outputs"]
print(outputs[0]["name"], np.frombuffer(body[length:], dtype="<i8").tolist())
