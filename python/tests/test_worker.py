"""Unit tests of the worker runtime's connection, on a transport that behaves as uvloop's."""

import asyncio
import json
import unittest

from ferroserve import _worker
from ferroserve._protocol import CALL, CANCEL, SHUTDOWN, frame


class UvloopLikeTransport:
    """Raises on a write after close, as uvloop's transports do (asyncio's only warn)."""

    def __init__(self):
        self.closed = False
        self.writes = []

    def write(self, data):
        if self.closed:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.writes.append(data)

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default


class ShutdownTest(unittest.TestCase):
    def test_answers_after_shutdown_are_dropped_not_raised(self):
        async def scenario():
            loop = asyncio.get_running_loop()
            errors = []
            loop.set_exception_handler(lambda _loop, context: errors.append(context))
            worker = _worker.Worker(loop)
            transport = UvloopLikeTransport()
            worker.connection_made(transport)

            async def slow(_arg):
                await asyncio.sleep(10)

            worker.methods["slow"] = slow
            worker.is_async["slow"] = True
            meta = json.dumps({"method": "slow", "arg": "bytes"}).encode()
            worker.data_received(frame(1, CALL, meta))
            await asyncio.sleep(0)  # the call is running
            # Its caller left and the server shuts down, both in one read: the call's
            # answer (cancelled) comes after the socket is closed.
            worker.data_received(frame(1, CANCEL) + frame(0, SHUTDOWN))
            for _ in range(5):
                await asyncio.sleep(0)
            return errors, transport

        errors, transport = asyncio.run(scenario())
        self.assertTrue(transport.closed)
        self.assertEqual(errors, [])


if __name__ == "__main__":
    unittest.main()
