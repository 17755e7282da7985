"""Tensors between Python backends and models served over the Open Inference Protocol:
numpy arrays into a binary inference request (Triton's binary tensor extension), and a
binary answer back into numpy arrays. Needs numpy only when used."""

import json

# numpy dtype kind+size -> the protocol's datatype, and back.
_DATATYPES = {
    "b1": "BOOL",
    "u1": "UINT8",
    "u2": "UINT16",
    "u4": "UINT32",
    "u8": "UINT64",
    "i1": "INT8",
    "i2": "INT16",
    "i4": "INT32",
    "i8": "INT64",
    "f2": "FP16",
    "f4": "FP32",
    "f8": "FP64",
}
_DTYPES = {v: "<" + k if k != "b1" else "?" for k, v in _DATATYPES.items()}

#: The header that says how long the JSON part of a binary request or answer is.
HEADER_LENGTH = "Inference-Header-Content-Length"


def _datatype(array):
    if array.dtype.kind in ("O", "S", "U"):
        return "BYTES"
    datatype = _DATATYPES.get(f"{array.dtype.kind}{array.dtype.itemsize}")
    if datatype is None:
        raise TypeError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")
    return datatype


def _raw(array, datatype):
    import numpy as np

    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=_DTYPES[datatype]).tobytes()
    parts = []
    for item in array.ravel(order="C"):
        if isinstance(item, (bytes, bytearray, memoryview)):
            item = bytes(item)
        else:
            item = str(item).encode("utf-8")
        parts.append(len(item).to_bytes(4, "little"))
        parts.append(item)
    return b"".join(parts)


def encode_request(inputs, outputs=None):
    """(body, header length) of a binary inference request: ``inputs`` maps input names to
    numpy arrays (or anything ``numpy.asarray`` takes); ``outputs`` names the outputs to
    answer with (all when None), each sent back binary."""
    import numpy as np

    header = {"inputs": [], "parameters": {"binary_data_output": True}}
    blobs = []
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = _datatype(array)
        raw = _raw(array, datatype)
        header["inputs"].append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    if outputs is not None:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return head + b"".join(blobs), len(head)


def decode_answer(body, header_length):
    """The outputs of a binary inference answer, by name, as numpy arrays."""
    return outputs_of(json.loads(body[:header_length]), body, header_length)


def outputs_of(header, body=b"", at=0):
    """The outputs of an answer's JSON (``header``), by name, as numpy arrays; binary ones
    are read from ``body`` starting at ``at``."""
    import numpy as np

    outputs = {}
    for output in header.get("outputs", []):
        shape = output["shape"]
        datatype = output["datatype"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = output["data"]
            dtype = object if datatype == "BYTES" else _DTYPES[datatype]
            outputs[output["name"]] = np.array(data, dtype=dtype).reshape(shape)
            continue
        raw = body[at : at + size]
        at += size
        if datatype == "BYTES":
            items, i = [], 0
            while i < len(raw):
                n = int.from_bytes(raw[i : i + 4], "little")
                items.append(bytes(raw[i + 4 : i + 4 + n]))
                i += 4 + n
            outputs[output["name"]] = np.array(items, dtype=object).reshape(shape)
        else:
            outputs[output["name"]] = np.frombuffer(raw, dtype=_DTYPES[datatype]).reshape(shape)
    return outputs
