"""HTTP calls as real ``starlette.requests.Request`` objects, when Starlette is installed in
the worker's interpreter (the FAQ's ``isinstance(request, starlette.requests.Request)``
then holds); handle calls with HTTP options as ``ServeRequest``. Without Starlette, HTTP
calls get Ferroserve's own ``Request``, which mirrors Starlette's API."""

from urllib.parse import unquote

from ._request import Headers, Request, json_of

_CLASS = None  # the StarletteRequest class once looked for; False without Starlette


class ServeRequest(Request):
    """A handle call made with HTTP options (the FAQ's name): Ferroserve's ``Request``."""

    __slots__ = ()


def starlette_request_class():
    """The request class for HTTP calls: a subclass of Starlette's, or ``None``."""
    global _CLASS
    if _CLASS is None:
        import os

        if os.environ.get("FERROSERVE_STARLETTE") == "0":
            # Ferroserve's own Request even with Starlette installed: about 1 µs less a call.
            _CLASS = False
            return None
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
            self._fs_headers = headers  # (name, value) pairs as they came
            self._fs_request = None
            self._fs_json = None

        @property
        def _ferroserve(self):
            # Made only for the readers that need it (most calls never do).
            if self._fs_request is None:
                scope = self.scope
                query = scope["query_string"].decode("latin-1")
                headers = Headers(self._fs_headers)
                self._fs_request = Request("http", scope["method"], scope["path"], query, headers, self._body)
            return self._fs_request

        @property
        def path(self):
            return self.scope["path"]

        @property
        def query_string(self):
            return self.scope["query_string"].decode("latin-1")

        def body_sync(self):
            return self._body

        def json_sync(self):
            if self._fs_json is None:
                self._fs_json = json_of(self._body)
            return self._fs_json

        def form_sync(self):
            return self._ferroserve.form_sync()

        async def json(self):
            # A body that is not JSON is a 400 with the parser's message, as without Starlette.
            return self.json_sync()

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
    cls = ServeRequest if origin != "http" else starlette_request_class() or Request
    if cls is ServeRequest or cls is Request:
        headers = Headers(http.get("headers", ()))
        return cls(origin, http.get("method", "GET"), http.get("path", "/"), http.get("query", ""), headers, body)
    raw_path = http.get("path", "/")
    path = unquote(raw_path) if "%" in raw_path else raw_path
    raw = http.get("headers", ())
    scope = _Scope(
        type="http",
        asgi=_ASGI,
        http_version="1.1",
        method=http.get("method", "GET"),
        scheme="http",
        path=path,
        query_string=http.get("query", "").encode("latin-1"),
        root_path="",
        client=None,
        server=None,
        path_params={},
    )
    scope.raw = raw
    scope["raw_path"] = raw_path.encode("utf-8")
    return cls(scope, body, raw)


_ASGI = {"version": "3.0"}


class _Scope(dict):
    """An ASGI scope whose ``headers`` and ``raw_path`` are encoded when first read."""

    __slots__ = ("raw",)

    def get(self, key, default=None):
        return self[key] if key in ("headers", "raw_path") else dict.get(self, key, default)

    def __contains__(self, key):
        return key in ("headers", "raw_path") or dict.__contains__(self, key)

    def __missing__(self, key):
        if key == "headers":
            # Header values arrive as text; UTF-8 gives back the bytes a client sent.
            value = [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in self.raw]
        elif key == "raw_path":
            value = self["path"].encode("utf-8")
        else:
            raise KeyError(key)
        self[key] = value
        return value


def forwarded(arg):
    """``(forward meta, body)`` when ``arg`` is a web request passed on to a handle (it then
    reaches the backend as that web request, not wrapped), else ``None``."""
    if not isinstance(arg, Request) or getattr(arg, "origin", None) != "http":
        return None
    scope = getattr(arg, "scope", None)
    if scope is not None:
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        meta = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode("latin-1"), "headers": headers}
    else:
        meta = {"method": arg.method, "path": arg.path, "query": arg.query_string, "headers": [[k, v] for k, v in arg.headers.items()]}
    return meta, arg.body_sync()
