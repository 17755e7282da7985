"""Streamed answers for scripts: ``client.get_handle(...).options(stream=True).remote(arg)``
over the control API's ``POST /api/stream``, read chunk by chunk as they arrive."""

import asyncio
import json
import struct

_FRAME = struct.Struct("<BI")
_CHUNK, _ERROR = 0, 1
_END = object()


class ClientStream:
    """The chunks of a streamed answer, in order: ``for`` them, or ``async for`` them. Each
    is the object the backend's generator yielded (``bytes`` from a Rust backend). The call
    is sent at once; an error the backend raised comes as ``RayServeException``.
    ``close()`` (or dropping it) stops the stream, which closes the generator."""

    def __init__(self, client, meta, body):
        self._response = None
        self._head = None
        self._done = False
        self._future = client._pool().submit(_open, client, meta, body)

    @staticmethod
    def _close_opened(future):
        if not future.cancelled() and future.exception() is None:
            response, _ = future.result()
            if response is not None:
                response.close()

    def _start(self):
        if self._response is None and not self._done:
            self._response, self._head = self._future.result()
            if self._response is None:
                self._done = True

    def __iter__(self):
        return self

    def __next__(self):
        from .serve import RayServeException

        self._start()
        if self._head is not None and self._response is None:
            # A whole answer, not a stream: its one value.
            value, self._head = self._head, None
            return value[0]
        if self._done:
            raise StopIteration
        header = self._read(_FRAME.size)
        if not header:
            self.close()
            raise StopIteration
        tag, length = _FRAME.unpack(header)
        payload = self._read(length)
        if tag == _ERROR:
            self.close()
            raise RayServeException(payload.decode("utf-8", "replace"), status=500)
        if self._head.get("kind") == "pickle":
            import pickle

            return pickle.loads(payload)
        return payload

    def _read(self, size):
        data = b""
        while len(data) < size:
            part = self._response.read(size - len(data))
            if not part:
                if data:
                    from .serve import RayServeException

                    self.close()
                    raise RayServeException("the stream broke off inside a chunk", status=502)
                break
            data += part
        return data

    def __aiter__(self):
        return self

    async def __anext__(self):
        # StopIteration cannot cross a future: the end comes back as a sentinel.
        item = await asyncio.to_thread(next, self, _END)
        if item is _END:
            raise StopAsyncIteration
        return item

    def close(self):
        """Stops the stream: the server drops it, and closes the generator."""
        self._done = True
        if not self._future.cancel():
            # Sent already: its response is closed once it comes (at once if it has).
            self._future.add_done_callback(self._close_opened)
        if self._response is not None:
            self._response.close()
            self._response = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _open(client, meta, body):
    """(response, head) of a streamed call; (None, (value,)) when the answer came whole."""
    from .serve import _decode_call

    encoded = json.dumps(meta).encode("utf-8")
    response = client._open("POST", "/api/stream", struct.pack("<I", len(encoded)) + encoded + body, timeout=None)
    if response.headers.get("content-type") != "application/x-ferroserve-stream":
        with response:
            return None, (_decode_call(response.read()),)
    return response, json.loads(response.headers["x-ferroserve-head"])
