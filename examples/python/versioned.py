"""A model with a version, for the update tests and docs/operations.md: `init_args` set the
version it answers with, `user_config` a greeting changed in place, and `Sick` fails its
health check (a version that must be rolled back)."""

import asyncio
import os


class Model:
    def __init__(self, version="1"):
        self.version = version
        self.greeting = "hello"

    def reconfigure(self, config):
        self.greeting = config.get("greeting", "hello")

    async def __call__(self, request):
        await asyncio.sleep(0.002)
        return {"version": self.version, "greeting": self.greeting, "pid": os.getpid()}

    def check_health(self):
        pass


class Sick(Model):
    async def check_health(self):
        raise RuntimeError("the model's weights are missing")


class Freezable(Model):
    async def freeze(self, request):
        # Blocks the event loop: the worker still has its socket, but answers nothing.
        import time

        time.sleep(1000)
