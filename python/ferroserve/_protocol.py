"""The wire protocol between the ferroserve server and a worker, over a Unix socket.

Every frame is a fixed 20-byte header — meta length, body length, request id, kind (little
endian u32, u32, u64, u8, then 3 bytes of padding) — then the JSON metadata, then the raw
body. Many requests are in flight on one connection; replies carry their request's id.
"""

import struct

HEADER = struct.Struct("<IIQB3x")

# server -> worker
INIT = 1
CALL = 4
BATCH = 5
RECONFIGURE = 6
HANDLE_REPLY = 11
SHUTDOWN = 12
CANCEL = 13  # the caller left: cancel the call with this id (an async one; a plain one runs on)
HEALTH = 14  # run the instance's `check_health`, if it has one; REPLY when healthy, ERROR if not

# worker -> server
READY = 2
INIT_ERROR = 3
REPLY = 7
BATCH_REPLY = 8
ERROR = 9
HANDLE_CALL = 10


def frame(request_id, kind, meta=b"", body=b""):
    """One frame's bytes; ``meta`` is already-encoded JSON."""
    return b"".join((HEADER.pack(len(meta), len(body), request_id, kind), meta, body))
