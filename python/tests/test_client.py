"""Ray Serve's client API against the real ``ferroserve`` binary: a server started by the
script, backends by reference and by value, endpoints, handles, get and wait, errors, config
changes and middlewares. ``cargo test`` runs these with FERROSERVE_BIN set."""

import json
import os
import shutil
import time
import types
import unittest
import urllib.error
import urllib.request

import ferroserve
from ferroserve import serve

import client_models

BINARY = os.environ.get("FERROSERVE_BIN") or shutil.which("ferroserve")
try:
    import cloudpickle  # noqa: F401

    CLOUDPICKLE = True
except ImportError:
    CLOUDPICKLE = False
BY_VALUE = "a function of a script goes by value with cloudpickle: pip install cloudpickle (.ci/run does)"


def http_get(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read().decode()


class CORSMiddleware:
    """Stands for starlette.middleware.cors.CORSMiddleware: only its name is read."""


@unittest.skipUnless(BINARY, "no ferroserve binary: build it (cargo build) and set FERROSERVE_BIN")
class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.environ["FERROSERVE_BIN"] = BINARY
        middleware = types.SimpleNamespace(
            cls=CORSMiddleware, args=(), kwargs={"allow_origins": ["*"], "allow_methods": ["*"]}
        )
        cls.client = serve.start(http_options={"port": 0, "middlewares": [middleware]})

    @classmethod
    def tearDownClass(cls):
        cls.client.shutdown()

    def url(self, path):
        return self.client.http_address + path

    def test_a_function_by_reference_over_http_and_a_handle(self):
        client = self.client
        client.create_backend("hello", client_models.hello)
        client.create_endpoint("hello", backend="hello", route="/hello")
        self.assertEqual(http_get(self.url("/hello"))[2], "hello web")
        handle = client.get_handle("hello")
        self.assertEqual(ferroserve.get(handle.remote("world")), "hello world")
        self.assertEqual(ferroserve.get([handle.remote("a"), handle.remote("b")]), ["hello a", "hello b"])

    def test_the_faqs_stateful_processor_through_handle_options(self):
        client = self.client
        client.create_backend("counter", client_models.StatefulProcessor, 10)
        client.create_endpoint("counter", backend="counter", route="/counter")
        handle = client.get_handle("counter")
        self.assertEqual(ferroserve.get(handle.remote(None)), {"current": 10})
        self.assertTrue(ferroserve.get(handle.options(method_name="other_method").remote(5)))
        self.assertEqual(json.loads(http_get(self.url("/counter"))[2]), {"current": 15})

    def test_streams_come_chunk_by_chunk(self):
        client = self.client
        client.create_backend("numbers", client_models.Counter)
        client.create_endpoint("numbers", backend="numbers")
        handle = client.get_handle("numbers")
        self.assertEqual(list(handle.options(stream=True).remote(3)), [{"i": 0}, {"i": 1}, {"i": 2}])
        # Without stream=True: the list of what the generator yielded.
        self.assertEqual(ferroserve.get(handle.remote(2)), [{"i": 0}, {"i": 1}])

        async def read():
            return [item async for item in handle.options(stream=True).remote(2)]

        import asyncio

        self.assertEqual(asyncio.run(read()), [{"i": 0}, {"i": 1}])
        # An error half-way ends the stream with the backend's message.
        broken = handle.options(method_name="broken", stream=True).remote(None)
        self.assertEqual(next(broken), 1)
        with self.assertRaises(serve.RayServeException) as raised:
            next(broken)
        self.assertIn("no more numbers", str(raised.exception))
        # Closing an endless stream closes the generator behind it.
        stats = handle.options(method_name="stats")
        closed = ferroserve.get(stats.remote(None))["closed"]
        endless = handle.options(method_name="endless", stream=True).remote(None)
        self.assertEqual([next(endless) for _ in range(3)], [0, 1, 2])
        endless.close()
        deadline = time.monotonic() + 5
        while ferroserve.get(stats.remote(None))["closed"] != closed + 1:
            self.assertLess(time.monotonic(), deadline, "the generator was not closed")
            time.sleep(0.05)

    @unittest.skipUnless(CLOUDPICKLE, BY_VALUE)
    def test_a_function_defined_here_goes_by_value(self):
        suffix = "!"

        def shout(request):
            return str(request).upper() + suffix

        self.client.create_backend("shout", shout)
        self.client.create_endpoint("shout", backend="shout")
        handle = self.client.get_handle("shout")
        self.assertEqual(ferroserve.get(handle.remote("hey")), "HEY!")

    def test_wait_and_get_timeouts(self):
        client = self.client
        client.create_backend("slow", client_models.Slow, config={"max_concurrent_queries": 10})
        client.create_endpoint("slow", backend="slow")
        handle = client.get_handle("slow")
        refs = [handle.remote(1.5), handle.remote(0.01), handle.remote(0.02)]
        ready, not_ready = ferroserve.wait(refs, num_returns=2, timeout=5)
        self.assertEqual(ready, [refs[1], refs[2]], "in the order given, as ray.wait")
        self.assertEqual(not_ready, [refs[0]])
        with self.assertRaises(ValueError):
            ferroserve.wait([refs[1], refs[1]], num_returns=2)
        self.assertEqual(sorted(ferroserve.get(ready)), [0.01, 0.02])
        with self.assertRaises(ferroserve.GetTimeoutError):
            ferroserve.get(handle.remote(1.0), timeout=0.1)
        ready, not_ready = ferroserve.wait([handle.remote(2.0)], timeout=0.1)
        self.assertEqual((len(ready), len(not_ready)), (0, 1))

    def test_errors_a_script_can_act_on(self):
        client = self.client
        client.create_backend("fails", client_models.fails)
        client.create_endpoint("fails", backend="fails", route="/fails")
        # Over HTTP: a 500 that names the error, never the traceback.
        with self.assertRaises(urllib.error.HTTPError) as answered:
            http_get(self.url("/fails"))
        body = answered.exception.read().decode()
        self.assertEqual(answered.exception.code, 500)
        self.assertIn("this model refuses", body)
        self.assertNotIn("Traceback", body)
        with self.assertRaises(ferroserve.RayServeException) as raised:
            ferroserve.get(client.get_handle("fails").remote(1))
        self.assertIn("ValueError", str(raised.exception))
        self.assertIn("this model refuses", str(raised.exception))
        self.assertNotIn("Traceback", str(raised.exception), "only in .traceback")
        # Where it was raised: the backend's own file and line.
        self.assertIn("client_models.py", raised.exception.traceback)
        self.assertIn('raise ValueError("this model refuses")', raised.exception.traceback)
        self.assertEqual(raised.exception.status, 500)
        with self.assertRaises(ferroserve.RayServeException) as raised:
            client.get_handle("nope")
        self.assertEqual(raised.exception.status, 404)
        with self.assertRaises(ConnectionError) as raised:
            serve.connect("http://127.0.0.1:9")
        self.assertIn("127.0.0.1:9", str(raised.exception))

    def test_config_changes_traffic_and_deletes(self):
        client = self.client
        client.create_backend("pid", client_models.pid, config={"num_replicas": 1})
        client.create_backend("pid2", client_models.pid)
        client.create_endpoint("pid", backend="pid", route="/pid")
        client.update_backend_config("pid", {"num_replicas": 2, "user_config": {"a": 1}})
        self.assertEqual(client.get_backend_config("pid")["num_replicas"], 2)
        self.assertEqual(client.get_backend_config("pid")["user_config"], {"a": 1})
        # Calls made at once reach both replicas (one after the other, they would all go to
        # the one used last, whose caches are warm).
        handle = client.get_handle("pid")
        refs = [handle.remote(None) for _ in range(40)]
        pids = {ferroserve.get(ref) for ref in refs}
        self.assertEqual(len(pids), 2, "two replicas answer")
        client.set_traffic("pid", {"pid": 0.5, "pid2": 0.5})
        self.assertEqual(client.list_endpoints()["pid"]["traffic"], {"pid": 0.5, "pid2": 0.5})
        client.create_backend("pid3", client_models.pid)
        client.shadow_traffic("pid", "pid3", 0.25)
        self.assertEqual(client.list_endpoints()["pid"]["shadow"], {"pid3": 0.25})
        client.shadow_traffic("pid", "pid3", 0.0)
        self.assertIn("pid2", client.list_backends())
        client.delete_endpoint("pid")
        client.delete_backend("pid")
        client.delete_backend("pid2")
        client.delete_backend("pid3")
        self.assertNotIn("pid", client.list_backends())

    def test_a_starlette_cors_middleware_becomes_the_native_one(self):
        self.client.create_backend("cors", client_models.hello)
        self.client.create_endpoint("cors", backend="cors", route="/cors", methods=["GET", "POST"])
        status, headers, _ = http_get(
            self.url("/cors"),
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            method="OPTIONS",
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("access-control-allow-origin"), "*")

    def test_an_unsupported_middleware_says_which_are(self):
        class SessionMiddleware:
            pass

        with self.assertRaises(ValueError) as raised:
            serve.start(http_options={"middlewares": [SessionMiddleware]})
        self.assertIn("CORSMiddleware", str(raised.exception))


class MiddlewareMappingTest(unittest.TestCase):
    def test_starlettes_middlewares_map_to_the_native_ones(self):
        from ferroserve._middlewares import middleware_options

        def named(name, **kwargs):
            return types.SimpleNamespace(cls=type(name, (), {}), args=(), kwargs=kwargs)

        self.assertEqual(middleware_options(named("GZipMiddleware", minimum_size=500)), {"compression": {}})
        self.assertEqual(
            middleware_options(named("TrustedHostMiddleware", allowed_hosts=["a.example", "*.b.example"])),
            {"trusted_host": {"allowed_hosts": ["a.example", "*.b.example"]}},
        )
        self.assertEqual(middleware_options(named("HTTPSRedirectMiddleware")), {"https_redirect": {}})
        with self.assertRaises(ValueError) as raised:
            middleware_options(named("CORSMiddleware", allow_origin_regex=".*"))
        self.assertIn("allow_origin_regex", str(raised.exception))


@unittest.skipUnless(BINARY, "no ferroserve binary: build it (cargo build) and set FERROSERVE_BIN")
class ReadmeTest(unittest.TestCase):
    @unittest.skipUnless(CLOUDPICKLE, BY_VALUE)
    def test_the_readme_script_runs(self):
        import contextlib
        import io
        import re

        readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
        with open(readme) as f:
            text = f.read()
        section = text.split("### From a Python script", 1)[1]
        script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        # Port 0: the test must not need port 8000 free.
        script = script.replace('{"port": 8000}', '{"port": 0}')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            scope = {"__name__": "__main__"}
            exec(compile(script, "README.md", "exec"), scope)
        scope["client"].shutdown()
        self.assertEqual(out.getvalue().splitlines(), ["hello world", "b'hello web'"])


if __name__ == "__main__":
    unittest.main()
