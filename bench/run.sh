#!/usr/bin/env bash
# The benchmark, in one command: builds in release mode, installs the pinned load generator,
# and runs every row against a raw-hyper baseline in the same run.
#
#   bench/run.sh                    # Ferroserve rows, 10 s each, concurrency 1 and 64
#   bench/run.sh --duration 5       # shorter
#   bench/run.sh --peers            # also the peers: Ray Serve, uvicorn+Starlette, and the iris model in
#                                   # FastAPI (uvicorn, Granian), BentoML, LitServe and Ray Serve
#                                   # (pip installs them into target/bench/venv)
#   bench/run.sh --peers --only iris,no-op  # the model rows and the no-op rows only
#   bench/run.sh --peers --only onnx  # only the ONNX rows (with their Python peer and raw ONNX Runtime)
#
# Results: a table on stdout and target/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

WRK_VERSION="4.1.0-3+b2"          # Debian bookworm's wrk, pinned
# The Python peers and their pins: bench/requirements.txt.

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v wrk >/dev/null; then
  echo "installing wrk $WRK_VERSION" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq "wrk=$WRK_VERSION" >/dev/null
fi

cargo build --release --bins -p ferroserve-bench -p ferroserve-cli

args=("$@")
for a in "$@"; do
  if [ "$a" = "--peers" ]; then
    venv=target/bench/venv
    if [ ! -x "$venv/bin/python" ]; then
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q -r bench/requirements.txt
    args+=(--python "$PWD/$venv/bin/python")
  fi
done

exec target/release/bench "${args[@]}"
