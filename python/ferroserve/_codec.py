"""JSON on the worker's hot path: ``loads`` and ``encoder`` give exactly what ``json.loads``
and ``json.JSONEncoder(...).encode`` give, without their per-call Python overhead.

``json.loads`` on bytes runs three Python functions (encoding detection, ``decode``,
``raw_decode``) around the C scanner, and ``JSONEncoder.encode`` builds a new C encoder on
every call; on the iris model that was about 3.5 µs a request of the worker's own 15
(docs/BENCHMARKS.md). Here the common case goes straight to the C code, and anything else
(a body that is not plain UTF-8 JSON, an error, an interpreter without the C accelerator)
takes the standard path, so results and error messages are the standard ones.
"""

import json
import json.encoder as _encoder

_scan = json.JSONDecoder().scan_once


def loads(data):
    """``json.loads(data)`` for ``bytes``, ``bytearray`` or ``str``: the same value, or the
    same error."""
    try:
        text = data if type(data) is str else data.decode("utf-8")
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except Exception:  # StopIteration, a decode error...: the standard path says what
        pass
    # Surrounding whitespace, a byte-order mark, UTF-16, or not JSON at all.
    return json.loads(data)


def encoder(default):
    """A function encoding a value as ``json.JSONEncoder(default=default).encode`` does
    (compact only in speed: the separators are the standard ``", "`` and ``": "``)."""
    standard = json.JSONEncoder(default=default).encode
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:
        return standard

    def build():
        # The arguments JSONEncoder.iterencode gives the C encoder; checked below, as they
        # are CPython's internals.
        return make({}, default, _encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)

    try:
        fast = build()
        probe = {"a": [1, 2.5, "é", None, True, {"b": -1e300}], "c": ""}
        if "".join(fast(probe, 0)) != standard(probe):
            return standard
    except Exception:  # another interpreter's internals: the standard encoder
        return standard

    def encode(value):
        nonlocal fast
        if type(value) is str:
            return standard(value)
        try:
            return "".join(fast(value, 0))
        except BaseException:
            # Its record of the objects being encoded (for cycles) may be left dirty.
            fast = build()
            raise

    return encode
