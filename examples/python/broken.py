"""Backends that cannot start, for the tests of start-up errors."""

import time


class FailingInit:
    def __init__(self):
        raise RuntimeError("the model file is missing")


