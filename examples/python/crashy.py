"""A backend that can be made to crash its worker, for the crash/restart tests."""

import asyncio
import os


class Crashy:
    def __init__(self):
        self.pid = os.getpid()

    async def __call__(self, request):
        if getattr(request, "query_params", {}).get("slow"):
            await asyncio.sleep(0.005)
        return {"pid": self.pid}

    async def slow(self, request):
        await asyncio.sleep(5)
        return "too late"

    def exit(self, request):
        os._exit(3)

    def fail(self, request):
        raise ValueError("bad input: expected a number")

    def segfault(self, request):
        import ctypes

        ctypes.string_at(0)
