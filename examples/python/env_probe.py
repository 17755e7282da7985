"""Answers an environment variable set with `env` in the backend config."""

import os


def probe(request):
    return {"model_path": os.environ.get("MODEL_PATH"), "cwd_has_me": os.path.exists("env_probe.py")}
