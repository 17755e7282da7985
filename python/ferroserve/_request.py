"""The request a Python backend gets for an HTTP call (or a handle call made with HTTP
options): the parts of Starlette's ``Request`` that backends use."""

import abc
from urllib.parse import parse_qsl

from . import _codec
from ._api import HTTPException


class _MultiDict:
    """Ordered (key, value) pairs; ``d[key]`` is the last value for the key."""

    __slots__ = ("_items",)

    def _key(self, key):
        return key

    def __getitem__(self, key):
        key = self._key(key)
        for k, v in reversed(self._items):
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def getlist(self, key):
        key = self._key(key)
        return [v for k, v in self._items if k == key]

    def __contains__(self, key):
        key = self._key(key)
        return any(k == key for k, _ in self._items)

    def keys(self):
        return [k for k, _ in self._items]

    def values(self):
        return [v for _, v in self._items]

    def items(self):
        return list(self._items)

    def __iter__(self):
        return iter(dict.fromkeys(self.keys()))

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"{type(self).__name__}({self._items!r})"


class Headers(_MultiDict):
    """Request headers: a case-insensitive multi-mapping of text."""

    __slots__ = ()

    def __init__(self, items=()):
        self._items = [(k.lower(), v) for k, v in items]

    def _key(self, key):
        return key.lower()


class QueryParams(_MultiDict):
    """Query parameters: a multi-dict; ``params[key]`` is the last value for the key."""

    __slots__ = ()

    def __init__(self, query=""):
        self._items = parse_qsl(query, keep_blank_values=True) if query else []


class UploadFile:
    """A file of a multipart form."""

    def __init__(self, filename, content_type, data):
        self.filename = filename
        self.content_type = content_type
        self._data = data

    async def read(self):
        return self._data

    @property
    def size(self):
        return len(self._data)

    def __repr__(self):
        return f"UploadFile(filename={self.filename!r}, size={self.size})"


class FormData(QueryParams):
    """A parsed form: text fields and ``UploadFile``s, as a multi-dict."""

    __slots__ = ()

    def __init__(self, items=()):
        self._items = list(items)


def _parse_multipart(content_type, body):
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("malformed multipart body")
    items = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            items.append((name, UploadFile(filename, part.get_content_type(), data)))
        else:
            charset = part.get_content_charset() or "utf-8"
            items.append((name, data.decode(charset)))
    return items


class BadJSON(HTTPException, ValueError):
    """A body that is not JSON: a 400 for the caller, and a ``ValueError`` (as
    ``json.JSONDecodeError`` is) for code that catches that."""


def json_of(body):
    """A request body parsed as JSON; a body that is not JSON is a 400 (``BadJSON``)."""
    try:
        return _codec.loads(body)
    except ValueError as error:
        raise BadJSON(400, f"the request body is not valid JSON: {error}") from None


class Request(metaclass=abc.ABCMeta):
    """An HTTP-shaped request.

    ``origin`` is ``"http"`` for a request that came over HTTP and ``"handle"`` for a handle
    call made with HTTP options; a handle call without them hands the method its argument
    itself, not a ``Request``. When Starlette is installed, an HTTP call is a
    ``starlette.requests.Request`` with this class's API too, and ``isinstance(request,
    ferroserve.Request)`` holds for it as well.
    """

    __slots__ = ("origin", "method", "path", "query_string", "headers", "_body", "_query", "_json")

    def __init__(self, origin, method, path, query_string, headers, body):
        self.origin = origin
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self._body = body
        self._query = None
        self._json = None

    @classmethod
    def from_meta(cls, origin, http, body):
        return cls(
            origin,
            http.get("method", "GET"),
            http.get("path", "/"),
            http.get("query", ""),
            Headers(http.get("headers", ())),
            body,
        )

    @property
    def url(self):
        host = self.headers.get("host", "localhost")
        query = f"?{self.query_string}" if self.query_string else ""
        return f"http://{host}{self.path}{query}"

    @property
    def query_params(self):
        if self._query is None:
            self._query = QueryParams(self.query_string)
        return self._query

    async def body(self):
        return self._body

    async def json(self):
        return self.json_sync()

    async def form(self):
        return self.form_sync()

    # The body has arrived whole before the method runs, so it can also be read without
    # awaiting: what a plain ``def`` method uses.

    def body_sync(self):
        """The body, for a plain ``def`` method."""
        return self._body

    def json_sync(self):
        """The body as JSON, for a plain ``def`` method; a body that is not JSON is a 400."""
        if self._json is None:
            self._json = json_of(self._body)
        return self._json

    def form_sync(self):
        """The body as a form, for a plain ``def`` method; a malformed form is a 400."""
        content_type = self.headers.get("content-type", "")
        media_type = content_type.split(";")[0].strip().lower()
        try:
            if media_type == "multipart/form-data":
                return FormData(_parse_multipart(content_type, self._body))
            return FormData(parse_qsl(self._body.decode("latin-1"), keep_blank_values=True))
        except ValueError as error:
            raise HTTPException(400, f"the request body is not a valid form: {error}") from None

    def __repr__(self):
        return f"Request(origin={self.origin!r}, method={self.method!r}, path={self.path!r})"
