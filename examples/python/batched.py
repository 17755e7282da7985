"""A batch method: it gets a list of requests and returns a list of answers, in order."""

import os

from ferroserve import accept_batch


class Doubler:
    def __init__(self):
        self.batch_sizes = []

    @accept_batch
    async def __call__(self, requests):
        self.batch_sizes.append(len(requests))
        values = []
        for r in requests:
            values.append(int((await r.body()).decode()) if hasattr(r, "body") else int(r))
        return [v * 2 for v in values]

    def sizes(self, request):
        return self.batch_sizes

    @accept_batch
    def crash(self, requests):
        os._exit(3)
