"""The streaming rows of the benchmark: a generator of 100 small chunks, as the peer's."""


async def tokens(request):
    for i in range(100):
        yield b"token %d\n" % i
