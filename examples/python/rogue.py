"""A worker that breaks the frame protocol when asked, for the protocol-limit tests."""

import struct

from ferroserve import _worker


class Rogue:
    def __call__(self, request):
        return "fine"

    async def huge_frame(self, request):
        # A REPLY header that declares a 4 GiB body, and nothing after it.
        header = struct.pack("<IIQB3x", 2, 0xFFFFFFFF, 1, 7)
        _worker.runtime().transport.write(header + b"{}")
        return "never read"
