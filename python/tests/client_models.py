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
