"""The worker's idle spin: when a worker has answered everything it was given, it waits a
little for the next frame busily (polling its socket) before it sleeps in the event loop.

Why: at low load a request crosses three processes (client, server, worker), and in a
virtual machine waking a CPU that went idle is slow; worse, a CPU that idles loses its
caches, and the next request's Python runs cold. Spinning keeps the worker's CPU awake and
warm through the short gap before the next request (docs/BENCHMARKS.md measured c=1 at
about +25 % on the iris model).

It is adaptive, as a mutex that spins before it sleeps: the worker spins only when the
previous idle gap was short enough that spinning would have caught its end. A worker whose
traffic is sparse stops spinning after one miss, so an idle worker uses no CPU, and a
worker never spins while it has calls in flight.

``FERROSERVE_WORKER_SPIN_US`` sets the longest spin in microseconds (default 200); 0 turns
it off.
"""

import os
import sys
import time

DEFAULT_US = 200
# Longer than this is not a spin but a busy wait: refused.
MAX_US = 100_000


def seconds_from_env(environ=os.environ):
    """The longest spin, in seconds, from ``FERROSERVE_WORKER_SPIN_US``; a value that is not
    a whole number of microseconds from 0 to 100000 is reported and the default used."""
    raw = environ.get("FERROSERVE_WORKER_SPIN_US")
    if raw is None or raw.strip() == "":
        return DEFAULT_US / 1e6
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_US:
        print(
            f"ferroserve worker: FERROSERVE_WORKER_SPIN_US={raw!r} is not a number of "
            f"microseconds from 0 to {MAX_US}; using {DEFAULT_US}",
            file=sys.stderr,
        )
        return DEFAULT_US / 1e6
    return value / 1e6


class IdleSpin:
    """Spins on ``ready()`` for at most ``seconds`` when the worker goes idle, if the last
    gap between going idle and the next frame was that short."""

    __slots__ = ("seconds", "ready", "clock", "on", "idle_at")

    def __init__(self, seconds, ready, clock=time.perf_counter):
        self.seconds = seconds
        self.ready = ready  # True once the next frame can be read without waiting
        self.clock = clock
        self.on = True  # whether the next idle spell starts with a spin
        self.idle_at = None

    def woke(self):
        """Frames arrived: after an idle spell, whether it was short enough to spin through."""
        idle_at = self.idle_at
        if idle_at is not None:
            self.idle_at = None
            self.on = self.clock() - idle_at <= self.seconds

    def idle(self):
        """Nothing is left to do: spin until a frame can be read or the time is up."""
        clock = self.clock
        now = self.idle_at = clock()
        if not self.on:
            return
        deadline = now + self.seconds
        ready = self.ready
        while not ready():
            if clock() > deadline:
                return
