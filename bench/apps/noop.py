"""The Python rows of the benchmark: the same no-op handler as the peers, and a batched one."""

from ferroserve import accept_batch


async def noop(request):
    return "ok"


class BatchedNoop:
    @accept_batch
    async def __call__(self, requests):
        return ["ok"] * len(requests)
