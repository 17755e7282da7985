"""The iris model in FastAPI, the way its docs write it (a pydantic body, an `async def`
route), served by uvicorn (uvloop, httptools) or by Granian; GET /noop is the no-op rows.

    python fastapi_iris.py --port 8000 [--server uvicorn|granian] [--workers 2]
"""

import argparse
import os
import pathlib

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from iris_model import predict, train


class Features(BaseModel):
    features: list[float]


app = FastAPI()
model = train()


@app.post("/predict")
async def predict_route(body: Features):
    return {"class": predict(model, body.features)}


@app.get("/noop", response_class=PlainTextResponse)
async def noop():
    return "ok"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "fastapi_iris:app",
            app_dir=here,
            host="127.0.0.1",
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    else:
        from granian import Granian

        Granian(
            "fastapi_iris:app",
            address="127.0.0.1",
            port=args.port,
            interface="asgi",
            workers=args.workers,
            loop="uvloop",
            log_level="warning",
            log_access=False,
            working_dir=pathlib.Path(here),
        ).serve()
