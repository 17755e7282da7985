"""Ferroserve's Python API: what backend code imports.

    from ferroserve import Response, accept_batch, get_handle

The ``ferroserve`` binary carries this package and puts it on the import path of every
worker it starts, so backends need nothing installed; ``pip install ./python`` gives the
same package to editors and tests.
"""

from ._api import HTTPException, Handle, Response, ResponseRef, ServeError, accept_batch, get_handle, jsonable
from ._request import FormData, Headers, QueryParams, Request, UploadFile

__version__ = "0.1.0"

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
    "UploadFile",
    "accept_batch",
    "get_handle",
    "jsonable",
]
