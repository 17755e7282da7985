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
STREAM_ACK = 18  # body: u32 count of a stream's chunks the server took; as many more may be sent
HANDLE_CHUNK = 19  # a chunk of a streamed answer to a handle call (after its HANDLE_REPLY head)
HANDLE_END = 20  # the end of a streamed answer to a handle call; meta has `error` if it failed

# worker -> server
READY = 2
INIT_ERROR = 3
REPLY = 7
BATCH_REPLY = 8
ERROR = 9
HANDLE_CALL = 10
STREAM_START = 15  # the head (status, media type, headers) of a streamed answer, instead of REPLY
STREAM_CHUNK = 16  # one chunk of it
STREAM_END = 17  # its end (an ERROR ends it too)
HANDLE_ACK = 21  # body: u32 count of chunks of a streamed handle answer taken
HANDLE_CANCEL = 22  # the caller dropped a streamed handle answer: stop it

# A stream has at most this many chunks (and bytes, though always one chunk) sent and not
# yet acknowledged; the reader acknowledges half a window at a time.
STREAM_WINDOW = 16
STREAM_WINDOW_BYTES = 262144  # 256 KiB

COUNT = struct.Struct("<I")


def frame(request_id, kind, meta=b"", body=b""):
    """One frame's bytes; ``meta`` is already-encoded JSON."""
    return b"".join((HEADER.pack(len(meta), len(body), request_id, kind), meta, body))
