"""Backends the client tests create by reference (this module is importable)."""

import asyncio
import time


def hello(request):
    if isinstance(request, str):
        return f"hello {request}"
    return "hello web"


class StatefulProcessor:
    """The FAQ's example."""

    def __init__(self, start=1):
        self.count = start

    def __call__(self, request):
        return {"current": self.count}

    def other_method(self, inc):
        self.count += inc
        return True


class Slow:
    async def __call__(self, seconds):
        await asyncio.sleep(seconds if isinstance(seconds, (int, float)) else 0)
        return seconds


def fails(request):
    raise ValueError("this model refuses")


def pid(request):
    import os

    time.sleep(0.001)
    return os.getpid()


class Counter:
    """Streams the numbers below ``n``, as objects; closing the stream closes it."""

    def __init__(self):
        self.closed = 0

    async def __call__(self, n):
        try:
            for i in range(n):
                yield {"i": i}
        finally:
            self.closed += 1

    async def endless(self, _):
        import asyncio

        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            self.closed += 1

    async def broken(self, _):
        yield 1
        raise ValueError("no more numbers")

    def stats(self, _):
        return {"closed": self.closed}
