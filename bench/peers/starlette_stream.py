"""The streaming peer: the same generator of 100 small chunks behind uvicorn + Starlette's
StreamingResponse (one process)."""

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route


async def tokens(request):
    async def chunks():
        for i in range(100):
            yield b"token %d\n" % i

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")


app = Starlette(routes=[Route("/tokens", tokens)])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
