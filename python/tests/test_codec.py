"""_codec gives what the standard json module gives: the same values and the same errors."""

import json
import unittest

from ferroserve import _codec


def outcome(function, *args):
    try:
        return "ok", function(*args)
    except Exception as error:
        return type(error).__name__, str(error)


class LoadsTest(unittest.TestCase):
    def test_the_same_value_or_error_as_json_loads(self):
        cases = [
            b'{"features": [5.9, 3.0, 5.1, 1.8]}',
            bytearray(b'[1, "two", null, true]'),
            '{"text": "caf\\u00e9"}',
            "é".encode("utf-8").join([b'"', b'"']),
            b' {"padded": 1}\n',
            b'\xef\xbb\xbf{"bom": 1}',
            '{"utf16": 1}'.encode("utf-16"),
            b"",
            b"   ",
            b'{"a": }',
            b"[1] trailing",
            b'"\xff"',
            b"1e400",
            b"[" * 100000,
        ]
        for data in cases:
            with self.subTest(data=data[:20]):
                self.assertEqual(outcome(_codec.loads, data), outcome(json.loads, data))

    def test_a_decode_error_is_a_value_error(self):
        with self.assertRaises(ValueError):
            _codec.loads(b"{not json")


def strict(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def sets_as_lists(value):
    if isinstance(value, set):
        return sorted(value)
    return strict(value)


class EncoderTest(unittest.TestCase):
    def test_the_same_text_as_json_encoder(self):
        encode = _codec.encoder(sets_as_lists)
        standard = json.JSONEncoder(default=sets_as_lists).encode
        for value in [{"class": 2}, [1, 2.5, "é", None, True], {3, 1}, "text", 7, float("inf"), {"n": {"m": [{}]}}]:
            with self.subTest(value=value):
                self.assertEqual(encode(value), standard(value))

    def test_errors_are_the_standard_ones_and_leave_it_working(self):
        encode = _codec.encoder(strict)
        cycle = []
        cycle.append(cycle)
        self.assertEqual(outcome(encode, cycle), ("ValueError", "Circular reference detected"))
        self.assertEqual(outcome(encode, {"x": object()}), ("TypeError", "Object of type object is not JSON serializable"))
        # The same list again, now without its cycle: no stale record says it is circular.
        cycle.clear()
        self.assertEqual(encode({"again": cycle}), '{"again": []}')


if __name__ == "__main__":
    unittest.main()
