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


class ConvenienceTest(unittest.TestCase):
    """What every model server needs from the body and the return value."""

    def test_sync_methods_read_the_body_without_awaiting(self):
        r = ferroserve.Request.from_meta("http", {}, b'{"x": [1, 2]}')
        self.assertEqual(r.body_sync(), b'{"x": [1, 2]}')
        self.assertEqual(r.json_sync(), {"x": [1, 2]})
        form = ferroserve.Request.from_meta("http", {}, b"a=1").form_sync()
        self.assertEqual(form["a"], "1")

    def test_a_body_that_is_not_json_is_a_400(self):
        r = ferroserve.Request.from_meta("http", {}, b"{not json")
        with self.assertRaises(ferroserve.HTTPException) as caught:
            r.json_sync()
        self.assertEqual(caught.exception.status_code, 400)
        self.assertIn("not valid JSON", caught.exception.detail)
        with self.assertRaises(ferroserve.HTTPException):
            asyncio.run(r.json())

    def test_model_outputs_serialise_to_json(self):
        import dataclasses
        import datetime
        import decimal
        import enum
        import uuid

        @dataclasses.dataclass
        class Prediction:
            label: str
            score: float

        class Color(enum.Enum):
            RED = "red"

        value = {
            "when": datetime.datetime(2026, 11, 28, 12, 30),
            "day": datetime.date(2026, 11, 28),
            "took": datetime.timedelta(milliseconds=1500),
            "price": decimal.Decimal("1.25"),
            "tags": {"a"},
            "best": Prediction("cat", 0.9),
            "color": Color.RED,
            "id": uuid.UUID(int=1),
        }
        meta, body = encode_value(value, "http")
        self.assertEqual(meta["media_type"], "application/json")
        self.assertEqual(
            json.loads(body),
            {
                "when": "2026-11-28T12:30:00",
                "day": "2026-11-28",
                "took": 1.5,
                "price": 1.25,
                "tags": ["a"],
                "best": {"label": "cat", "score": 0.9},
                "color": "red",
                "id": "00000000-0000-0000-0000-000000000001",
            },
        )
        with self.assertRaises(TypeError):
            encode_value(object(), "http")

    def test_numpy_arrays_and_scalars_serialise_to_json(self):
        try:
            import numpy
        except ImportError:
            self.skipTest("numpy is not installed (.ci/run installs it)")
        value = {"labels": numpy.array([0, 2, 1]), "score": numpy.float32(0.5), "n": numpy.int64(3)}
        _, body = encode_value(value, "http")
        self.assertEqual(json.loads(body), {"labels": [0, 2, 1], "score": 0.5, "n": 3})

    def test_pydantic_models_serialise_to_json(self):
        try:
            import pydantic
        except ImportError:
            self.skipTest("pydantic is not installed (.ci/run installs it)")

        class Answer(pydantic.BaseModel):
            label: str
            score: float

        _, body = encode_value([Answer(label="dog", score=0.75)], "http")
        self.assertEqual(json.loads(body), [{"label": "dog", "score": 0.75}])
