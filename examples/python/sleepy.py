"""`async def` methods run concurrently (up to max_concurrent_queries); plain methods run
one at a time in a thread."""

import asyncio
import time


class Sleeper:
    async def __call__(self, request):
        await asyncio.sleep(0.1)
        return "slept"

    def blocking(self, request):
        time.sleep(0.1)
        return "blocked"


async def noop(request):
    return "ok"
