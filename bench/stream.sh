#!/usr/bin/env bash
# The streaming benchmark, in one command: builds in release mode, installs uvicorn and
# Starlette (pinned, as bench/run.sh) into target/bench/venv, and measures a Python
# generator of 100 small chunks under Ferroserve and under uvicorn+Starlette's
# StreamingResponse, at concurrency 64, in interleaved rounds: streams and chunks per
# second, time to the first chunk and to the whole answer.
#
#   bench/stream.sh                   # 12 s per row, in 3 rounds
#   bench/stream.sh --duration 6 --concurrency 16
#
# Results: a table on stdout and target/bench/streaming.json.
set -euo pipefail
cd "$(dirname "$0")/.."

UVICORN_VERSION="0.54.0"
STARLETTE_VERSION="1.10.0"

cargo build --release --bins -p ferroserve-bench -p ferroserve-cli

venv=target/bench/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "uvicorn[standard]==$UVICORN_VERSION" "starlette==$STARLETTE_VERSION"

exec target/release/stream-bench --python "$PWD/$venv/bin/python" "$@"
