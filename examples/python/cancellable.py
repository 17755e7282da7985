"""Calls whose callers leave, for the cancellation tests: an async method that never
returns, a plain one that cannot be interrupted, and what the worker can tell about them."""

import asyncio
import threading
import time


class Cancellable:
    def __init__(self):
        self.started = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    async def hang(self, request):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def busy(self, request):
        with self.lock:
            self.started += 1
        time.sleep(0.5)
        return "done"

    async def stats(self, request):
        return {"tasks": len(asyncio.all_tasks()), "started": self.started, "cancelled": self.cancelled}
