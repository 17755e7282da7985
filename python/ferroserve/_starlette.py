"""HTTP calls as real ``starlette.requests.Request`` objects, when Starlette is installed in
the worker's interpreter (the FAQ's ``isinstance(request, starlette.requests.Request)``
then holds); handle calls with HTTP options as ``ServeRequest``. Without Starlette, HTTP
calls get Ferroserve's own ``Request``, which mirrors Starlette's API."""

from ._request import Headers, Request

_CLASS = None  # the StarletteRequest class once looked for; False without Starlette


class ServeRequest(Request):
    """A handle call made with HTTP options (the FAQ's name): Ferroserve's ``Request``."""

    __slots__ = ()


def starlette_request_class():
    """The request class for HTTP calls: a subclass of Starlette's, or ``None``."""
    global _CLASS
    if _CLASS is None:
        try:
            from starlette.requests import Request as Starlette
        except ImportError:
            _CLASS = False
        else:
            _CLASS = _make_class(Starlette)
    return _CLASS or None


def _make_class(Starlette):
    class StarletteRequest(Starlette):
        """Starlette's request over the body Ferroserve received whole, with Ferroserve's
        own readers too (``body_sync``, ``json_sync``, ``form_sync``, ``path``,
        ``query_string``, ``origin``), so code written for either works."""

        origin = "http"

        def __init__(self, scope, body, headers):
            super().__init__(scope, _receive_nothing)
            self._body = body  # Starlette's cache of the body: body() returns it at once
            self._ferroserve = Request("http", scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, body)

        @property
        def path(self):
            return self.scope["path"]

        @property
        def query_string(self):
            return self.scope["query_string"].decode("latin-1")

        def body_sync(self):
            return self._body

        def json_sync(self):
            return self._ferroserve.json_sync()

        def form_sync(self):
            return self._ferroserve.form_sync()

        async def json(self):
            # A body that is not JSON is a 400 with the parser's message, as without Starlette.
            return self._ferroserve.json_sync()

        async def form(self, **_limits):
            # Starlette's own form() needs python-multipart; this reads the whole body already here.
            return self._ferroserve.form_sync()

    # Code that asks `isinstance(request, ferroserve.Request)` keeps working.
    Request.register(StarletteRequest)
    return StarletteRequest


async def _receive_nothing():
    return {"type": "http.request", "body": b"", "more_body": False}


def http_request(origin, http, body):
    """The request object a method gets for an HTTP-shaped call."""
    headers = Headers(http.get("headers", ()))
    if origin != "http":
        return ServeRequest(origin, http.get("method", "GET"), http.get("path", "/"), http.get("query", ""), headers, body)
    cls = starlette_request_class()
    if cls is None:
        return Request(origin, http.get("method", "GET"), http.get("path", "/"), http.get("query", ""), headers, body)
    path = http.get("path", "/")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": http.get("method", "GET"),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "query_string": http.get("query", "").encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in http.get("headers", ())],
        "client": None,
        "server": None,
        "path_params": {},
    }
    return cls(scope, body, headers)
