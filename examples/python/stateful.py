"""The FAQ's StatefulProcessor: `other_method` through the X-SERVE-CALL-METHOD header or a
handle's `options(method_name=...)`; each replica (one worker process each) keeps its own
count."""

import os


class StatefulProcessor:
    def __init__(self):
        self.count = 1

    def __call__(self, request):
        return {"current": self.count, "pid": os.getpid()}

    def other_method(self, inc):
        # Over HTTP `inc` is the request; through a handle it is the value itself.
        if hasattr(inc, "json"):
            import asyncio

            inc = asyncio.run(inc.json())
        self.count += inc
        return True


class Bumper:
    """Calls the counter's `other_method` through a handle, as the FAQ does from Python."""

    def __init__(self):
        import ferroserve

        self.counter = ferroserve.get_handle("counter")

    async def __call__(self, request):
        return await self.counter.options(method_name="other_method").remote(5)
