#!/usr/bin/env bash
# Where the time goes, in one command: serves an app (the iris model by default) with the
# release binary, loads it with wrk, and prints the CPU each process spent per request
# (proxy, each worker, wrk; user and kernel), with optional profiles.
#
#   bench/profile.sh                                  # the iris model, 2 replicas, c=64, 10 s
#   bench/profile.sh --py-spy --perf                  # also py-spy of a worker, perf of the proxy
#   bench/profile.sh --concurrency 1
#   bench/profile.sh --app bench/apps/python_noop.yaml --path /noop --post ''   # a GET app
#
# Writes target/bench/profile/: profile.json, and the raw profiles (worker.collapsed for
# flamegraph tools, proxy.perf.data). perf must be installed for --perf (Debian: linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "wrk is missing: bench/run.sh installs it" >&2; exit 1; }
cargo build --release --bin ferroserve -p ferroserve-cli
venv=target/bench/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r bench/requirements.txt
exec "$venv/bin/python" bench/profile/profile.py --ferroserve target/release/ferroserve "$@"
