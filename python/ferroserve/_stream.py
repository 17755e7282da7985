"""Streamed answers: a generator's (or a ``StreamingResponse``'s) chunks sent as they are
made, never more than a window ahead of what the server took; and the streamed answers of
handle calls (``handle.options(stream=True).remote(...)``), read as they come."""

import asyncio
import collections
import inspect
import pickle

from . import _protocol as P
from ._api import ServeError, StreamingResponse, starlette_media_type

_END = object()


class Credit:
    """What one stream has sent and not yet seen acknowledged: its chunks' sizes."""

    __slots__ = ("sizes", "bytes", "waiter")

    def __init__(self):
        self.sizes = collections.deque()
        self.bytes = 0
        self.waiter = None

    def blocked(self):
        return bool(self.sizes) and (len(self.sizes) >= P.STREAM_WINDOW or self.bytes >= P.STREAM_WINDOW_BYTES)

    def sent(self, size):
        self.sizes.append(size)
        self.bytes += size

    def acked(self, count):
        for _ in range(min(count, len(self.sizes))):
            self.bytes -= self.sizes.popleft()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def room(self, loop):
        while self.blocked():
            self.waiter = loop.create_future()
            await self.waiter
        self.waiter = None


def stream_of(value):
    """``(head, source)`` when ``value`` is a streamed answer — a generator, an async
    generator, a ``StreamingResponse`` (ours or Starlette's) — else ``None``."""
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        return {"media_type": "text/plain; charset=utf-8"}, value
    if isinstance(value, StreamingResponse):
        head = {"status": value.status_code, "headers": value.headers}
        if value.media_type:
            head["media_type"] = value.media_type
        return head, value.content
    if hasattr(value, "body_iterator") and hasattr(value, "raw_headers") and hasattr(value, "status_code"):
        # Starlette's StreamingResponse, without importing Starlette.
        headers = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, v in value.raw_headers
            if k.lower() not in (b"content-length", b"content-type", b"transfer-encoding")
        ]
        head = {"status": value.status_code, "headers": headers}
        media_type = starlette_media_type(value)
        if media_type:
            head["media_type"] = media_type
        return head, value.body_iterator
    return None


def _chunk(item):
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"a streamed chunk must be str or bytes, not {type(item).__name__}")


async def _close(worker, source, sync):
    """Closes the generator: ``GeneratorExit`` is raised where it waits."""
    try:
        if sync:
            close = getattr(source, "close", None)
            if close is not None:
                # On the executor, after a `next` that may still run there.
                await worker.loop.run_in_executor(worker.executor, close)
        else:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
    except Exception:
        pass


async def run(worker, request_id, head, source, reply):
    """Sends ``source``'s chunks as the answer to ``request_id``: pickled objects for a
    Python caller, else ``str`` or ``bytes`` chunks."""
    loop = worker.loop
    credit = Credit()
    worker.streams[request_id] = credit
    pickled = reply == "pickle"
    if pickled:
        head = {"status": 200, "kind": "pickle"}
    sync = not hasattr(source, "__anext__") and not hasattr(source, "__aiter__")
    source = iter(source) if sync else source.__aiter__()
    worker.send(request_id, P.STREAM_START, head)
    try:
        while True:
            if credit.blocked():
                await credit.room(loop)
            if sync:
                item = await loop.run_in_executor(worker.executor, next, source, _END)
                if item is _END:
                    break
            else:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    break
            body = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) if pickled else _chunk(item)
            if not body:
                continue
            credit.sent(len(body))
            worker.send(request_id, P.STREAM_CHUNK, None, body)
    except asyncio.CancelledError:
        # Its caller left: the generator is closed, and the answer frees the replica slot.
        await _close(worker, source, sync)
        worker.send(request_id, P.ERROR, {"error_type": "CancelledError", "message": "cancelled: the caller left"})
    except Exception as error:
        await _close(worker, source, sync)
        worker.fail(request_id, error)
    else:
        worker.send(request_id, P.STREAM_END)
    finally:
        worker.streams.pop(request_id, None)
        worker.tasks.pop(request_id, None)


class StreamRef:
    """The streamed answer of ``handle.options(stream=True).remote(...)``: ``async for`` its
    chunks in ``async def`` code, or ``for`` them in plain methods. Each chunk is the object
    the target's Python generator yielded, or ``bytes`` from a backend in Rust; an error
    the target raised comes as ``ServeError``. Dropping it (or ``cancel()``) before its end
    closes the target's generator."""

    def __init__(self, worker):
        self._worker = worker
        self._loop = worker.loop
        self._id = None
        self._head = None
        self._items = collections.deque()
        self._waiter = None
        self._done = False
        self._error = None
        self._taken = (0, 0)

    # --- fed on the event loop by the worker ------------------------------------------

    def _wake(self):
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_head(self, meta):
        if "error" in meta:
            self._error = ServeError(meta["error"], meta.get("status", 500))
            self._done = True
        else:
            self._head = meta
        self._wake()

    def _on_chunk(self, body):
        self._items.append(body)
        self._wake()

    def _on_end(self, meta):
        if "error" in meta:
            self._error = ServeError(meta["error"], meta.get("status", 500))
        self._done = True
        self._wake()

    # --- read by the caller ----------------------------------------------------------------

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self._items:
            if self._done:
                self._forget()
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter
        body = self._items.popleft()
        chunks, size = self._taken[0] + 1, self._taken[1] + len(body)
        if not self._done and (chunks >= P.STREAM_WINDOW // 2 or size >= P.STREAM_WINDOW_BYTES // 2):
            self._worker.send(self._id, P.HANDLE_ACK, None, P.COUNT.pack(chunks))
            chunks, size = 0, 0
        self._taken = (chunks, size)
        if self._head.get("kind") == "pickle":
            return pickle.loads(body)
        return body

    def __iter__(self):
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("iterating a stream with `for` would block the event loop; use `async for`")
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(self.__anext__(), self._loop).result()
            except StopAsyncIteration:
                return

    def _forget(self):
        self._worker.handle_calls.pop(self._id, None)

    def cancel(self):
        """Stops the stream: the target's generator is closed."""
        if self._done:
            return
        self._done = True
        if self._id is not None:
            self._forget()
            self._loop.call_soon_threadsafe(self._worker.send, self._id, P.HANDLE_CANCEL)
        # A reader waiting for the next chunk sees the end.
        self._loop.call_soon_threadsafe(self._wake)

    async def aclose(self):
        self.cancel()

    def __del__(self):
        try:
            self.cancel()
        except Exception:
            pass
