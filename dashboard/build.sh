#!/usr/bin/env bash
# Copies uPlot's dist files from dashboard/node_modules (installed by `npm ci --prefix
# dashboard`, at the version pinned in package.json) into the assets that the ferroserve
# crate embeds. The copies are committed, so `cargo build` needs no npm.
#   bash dashboard/build.sh          copy them
#   bash dashboard/build.sh --check  fail if the committed copies differ from node_modules
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
from="$here/node_modules/uplot"
to="$here/../crates/ferroserve/assets/dashboard"
# source in the package : name in the assets (uPlot is MIT: its licence goes along)
files=(dist/uPlot.iife.min.js:uPlot.iife.min.js dist/uPlot.min.css:uPlot.min.css LICENSE:uPlot.LICENSE.txt)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [ ! -d "$from" ]; then
  echo "no $from: run \`npm ci --prefix dashboard\` first" >&2
  exit 1
fi

stale=0
for pair in "${files[@]}"; do
  source="${pair%%:*}" name="${pair#*:}"
  if [ "$check" = 1 ]; then
    if ! cmp -s "$from/$source" "$to/$name"; then
      echo "crates/ferroserve/assets/dashboard/$name differs from node_modules/uplot/$source: run \`bash dashboard/build.sh\` and commit it" >&2
      stale=1
    fi
  else
    mkdir -p "$to"
    cp "$from/$source" "$to/$name"
    echo "copied uplot/$source to crates/ferroserve/assets/dashboard/$name"
  fi
done
if [ "$check" = 1 ] && [ "$stale" = 0 ]; then
  echo "the dashboard's uPlot copies match node_modules"
fi
exit "$stale"
