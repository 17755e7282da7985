"""The worker process: one replica of a Python backend, talking to the ferroserve server
over a Unix socket (``python -m ferroserve._worker SOCKET``).

Frames are parsed as they arrive (an ``asyncio.Protocol``); ``async def`` methods run as
tasks, so up to ``max_concurrent_queries`` of them overlap; plain methods run one at a time
on a thread, so they never block the I/O loop.
"""

import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import json
import os
import pickle
import select
import sys
import threading
import time
import traceback

from . import _protocol as P
from . import _codec, _spin, _stream
from ._handles import _TRACE, HandleCalls
from ._api import _JSON, JSON_META, encode_value
from ._starlette import http_request, starlette_request_class


_RUNTIME = None


def runtime():
    """The worker this process runs; an error outside a Ferroserve worker."""
    if _RUNTIME is None:
        raise RuntimeError("get_handle() and handle calls work inside a Ferroserve worker only")
    return _RUNTIME


# One encoder for every frame's metadata: `json.dumps` with an option makes a new one per call.
_META = json.JSONEncoder(separators=(",", ":")).encode


def _dumps(meta):
    return _META(meta).encode("utf-8")


# The metadata of the most common answer, a dict as JSON: encoded once for all.
_JSON_REPLY = _dumps(JSON_META)


# Return values answered whole without a look for a stream.
_PLAIN = frozenset((str, bytes, dict, list, int, float, bool, type(None)))


def _returning(method):
    """An async generator function as a coroutine function returning its generator."""

    async def call(arg):
        return method(arg)

    return call


class InitError(Exception):
    """The backend could not be made; the message says why."""


class Worker(HandleCalls, asyncio.Protocol):
    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.buffer = bytearray()
        self.instance = None
        self.methods = {}
        self.is_async = {}
        self.batch_methods = set()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferroserve-sync")
        self.handle_calls = {}
        self.tasks = {}  # request id -> the task running an async call (or a stream)
        self.streams = {}  # request id -> the credit of a streamed answer
        self.running_plain = set()  # plain calls running on the executor
        self.cancelled = set()  # those of them whose caller left: their stream is not started
        self.next_handle_id = 1
        self.closed = loop.create_future()
        self.name = "?"
        self.out = []  # frames of this event-loop pass, written together at its end
        self.flushing = False
        self.spin = None  # the idle spin (_spin.py), once connected; None when off

    # --- the connection -------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        seconds = _spin.seconds_from_env()
        sock = transport.get_extra_info("socket")
        if seconds > 0 and sock is not None:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            poll = poller.poll
            self.spin = _spin.IdleSpin(seconds, lambda: bool(poll(0)))

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        if self.spin is not None:
            self.spin.woke()
        buffer = self.buffer
        buffer += data
        unpack = P.HEADER.unpack_from
        size = P.HEADER.size
        have = len(buffer)
        at = 0
        # Every whole frame read, then what they took cut from the buffer at once.
        while have - at >= size:
            meta_len, body_len, request_id, kind = unpack(buffer, at)
            start = at + size
            end = start + meta_len + body_len
            if have < end:
                break
            meta = _codec.loads(buffer[start : start + meta_len]) if meta_len else {}
            body = bytes(buffer[start + meta_len : end])
            at = end
            try:
                self.dispatch(request_id, kind, meta, body)
            except Exception as error:  # a bug here must not kill the connection
                self.fail(request_id, error)
        if at:
            del buffer[:at]

    def send(self, request_id, kind, meta=None, body=b""):
        self.send_encoded(request_id, kind, _dumps(meta) if meta is not None else b"", body)

    def send_encoded(self, request_id, kind, meta, body):
        # The frames of one pass of the event loop go out in one write, at its end.
        out = self.out
        out.append(P.HEADER.pack(len(meta), len(body), request_id, kind))
        if meta:
            out.append(meta)
        if body:
            out.append(body)
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.flushing = False
        transport = self.transport
        if transport.is_closing():
            # Shut down, or the server is gone: nobody reads them (and uvloop raises).
            self.out = []
            return
        out = self.out
        if out:
            self.out = []
            transport.write(b"".join(out))
        if self.spin is not None and not (self.tasks or self.running_plain or transport.get_write_buffer_size()):
            self.spin.idle()

    def send_threadsafe(self, request_id, kind, meta=None, body=b""):
        self.loop.call_soon_threadsafe(self.send, request_id, kind, meta, body)

    # --- frames from the server -------------------------------------------------------

    def dispatch(self, request_id, kind, meta, body):
        if kind == P.CALL:
            self.call(request_id, meta, body)
        elif kind == P.BATCH:
            self.batch_call(request_id, meta, body)
        elif kind == P.HANDLE_REPLY:
            self.handle_reply(request_id, meta, body)
        elif kind == P.INIT:
            self.loop.create_task(self.init(request_id, meta))
        elif kind == P.RECONFIGURE:
            self.loop.create_task(self.reconfigure(request_id, meta.get("user_config")))
        elif kind == P.HEALTH:
            self.loop.create_task(self.check_health(request_id))
        elif kind == P.STREAM_ACK:
            credit = self.streams.get(request_id)
            if credit is not None:
                credit.acked(P.COUNT.unpack_from(body)[0])
        elif kind in (P.HANDLE_CHUNK, P.HANDLE_END):
            self.handle_stream_frame(request_id, kind, meta, body)
        elif kind == P.CANCEL:
            task = self.tasks.get(request_id)
            if task is not None:
                task.cancel()
                # Cancelled before its first step, its coroutine never runs: answered here.
                task.add_done_callback(lambda done: self.cancelled_early(request_id, done))
            elif request_id in self.running_plain:
                self.cancelled.add(request_id)
        elif kind == P.SHUTDOWN:
            self.flush()
            self.transport.close()

    def decode_arg(self, meta, body):
        http = meta.get("http")
        if http is not None:
            return http_request(meta.get("origin", "http"), http, body)
        kind = meta.get("arg")
        if kind == "text":
            return body.decode("utf-8")
        if kind == "json":
            return _codec.loads(body)
        if kind == "pickle":
            return pickle.loads(body)
        return body

    def call(self, request_id, meta, body):
        name = meta.get("method", "__call__")
        method = self.methods.get(name)
        if method is None:
            raise AttributeError(f"{self.name} has no method `{name}`")
        arg = self.decode_arg(meta, body)
        reply = meta.get("reply", "http")
        trace = meta.get("traceparent")
        # A traced call runs in a context of its own, where its handle calls find the
        # trace; an untraced one in a copy of this (untraced) one, as a task always does.
        context = None
        if trace is not None:
            context = contextvars.copy_context()
            context.run(_TRACE.set, trace)
        if self.is_async[name]:
            call = self.run_async(request_id, method, arg, reply)
            # Made inside the context, the task copies it (`context=` is Python 3.11+ only).
            if context is None:
                self.tasks[request_id] = self.loop.create_task(call)
            else:
                self.tasks[request_id] = context.run(self.loop.create_task, call)
        else:
            self.running_plain.add(request_id)
            if context is None:
                future = self.loop.run_in_executor(self.executor, method, arg)
            else:
                future = self.loop.run_in_executor(self.executor, context.run, method, arg)
            future.add_done_callback(lambda done: self.finish(request_id, done, reply))

    async def run_async(self, request_id, method, arg, reply):
        try:
            value = await method(arg)
            if type(value) not in _PLAIN:
                streamed = _stream.stream_of(value)
                if streamed is not None:
                    # In this task, which a cancel reaches.
                    await _stream.run(self, request_id, *streamed, reply)
                    return
        except asyncio.CancelledError:
            # Its caller left. The answer frees the replica slot the call held.
            self.send(request_id, P.ERROR, {"error_type": "CancelledError", "message": "cancelled: the caller left"})
        except Exception as error:
            self.fail(request_id, error)
        else:
            self.answer(request_id, value, reply)
        finally:
            self.tasks.pop(request_id, None)

    def cancelled_early(self, request_id, done):
        if done.cancelled() and self.tasks.get(request_id) is done:
            self.tasks.pop(request_id, None)
            self.streams.pop(request_id, None)
            self.send(request_id, P.ERROR, {"error_type": "CancelledError", "message": "cancelled: the caller left"})

    def finish(self, request_id, done, reply):
        self.running_plain.discard(request_id)
        cancelled = False
        if self.cancelled:
            cancelled = request_id in self.cancelled
            self.cancelled.discard(request_id)
        error = done.exception()
        if error is not None:
            self.fail(request_id, error)
            return
        value = done.result()
        if type(value) not in _PLAIN:
            streamed = _stream.stream_of(value)
            if streamed is not None:
                if cancelled:
                    # Its caller left while the method ran: the generator never starts.
                    close = getattr(streamed[1], "close", None)
                    if close is not None:
                        close()
                    self.send(request_id, P.ERROR, {"error_type": "CancelledError", "message": "cancelled: the caller left"})
                    return
                self.tasks[request_id] = self.loop.create_task(_stream.run(self, request_id, *streamed, reply))
                return
        self.answer(request_id, value, reply)

    def answer(self, request_id, value, reply):
        try:
            if type(value) is dict and reply != "pickle":
                # What encode_value gives a dict, without encoding the same metadata again.
                meta, body = _JSON_REPLY, _JSON(value).encode("utf-8")
            else:
                meta, body = encode_value(value, reply)
                meta = _dumps(meta)
        except Exception as error:
            self.fail(request_id, TypeError(f"cannot send the return value: {error}"))
            return
        self.send_encoded(request_id, P.REPLY, meta, body)

    def fail(self, request_id, error):
        meta = {"error_type": type(error).__name__, "message": str(error)}
        status = getattr(error, "status_code", None)
        if isinstance(status, int) and 400 <= status <= 599:
            # An HTTPException (ours, Starlette's or FastAPI's): the status and the detail.
            meta["status"] = status
            meta["message"] = str(getattr(error, "detail", None) or error)
        if status is None or status >= 500:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            sys.stderr.write("".join(lines))
            sys.stderr.flush()
            if status is None:
                # For Python callers of handles (never put in an HTTP answer); bounded.
                meta["traceback"] = "".join(lines)[-65536:]
        self.send(request_id, P.ERROR, meta)

    # --- batches --------------------------------------------------------------------------

    def batch_call(self, request_id, meta, body):
        name = meta.get("method", "__call__")
        method = self.methods[name]
        args = []
        offset = 0
        for item in meta["items"]:
            size = item.get("body_len", 0)
            args.append(self.decode_arg(item, body[offset : offset + size]))
            offset += size
        replies = [item.get("reply", "http") for item in meta["items"]]
        if self.is_async[name]:
            self.loop.create_task(self.run_batch_async(request_id, method, args, replies))
        else:
            future = self.loop.run_in_executor(self.executor, method, args)
            future.add_done_callback(lambda done: self.finish_batch(request_id, done, replies))

    async def run_batch_async(self, request_id, method, args, replies):
        try:
            values = await method(args)
        except Exception as error:
            self.fail(request_id, error)
        else:
            self.answer_batch(request_id, values, replies)

    def finish_batch(self, request_id, done, replies):
        error = done.exception()
        if error is not None:
            self.fail(request_id, error)
        else:
            self.answer_batch(request_id, done.result(), replies)

    def answer_batch(self, request_id, values, replies):
        if not isinstance(values, (list, tuple)):
            self.fail(request_id, TypeError(f"a batch method must return a list, not {type(values).__name__}"))
            return
        items, bodies = [], []
        try:
            for value, reply in zip(values, replies):
                meta, body = encode_value(value, reply)
                meta["body_len"] = len(body)
                items.append(meta)
                bodies.append(body)
        except Exception as error:
            self.fail(request_id, TypeError(f"cannot send a return value of the batch: {error}"))
            return
        # A list of the wrong length is reported as such by the server.
        for _ in range(len(values) - len(replies)):
            items.append({"body_len": 0})
        self.send(request_id, P.BATCH_REPLY, {"items": items}, b"".join(bodies))

    # --- start and reconfigure -----------------------------------------------------------

    async def init(self, request_id, meta):
        try:
            starlette_request_class()  # imported now, not on the first request
            self.make(meta)
            user_config = meta.get("user_config")
            if user_config is not None and hasattr(self.instance, "reconfigure"):
                result = self.instance.reconfigure(user_config)
                if inspect.isawaitable(result):
                    await result
        except InitError as error:
            self.send(request_id, P.INIT_ERROR, {"message": str(error)})
            return
        except Exception as error:
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            self.send(request_id, P.INIT_ERROR, {"message": f"{self.name}: {type(error).__name__}: {error}"})
            return
        self.send(
            request_id,
            P.READY,
            {"methods": sorted(self.methods), "batch_methods": sorted(self.batch_methods)},
        )

    def make(self, meta):
        target = meta["target"]
        module_name, _, attr = target.partition(":")
        self.name = target
        if not module_name or not attr:
            raise InitError(f"`{target}` is not of the form module:attribute")
        pickled = meta.get("pickled")
        if pickled is not None:
            return self.make_from(meta, self.unpickle(target, pickled))
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            raise InitError(f"cannot import module `{module_name}`: {type(error).__name__}: {error}") from error
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise InitError(f"module `{module_name}` has no attribute `{attr}`") from None
        self.make_from(meta, obj)

    def unpickle(self, target, pickled):
        # Pickled by the client with cloudpickle: loading it needs cloudpickle importable here.
        import base64
        import pickle

        try:
            return pickle.loads(base64.b64decode(pickled))
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            hint = ""
            if isinstance(error, ModuleNotFoundError) and error.name == "cloudpickle":
                hint = " (pip install cloudpickle into the workers' interpreter)"
            raise InitError(f"cannot unpickle `{target}`: {type(error).__name__}: {error}{hint}") from error

    def make_from(self, meta, obj):
        target = self.name
        if inspect.isclass(obj):
            init_args = meta.get("init_args")
            try:
                if init_args is None:
                    self.instance = obj()
                elif isinstance(init_args, dict):
                    self.instance = obj(**init_args)
                elif isinstance(init_args, list):
                    self.instance = obj(*init_args)
                else:
                    self.instance = obj(init_args)
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                raise InitError(f"`{target}` failed to start: {type(error).__name__}: {error}") from error
            for name in dir(self.instance):
                if name.startswith("_") or name == "reconfigure":
                    continue
                member = getattr(self.instance, name)
                if callable(member) and not inspect.isclass(member):
                    self.methods[name] = member
            if callable(self.instance):
                self.methods["__call__"] = self.instance.__call__
        elif callable(obj):
            self.methods["__call__"] = obj
        else:
            raise InitError(f"`{target}` is neither a class nor a function")
        for name, method in list(self.methods.items()):
            if inspect.isasyncgenfunction(method):
                # Called on the event loop; its generator streams the answer.
                method = self.methods[name] = _returning(method)
            self.is_async[name] = inspect.iscoroutinefunction(method)
            if getattr(method, "_ferroserve_batch", False):
                self.batch_methods.add(name)

    async def reconfigure(self, request_id, user_config):
        try:
            if hasattr(self.instance, "reconfigure"):
                result = self.instance.reconfigure(user_config)
                if inspect.isawaitable(result):
                    await result
        except Exception as error:
            self.fail(request_id, error)
            return
        self.send(request_id, P.REPLY, {"status": 200}, b"")


    async def check_health(self, request_id):
        # Answered from the event loop: a loop that is stuck does not answer, and the server
        # counts the check as failed when its timeout passes.
        try:
            check = getattr(self.instance, "check_health", None)
            if check is not None:
                result = check()
                if inspect.isawaitable(result):
                    await result
        except Exception as error:
            meta = {"error_type": type(error).__name__, "message": str(error)}
            self.send(request_id, P.ERROR, meta)
            return
        self.send(request_id, P.REPLY, {"status": 200}, b"")


def _new_loop():
    try:
        import uvloop  # a faster event loop, where installed

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _exit_with_server():
    """Ends this process within a second or so of its server's end (its parent changes),
    even while user code blocks the event loop, where the closed socket goes unnoticed: a
    daemon thread that looks once a second."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ferroserve-server-watch", daemon=True).start()


def main(argv):
    global _RUNTIME
    if len(argv) != 2:
        print("usage: python -m ferroserve._worker SOCKET", file=sys.stderr)
        return 2
    _exit_with_server()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(loop)
    _RUNTIME = worker
    loop.run_until_complete(loop.create_unix_connection(lambda: worker, argv[1]))
    loop.run_until_complete(worker.closed)
    worker.executor.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    # Run in the importable module, not in `__main__`, so that `ferroserve.get_handle`
    # finds this worker.
    from ferroserve import _worker

    sys.exit(_worker.main(sys.argv))
