"""The peer baseline: the same no-op handler in uvicorn + Starlette (one process)."""

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def noop(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/noop", noop)])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
