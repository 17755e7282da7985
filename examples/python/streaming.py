"""Streamed answers, for docs/streaming.md and the streaming tests: async and plain
generators, ``StreamingResponse`` (ours and Starlette's), server-sent events, a stream that
fails half-way, and streams read through handles.

Pick a method with the ``X-SERVE-CALL-METHOD`` header; ``?n=`` and ``?delay=`` shape the
token streams."""

import asyncio
import time

from ferroserve import StreamingResponse, get_handle


def _shape(request):
    query = request.query_params
    return int(query.get("n", "5")), float(query.get("delay", "0")), float(query.get("pause", "0"))


class Streamer:
    def __init__(self):
        self.made = 0  # chunks made by the endless streams
        self.closed = 0  # endless streams whose generator was closed
        self.closed_sync = 0

    async def __call__(self, request):
        """Tokens from an async generator: the first at once, the rest after ``pause``."""
        n, delay, pause = _shape(request)
        for i in range(n):
            yield f"token {i}\n"
            if i == 0 and pause:
                await asyncio.sleep(pause)
            elif delay:
                await asyncio.sleep(delay)

    def plain(self, request):
        """The same from a plain generator, run on the worker's thread."""
        n, delay, pause = _shape(request)
        for i in range(n):
            yield f"token {i}\n"
            time.sleep(pause if i == 0 and pause else delay)

    async def endless(self, request):
        """Chunks of ``size`` bytes until its caller leaves."""
        size = int(request.query_params.get("size", "16"))
        chunk = b"x" * size
        try:
            while True:
                self.made += 1
                yield chunk
                await asyncio.sleep(0.001 if size < 1024 else 0)
        except (GeneratorExit, asyncio.CancelledError):
            self.closed += 1
            raise

    def endless_plain(self, request):
        try:
            while True:
                yield "x" * 16
                time.sleep(0.01)
        finally:
            self.closed_sync += 1

    async def sse(self, request):
        """Server-sent events."""
        n, delay, _ = _shape(request)

        async def events():
            for i in range(n):
                yield f"event: token\ndata: t{i}\n\n"
                await asyncio.sleep(delay)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def starlette(self, request):
        """Starlette's StreamingResponse, with a status and a header of its own."""
        from starlette.responses import StreamingResponse as Starlette

        async def parts():
            for part in ("a", "b", "c"):
                yield part

        return Starlette(parts(), status_code=201, media_type="text/csv", headers={"x-parts": "3"})

    async def sized(self, request):
        """``n`` chunks of ``size`` bytes, for the load test."""
        n = int(request.query_params.get("n", "1000"))
        chunk = b"y" * int(request.query_params.get("size", "1024"))
        for _ in range(n):
            yield chunk

    async def hundred(self, request):
        """100 small chunks, for the benchmark."""
        for i in range(100):
            yield b"chunk %d\n" % i

    async def fails_midway(self, request):
        yield "before\n"
        raise RuntimeError("the model fell over")

    async def objects(self, n):
        """Python objects, for handle callers: they get the objects themselves."""
        for i in range(n):
            yield {"i": i, "square": i * i}

    async def relay(self, request):
        """Reads `objects` through a handle as a stream, passing each on as a JSON line."""
        n, _, _ = _shape(request)
        handle = get_handle("streamer").options(method_name="objects", stream=True)
        async for item in handle.remote(n):
            yield f"{item['i']}:{item['square']}\n"

    def relay_plain(self, request):
        """The same from a plain method, with `for`."""
        n, _, _ = _shape(request)
        handle = get_handle("streamer").options(method_name="objects", stream=True)
        return [item["square"] for item in handle.remote(n)]

    async def whole(self, request):
        """A streaming method called without `stream=True`: the list of what it yielded."""
        n, _, _ = _shape(request)
        return await get_handle("streamer").options(method_name="objects").remote(n)

    async def first_only(self, request):
        """Takes one object of an endless stream through a handle, then drops the stream."""
        stream = get_handle("streamer").options(method_name="endless_objects", stream=True).remote(None)
        async for item in stream:
            return {"first": item}

    async def drop_at_once(self, request):
        """Starts a stream through a handle and drops it before reading anything."""
        stream = get_handle("streamer").options(method_name="endless_objects", stream=True).remote(None)
        stream.cancel()
        return "dropped"

    async def endless_objects(self, _):
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            self.closed += 1

    async def stats(self, request):
        return {"made": self.made, "closed": self.closed, "closed_sync": self.closed_sync}
