"""Responses, batch methods and handles: the API backend code uses."""

import asyncio
import concurrent.futures

from . import _codec


class ServeError(Exception):
    """A handle call failed: the target endpoint, method or replica answered an error."""

    def __init__(self, message, status=500):
        super().__init__(message)
        self.status = status


class HTTPException(Exception):
    """An error answer with a status of your choice: ``raise HTTPException(404, "no such model")``.

    The caller gets that status and the detail as the body. Starlette's and FastAPI's
    ``HTTPException`` are answered the same way.
    """

    def __init__(self, status_code, detail=None):
        self.status_code = int(status_code)
        self.detail = detail if detail is not None else ""
        super().__init__(self.detail)


class Response:
    """A full response: body (``str`` or ``bytes``), status code, media type and headers.

    ``Response('Hello, world!', status_code=123, media_type='text/plain')`` goes on the wire
    as given. A Starlette ``Response`` works the same way.
    """

    def __init__(self, content=b"", status_code=200, media_type=None, headers=None):
        if isinstance(content, str):
            self.body = content.encode("utf-8")
            default_type = "text/plain; charset=utf-8"
        elif isinstance(content, (bytes, bytearray, memoryview)):
            self.body = bytes(content)
            default_type = "application/octet-stream"
        else:
            raise TypeError(f"Response content must be str or bytes, not {type(content).__name__}")
        self.status_code = int(status_code)
        self.media_type = media_type or default_type
        self.headers = dict(headers or {})

    def __repr__(self):
        return f"Response(status_code={self.status_code}, media_type={self.media_type!r})"


class StreamingResponse:
    """A streamed answer: ``content`` is an iterator or async iterator (a generator, say) of
    ``str`` or ``bytes`` chunks, each sent to the client as soon as it is made, with a
    status code, media type and headers. ``media_type="text/event-stream"`` makes it
    server-sent events. Starlette's ``StreamingResponse`` works the same way, and so does
    returning a bare generator (``text/plain``)."""

    def __init__(self, content, status_code=200, media_type=None, headers=None):
        if not (hasattr(content, "__iter__") or hasattr(content, "__aiter__")):
            raise TypeError(f"StreamingResponse content must be an iterator, not {type(content).__name__}")
        self.content = content
        self.status_code = int(status_code)
        self.media_type = media_type
        self.headers = dict(headers or {})

    def __repr__(self):
        return f"StreamingResponse(status_code={self.status_code}, media_type={self.media_type!r})"


def accept_batch(method):
    """Marks a method that takes a batch: it gets a list of requests and returns a list of
    answers, one per request, in order."""
    method._ferroserve_batch = True
    return method


class ResponseRef:
    """The answer of ``handle.remote(...)``, sent at once: ``await`` it in ``async def``
    code, or call ``.result()`` in plain methods (which run outside the event loop)."""

    __slots__ = ("_future", "_loop")

    def __init__(self, future, loop):
        self._future = future
        self._loop = loop

    def __await__(self):
        if isinstance(self._future, concurrent.futures.Future):
            return asyncio.wrap_future(self._future).__await__()
        return self._future.__await__()

    def result(self, timeout=None):
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "ResponseRef.result() would block the event loop; use `await ref` in async def methods"
            )
        if isinstance(self._future, concurrent.futures.Future):
            return self._future.result(timeout)
        return asyncio.run_coroutine_threadsafe(_await(self._future), self._loop).result(timeout)


async def _await(future):
    return await future


class _InferRef(ResponseRef):
    """The answer of ``handle.infer(...)``: the outputs as numpy arrays, or a ``ServeError``
    saying why the model refused the inputs."""

    __slots__ = ()

    def __await__(self):
        value = yield from super().__await__()
        return _outputs(value)

    def result(self, timeout=None):
        return _outputs(super().result(timeout))


def _outputs(value):
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        raise ServeError(value["error"], getattr(value, "status", 400))
    if isinstance(value, dict) and isinstance(value.get("outputs"), list):
        # An answer in JSON (no binary outputs): its tensors as arrays all the same.
        from . import _oip

        return _oip.outputs_of(value)
    if isinstance(value, (bytes, str)):
        raise ServeError(f"the endpoint did not answer with tensors: {value[:200]!r}", 500)
    return value


class _ErrorAnswer(dict):
    """A JSON error answer (``{"error": ...}``) with the status it came with."""

    __slots__ = ("status",)


class Handle:
    """A client for an endpoint, from inside a backend: the same router as HTTP."""

    __slots__ = ("endpoint", "_options")

    def __init__(self, endpoint, options=None):
        self.endpoint = endpoint
        self._options = options or {}

    def options(self, method_name=None, http_method=None, http_headers=None, query_params=None, shard_key=None, stream=None):
        """A handle with these options; HTTP options make calls HTTP-shaped, and
        ``stream=True`` makes ``remote`` return a stream of chunks (``async for`` it)."""
        options = dict(self._options)
        if stream is not None:
            options["stream"] = bool(stream)
        if method_name is not None:
            options["method"] = method_name
        if shard_key is not None:
            options["shard_key"] = str(shard_key)
        http = dict(options.get("http") or {})
        if http_method is not None:
            http["method"] = http_method.upper()
        if http_headers is not None:
            http["headers"] = [[str(k), str(v)] for k, v in dict(http_headers).items()]
        if query_params is not None:
            from urllib.parse import urlencode

            http["query"] = urlencode(query_params, doseq=True)
        if http:
            options["http"] = http
        return Handle(self.endpoint, options)

    def remote(self, *args):
        """Sends one argument (any Python object, pickled) to the endpoint now: a
        ``ResponseRef`` to await, or with ``stream=True`` a stream of chunks."""
        if len(args) > 1:
            raise TypeError("remote() takes one argument")
        from . import _worker

        return _worker.runtime().handle_call(self.endpoint, self._options, args[0] if args else None)

    def infer(self, inputs, outputs=None):
        """Calls a model served over the Open Inference Protocol (an ``onnx`` backend, say)
        with tensors: ``inputs`` maps input names to numpy arrays; the answer is a dict of
        output names to numpy arrays (only ``outputs`` when given). Sent binary, as
        Triton's client does; await it, or call ``.result()`` from sync code."""
        from . import _oip

        body, header_length = _oip.encode_request(inputs, outputs)
        shaped = self.options(http_method="POST", http_headers={_oip.HEADER_LENGTH: header_length})
        sent = shaped.remote(body)
        return _InferRef(sent._future, sent._loop)

    def __repr__(self):
        return f"Handle({self.endpoint!r})"


def get_handle(endpoint):
    """A handle to ``endpoint``, for composing backends; works inside Ferroserve workers."""
    from . import _worker

    _worker.runtime()
    return Handle(endpoint)


def encode_value(value, reply):
    """(meta, body) of a method's return value: pickled for Python callers, else HTTP-shaped."""
    if reply == "pickle":
        import pickle

        return {"status": 200, "kind": "pickle"}, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if isinstance(value, Response):
        return {"status": value.status_code, "media_type": value.media_type, "headers": value.headers}, value.body
    if isinstance(value, str):
        return {"media_type": "text/plain; charset=utf-8"}, value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"media_type": "application/octet-stream"}, bytes(value)
    if hasattr(value, "status_code") and hasattr(value, "body") and hasattr(value, "raw_headers"):
        # A Starlette Response, without importing Starlette.
        headers = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, v in value.raw_headers
            if k.lower() not in (b"content-length", b"content-type")
        ]
        meta = {"status": value.status_code, "headers": headers}
        media_type = starlette_media_type(value)
        if media_type:
            meta["media_type"] = media_type
        return meta, bytes(value.body)
    return dict(JSON_META), _JSON(value).encode("utf-8")


# The metadata of a value answered as JSON (copied: callers add to theirs).
JSON_META = {"media_type": "application/json"}


def starlette_media_type(response):
    """A Starlette response's media type as Starlette sends it: text with its charset."""
    media_type = getattr(response, "media_type", None)
    if media_type:
        charset = getattr(response, "charset", None)
        if media_type.startswith("text/") and charset and "charset" not in media_type:
            media_type = f"{media_type}; charset={charset}"
    return media_type


def jsonable(value):
    """``value`` as something ``json.dumps`` writes: numpy arrays and scalars, dates and
    times (ISO 8601), durations (seconds), decimals, sets, dataclasses, pydantic models,
    enums, UUIDs and paths. Anything else is a ``TypeError``, as ``json.dumps`` says."""
    import dataclasses
    import datetime
    import decimal
    import enum
    import pathlib
    import uuid

    module = type(value).__module__ or ""
    if (module == "numpy" or module.startswith("numpy.")) and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (uuid.UUID, pathlib.PurePath)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):  # pydantic 2
        return value.model_dump(mode="json")
    if hasattr(value, "dict") and hasattr(value, "__fields__"):  # pydantic 1
        return value.dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The encoder of return values, made once (`json.dumps` with `default=` makes one per call).
_JSON = _codec.encoder(jsonable)


def decode_reply(meta, body):
    """The Python value of an answer to a handle call."""
    kind = meta.get("kind")
    header_length = meta.get("inference_header_length")
    if header_length is not None and meta.get("status", 200) < 300:
        from . import _oip

        return _oip.decode_answer(body, header_length)
    if kind == "pickle":
        import pickle

        return pickle.loads(body)
    if kind == "pickle_list":
        # A generator's objects, read whole for a caller that did not ask for a stream.
        import pickle

        items, offset = [], 0
        for size in meta.get("lens", ()):
            items.append(pickle.loads(body[offset : offset + size]))
            offset += size
        return items
    media_type = (meta.get("media_type") or "").split(";")[0].strip()
    if media_type == "application/json":
        value = _codec.loads(body)
        status = meta.get("status", 200)
        if status >= 400 and isinstance(value, dict):
            value = _ErrorAnswer(value)
            value.status = status
        return value
    if media_type.startswith("text/"):
        return body.decode("utf-8")
    return body
