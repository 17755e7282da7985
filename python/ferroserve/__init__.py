"""Ferroserve's Python API: what backend code imports, and Ray Serve's client API for scripts.

    from ferroserve import Response, accept_batch, get_handle   # in backends
    from ferroserve import serve                                # in scripts: serve.start(), ...
    import ferroserve; ferroserve.get(ref); ferroserve.wait(refs)

The ``ferroserve`` binary carries this package and puts it on the import path of every
worker it starts, so backends need nothing installed; ``pip install ./python`` gives the
same package to editors and tests.
"""

from ._api import (
    HTTPException,
    Handle,
    Response,
    ResponseRef,
    ServeError,
    StreamingResponse,
    accept_batch,
    get_handle,
    jsonable,
)
from ._request import FormData, Headers, QueryParams, Request, UploadFile
from ._starlette import ServeRequest

__version__ = "0.1.0"

# The client side (``serve``, ``get``, ``wait``) is imported on first use, so that workers,
# which never need it, do not pay for its imports.
_CLIENT = ("get", "wait", "RayServeException", "ServeException", "GetTimeoutError")


def __getattr__(name):
    if name in _CLIENT:
        from . import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'ferroserve' has no attribute {name!r}")

__all__ = [
    "FormData",
    "HTTPException",
    "Handle",
    "Headers",
    "QueryParams",
    "Request",
    "Response",
    "ResponseRef",
    "ServeError",
    "ServeRequest",
    "StreamingResponse",
    "UploadFile",
    "accept_batch",
    "get",
    "get_handle",
    "jsonable",
    "wait",
]
