"""A worker that breaks the frame protocol when asked, for the protocol-limit tests and the
chaos suite (`tests/chaos.rs`)."""

import asyncio
import os
import random
import struct

from ferroserve import _worker

HEADER = struct.Struct("<IIQB3x")
MAX_META = 16 << 20
MAX_BODY = 1 << 30


class Rogue:
    def __call__(self, request):
        return "fine"

    async def nap(self, request):
        # A well-behaved call with a known service time: `?ms=N` (10 by default).
        await asyncio.sleep(int(request.query_params.get("ms", "10")) / 1000)
        return "rested"

    async def huge_frame(self, request):
        # A REPLY header that declares a 4 GiB body, and nothing after it.
        header = struct.pack("<IIQB3x", 2, 0xFFFFFFFF, 1, 7)
        _worker.runtime().transport.write(header + b"{}")
        return "never read"

    async def fuzz_frames(self, request):
        """Writes what `?seed=N` picks to the server: a few frames of random kinds (with
        ids no call has, and meta that may not be JSON), then one that breaks the stream —
        random bytes, a header over a limit, or a truncated frame. A worker whose stream
        the server cannot parse past is killed; one the server still waits on (a truncated
        frame) exits 1 s later, as a worker that died mid-write would."""
        rng = random.Random(int(request.query_params.get("seed", "0")))
        out = bytearray()
        for _ in range(rng.randrange(4)):
            kind = rng.choice([0, 1, 2, 3, 4, 7, 8, 9, 10, 12, 13, 14, rng.randrange(256)])
            meta = rng.choice([b"{}", b'{"status": 200}', b"not json", rng.randbytes(rng.randrange(64))])
            body = rng.randbytes(rng.randrange(256))
            out += HEADER.pack(len(meta), len(body), rng.randrange(1 << 40, 1 << 64), kind) + meta + body
        stray = rng.randrange(1 << 40, 1 << 64)  # no call has this id
        ending = rng.randrange(4)
        if ending == 0:  # random bytes, read as a header and whatever follows
            out += rng.randbytes(rng.randrange(20, 200))
        elif ending == 1:  # meta over the limit
            out += HEADER.pack(rng.randrange(MAX_META + 1, 1 << 32), 0, stray, 7)
        elif ending == 2:  # body over the limit
            out += HEADER.pack(2, rng.randrange(MAX_BODY + 1, 1 << 32), stray, 7) + b"{}"
        else:  # a frame that declares more than it sends
            meta_len, body_len = rng.randrange(1, 4096), rng.randrange(4096)
            out += HEADER.pack(meta_len, body_len, stray, 7) + rng.randbytes(rng.randrange(meta_len))
        _worker.runtime().transport.write(bytes(out))
        asyncio.get_running_loop().call_later(1.0, os._exit, 1)
        return "never read"
