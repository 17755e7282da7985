"""A worker's handle calls to other endpoints (``ferroserve.get_handle(...).remote(...)``
inside a backend): sent to the server over the worker's socket, answered by futures or
streams. A part of ``Worker`` (_worker.py), which supplies ``loop``, ``send`` and the
``handle_calls`` and ``next_handle_id`` it keeps."""

import asyncio
import concurrent.futures
import contextvars
import json
import pickle
import weakref

from . import _protocol as P
from . import _stream
from ._api import ResponseRef, ServeError, decode_reply
from ._starlette import forwarded

# The W3C traceparent of the request the current call runs: its handle calls carry it on.
_TRACE = contextvars.ContextVar("ferroserve_traceparent", default=None)


def _encode_arg(arg):
    if isinstance(arg, str):
        return "text", arg.encode("utf-8")
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return "bytes", bytes(arg)
    if arg is None or isinstance(arg, (bool, int, float)):
        return "json", json.dumps(arg).encode("utf-8")
    return "pickle", pickle.dumps(arg, protocol=pickle.HIGHEST_PROTOCOL)


class HandleCalls:
    """The handle-call half of the worker's connection."""

    def handle_call(self, endpoint, options, arg):
        forward = forwarded(arg)
        if forward is not None:
            meta = {"endpoint": endpoint, "method": options.get("method", "__call__"), "arg": "bytes", "forward": forward[0]}
            body = forward[1]
        else:
            kind, body = _encode_arg(arg)
            meta = {"endpoint": endpoint, "method": options.get("method", "__call__"), "arg": kind}
        if "http" in options:
            meta["http"] = options["http"]
        if "shard_key" in options:
            meta["shard_key"] = options["shard_key"]
        stream = None
        if options.get("stream"):
            meta["stream"] = True
            stream = _stream.StreamRef(self)
        trace = _TRACE.get()
        if trace is not None:
            meta["traceparent"] = trace
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if stream is not None:
            if on_loop:
                self.send_handle_call(stream, meta, body)
            else:
                self.loop.call_soon_threadsafe(self.send_handle_call, stream, meta, body)
            return stream
        if on_loop:
            future = self.loop.create_future()
            self.send_handle_call(future, meta, body)
        else:
            future = concurrent.futures.Future()
            self.loop.call_soon_threadsafe(self.send_handle_call, future, meta, body)
        return ResponseRef(future, self.loop)

    def send_handle_call(self, waiter, meta, body):
        if isinstance(waiter, _stream.StreamRef) and waiter._done:
            return  # cancelled before it was sent
        handle_id = self.next_handle_id
        self.next_handle_id += 1
        if isinstance(waiter, _stream.StreamRef):
            # Held weakly: a stream its caller dropped is cancelled.
            waiter._id = handle_id
            waiter = weakref.ref(waiter)
        self.handle_calls[handle_id] = waiter
        self.send(handle_id, P.HANDLE_CALL, meta, body)

    def handle_stream_frame(self, handle_id, kind, meta, body):
        ref = self.handle_calls.get(handle_id)
        stream = ref() if isinstance(ref, weakref.ref) else None
        if stream is None:
            # Dropped (or cancelled and forgotten): the server stops sending.
            self.handle_calls.pop(handle_id, None)
            if kind == P.HANDLE_CHUNK:
                self.send(handle_id, P.HANDLE_CANCEL)
            return
        if kind == P.HANDLE_CHUNK:
            stream._on_chunk(body)
        else:
            self.handle_calls.pop(handle_id, None)
            stream._on_end(meta)

    def handle_reply(self, handle_id, meta, body):
        future = self.handle_calls.get(handle_id)
        if isinstance(future, weakref.ref):
            # The head of a streamed answer (or its error).
            stream = future()
            if stream is None or "error" in meta:
                self.handle_calls.pop(handle_id, None)
            if stream is None:
                if "error" not in meta:
                    self.send(handle_id, P.HANDLE_CANCEL)
                return
            stream._on_head(meta)
            return
        self.handle_calls.pop(handle_id, None)
        if future is None and meta.get("stream"):
            self.send(handle_id, P.HANDLE_CANCEL)  # a stream dropped before its head
            return
        if future is None or future.done():
            return
        if "error" in meta:
            future.set_exception(ServeError(meta["error"], meta.get("status", 500)))
            return
        try:
            future.set_result(decode_reply(meta, body))
        except Exception as error:
            future.set_exception(error)
