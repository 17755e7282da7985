"""The FAQ's Python snippets (../shared/ray-serve-faq.txt), run against the real binary.
Each FAQ_* string is the FAQ's text; only import lines and the ``client =`` line differ."""

import json
import os
import shutil
import time
import unittest
import urllib.parse
import urllib.request

BINARY = os.environ.get("FERROSERVE_BIN") or shutil.which("ferroserve")
try:
    import starlette  # noqa: F401

    STARLETTE = True
except ImportError:
    STARLETTE = False
NEEDS = "the FAQ's snippets use Starlette: pip install starlette (.ci/run does)"

FAQ_STATEFUL = '''
class StatefulProcessor:
    def __init__(self):
        self.count = 1

    def __call__(self, request):
        return {"current": self.count}

    def other_method(self, inc):
        self.count += inc
        return True
'''

FAQ_CUSTOM_STATUS = '''
from starlette.responses import Response

def f(starlette_request):
    return Response('Hello, world!', status_code=123, media_type='text/plain')

client.create_backend("hello", f)
'''

FAQ_CORS = '''
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

client = serve.start(
    http_options={"port": 0, "middlewares": [
        Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"])]})
'''

FAQ_ISINSTANCE = '''
import starlette.requests

def origin(request):
    if isinstance(request, starlette.requests.Request):
        print("Request coming from web!")
        return "web"
    elif isinstance(request, ServeRequest):
        print("Request coming from Python!")
        return "python"
'''


def fetch(url, data=None, headers=None, method=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@unittest.skipUnless(BINARY and STARLETTE, NEEDS if BINARY else "no ferroserve binary: set FERROSERVE_BIN")
class FaqTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.environ["FERROSERVE_BIN"] = BINARY
        import ferroserve
        from ferroserve import ServeRequest, serve

        cls.scope = {"serve": serve, "ferroserve": ferroserve, "ServeRequest": ServeRequest, "__name__": "__main__"}
        exec(FAQ_CORS, cls.scope)
        cls.client = cls.scope["client"]

    @classmethod
    def tearDownClass(cls):
        cls.client.shutdown()

    def url(self, path):
        return self.client.http_address + path

    def test_calling_an_endpoint_and_another_method_from_python(self):
        exec(FAQ_STATEFUL, self.scope)
        client = self.client
        client.create_backend("stateful", self.scope["StatefulProcessor"])
        client.create_endpoint("endpoint_name", backend="stateful", route="/stateful")
        # The FAQ's lines:
        handle = client.get_handle("endpoint_name")
        ferroserve = self.scope["ferroserve"]
        self.assertEqual(ferroserve.get(handle.remote(None)), {"current": 1})
        self.assertTrue(ferroserve.get(handle.options(method_name="other_method").remote(5)))
        self.assertEqual(json.loads(fetch(self.url("/stateful"))[2]), {"current": 6})
        status, _, body = fetch(self.url("/stateful"), data=b"4", headers={"X-SERVE-CALL-METHOD": "other_method"}, method="POST")
        self.assertEqual(status, 405, "the endpoint takes GET only")

    def test_custom_status_codes_with_a_starlette_response(self):
        exec(FAQ_CUSTOM_STATUS, self.scope)
        self.client.create_endpoint("hello", backend="hello", route="/hello")
        # A raw read: Python's HTTP client drops the body of any 1xx status, 123 included.
        import socket

        host, port = urllib.parse.urlsplit(self.client.http_address).netloc.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, _, body = raw.decode().partition("\r\n\r\n")
        self.assertTrue(head.startswith("HTTP/1.1 123"), head)
        self.assertIn("content-type: text/plain", head.lower())
        self.assertEqual(body, "Hello, world!")

    def test_cors_through_starlettes_middleware(self):
        self.client.create_backend("cors", lambda request: "ok")
        self.client.create_endpoint("cors", backend="cors", route="/cors", methods=["GET", "POST"])
        status, headers, _ = fetch(
            self.url("/cors"),
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            method="OPTIONS",
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers["access-control-allow-origin"], "*")
        status, headers, _ = fetch(self.url("/cors"), headers={"Origin": "https://app.example"})
        self.assertEqual(headers["access-control-allow-origin"], "*")

    def test_web_and_python_requests_are_told_apart(self):
        exec(FAQ_ISINSTANCE, self.scope)
        self.client.create_backend("origin", self.scope["origin"])
        self.client.create_endpoint("origin", backend="origin", route="/origin")
        self.assertEqual(fetch(self.url("/origin"))[2], "web")
        handle = self.client.get_handle("origin").options(http_method="POST")
        self.assertEqual(self.scope["ferroserve"].get(handle.remote(b"hi")), "python")

    def test_a_web_request_passed_to_a_handle_is_not_wrapped(self):
        def inner(request):
            import starlette.requests

            kind = "web" if isinstance(request, starlette.requests.Request) else "python"
            return {"kind": kind, "path": request.url.path, "body": request.body_sync().decode()}

        async def front(request):
            from ferroserve import get_handle

            return await get_handle("inner").remote(request)

        self.client.create_backend("inner", inner)
        self.client.create_endpoint("inner", backend="inner")
        self.client.create_backend("front", front)
        self.client.create_endpoint("front", backend="front", route="/front", methods=["POST"])
        answer = json.loads(fetch(self.url("/front/x"), data=b"passed on", method="POST")[2])
        self.assertEqual(answer, {"kind": "web", "path": "/front/x", "body": "passed on"})

    def test_serverequest_mirrors_starlette_request(self):
        async def mirror(request):
            form = await request.form()
            return {
                "type": type(request).__name__,
                "header": request.headers.get("x-a"),
                "query": request.query_params.get("a"),
                "body": (await request.body()).decode(),
                "json": (await request.json()) if request.headers.get("content-type") == "application/json" else None,
                "form": dict(form) if request.headers.get("content-type", "").startswith("application/x-www-form") else None,
            }

        self.client.create_backend("mirror", mirror)
        self.client.create_endpoint("mirror", backend="mirror", route="/mirror", methods=["GET", "POST"])
        # requests.get(..., headers={...}) / params={"a": "b"}
        web = json.loads(fetch(self.url("/mirror?a=b"), headers={"x-a": "1"})[2])
        self.assertEqual((web["type"], web["header"], web["query"]), ("StarletteRequest", "1", "b"))
        # requests.get(..., json={...})
        web = json.loads(fetch(self.url("/mirror"), data=b'{"k": 1}', headers={"content-type": "application/json"}, method="POST")[2])
        self.assertEqual(web["json"], {"k": 1})
        # requests.get(..., form={...})
        form = urllib.parse.urlencode({"f": "v"}).encode()
        web = json.loads(fetch(self.url("/mirror"), data=form, headers={"content-type": "application/x-www-form-urlencoded"}, method="POST")[2])
        self.assertEqual(web["form"], {"f": "v"})
        # requests.get(..., data="long string") and handle.remote("long string")
        web = json.loads(fetch(self.url("/mirror"), data=b"long string", method="POST")[2])
        self.assertEqual(web["body"], "long string")
        handle = self.client.get_handle("mirror").options(http_method="POST", http_headers={"x-a": "2"}, query_params={"a": "c"})
        python = self.scope["ferroserve"].get(handle.remote(b"long string"))
        self.assertEqual(
            (python["type"], python["header"], python["query"], python["body"]),
            ("ServeRequest", "2", "c", "long string"),
        )

    def test_async_methods_run_concurrently(self):
        import asyncio

        class Sleeper:
            async def __call__(self, request):
                await asyncio.sleep(0.5)
                return "awake"

        self.client.create_backend("sleeper", Sleeper)
        self.client.create_endpoint("sleeper", backend="sleeper")
        handle = self.client.get_handle("sleeper")
        ferroserve = self.scope["ferroserve"]
        started = time.monotonic()
        self.assertEqual(ferroserve.get([handle.remote(i) for i in range(8)]), ["awake"] * 8)
        self.assertLess(time.monotonic() - started, 2.0, "8 calls of 0.5 s ran at once on one replica")


if __name__ == "__main__":
    unittest.main()
