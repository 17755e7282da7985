"""Unit tests of the Python API, run by the Rust test suite with the machine's python3."""

import asyncio
import json
import pickle
import unittest

import ferroserve
from ferroserve._api import decode_reply, encode_value
from ferroserve._protocol import HEADER, REPLY, frame


class RequestTest(unittest.TestCase):
    def request(self, **http):
        http.setdefault("headers", [["Content-Type", "application/json"], ["X-User", "ada"]])
        return ferroserve.Request.from_meta("http", http, b'{"a": 1}')

    def test_headers_are_case_insensitive(self):
        r = self.request()
        self.assertEqual(r.headers["x-user"], "ada")
        self.assertEqual(r.headers.get("X-USER"), "ada")
        self.assertIn("content-type", r.headers)
        self.assertIsNone(r.headers.get("missing"))

    def test_query_params_are_a_multidict(self):
        r = self.request(query="a=1&b=x%20y&a=2")
        self.assertEqual(r.query_params["a"], "2")
        self.assertEqual(r.query_params.getlist("a"), ["1", "2"])
        self.assertEqual(r.query_params["b"], "x y")

    def test_body_and_json(self):
        r = self.request(method="POST", path="/p")
        self.assertEqual(asyncio.run(r.body()), b'{"a": 1}')
        self.assertEqual(asyncio.run(r.json()), {"a": 1})
        self.assertEqual((r.method, r.path, r.origin), ("POST", "/p", "http"))

    def test_forms(self):
        r = ferroserve.Request.from_meta("http", {"headers": [["content-type", "application/x-www-form-urlencoded"]]}, b"a=1&b=2")
        form = asyncio.run(r.form())
        self.assertEqual((form["a"], form["b"]), ("1", "2"))
        body = (
            b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n"
        )
        r = ferroserve.Request.from_meta("http", {"headers": [["content-type", "multipart/form-data; boundary=B"]]}, body)
        upload = asyncio.run(r.form())["f"]
        self.assertEqual((upload.filename, asyncio.run(upload.read())), ("x.txt", b"hello"))


class ValuesTest(unittest.TestCase):
    def test_return_values_become_responses(self):
        self.assertEqual(encode_value("hi", "http"), ({"media_type": "text/plain; charset=utf-8"}, b"hi"))
        self.assertEqual(encode_value(b"\x00", "http")[0]["media_type"], "application/octet-stream")
        meta, body = encode_value({"a": [1]}, "http")
        self.assertEqual((meta["media_type"], json.loads(body)), ("application/json", {"a": [1]}))
        meta, body = encode_value(ferroserve.Response("x", status_code=123, media_type="text/plain"), "http")
        self.assertEqual((meta["status"], meta["media_type"], body), (123, "text/plain", b"x"))
        with self.assertRaises(TypeError):
            encode_value(object(), "http")

    def test_python_callers_get_the_object_back(self):
        meta, body = encode_value((1, {2}), "pickle")
        self.assertEqual(decode_reply(meta, body), (1, {2}))
        self.assertEqual(pickle.loads(body), (1, {2}))

    def test_replies_decode_by_media_type(self):
        self.assertEqual(decode_reply({"media_type": "application/json"}, b"[1]"), [1])
        self.assertEqual(decode_reply({"media_type": "text/plain; charset=utf-8"}, b"hi"), "hi")
        self.assertEqual(decode_reply({"media_type": "application/octet-stream"}, b"\x01"), b"\x01")

    def test_accept_batch_marks_the_method(self):
        @ferroserve.accept_batch
        def m(requests):
            return requests

        self.assertTrue(m._ferroserve_batch)

    def test_frames_have_the_fixed_header(self):
        data = frame(7, REPLY, b"{}", b"body")
        meta_len, body_len, request_id, kind = HEADER.unpack_from(data)
        self.assertEqual((meta_len, body_len, request_id, kind, HEADER.size), (2, 4, 7, REPLY, 20))
        self.assertEqual(data[HEADER.size :], b"{}body")

    def test_get_handle_needs_a_worker(self):
        with self.assertRaises(RuntimeError):
            ferroserve.get_handle("anything")


if __name__ == "__main__":
    unittest.main()
