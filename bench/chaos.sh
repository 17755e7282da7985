#!/usr/bin/env bash
# The chaos suite, in one command: builds tests/chaos.rs in release mode, runs every scenario
# against the release `ferroserve` binary, one at a time, and rewrites the "Chaos suite"
# section of docs/RELIABILITY.md with the figures.
#
#   bench/chaos.sh            # about 13 minutes: the soak runs 10 minutes
#   bench/chaos.sh --quick    # about 4 minutes: a 60 s soak (CHAOS_SOAK_SECONDS=60)
#
# The whole log: target/chaos/chaos.log. Exits non-zero when a scenario failed (the section
# is rewritten all the same, with the failure in its verdict).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="full"
for a in "$@"; do
  case "$a" in
    --quick) mode="quick"; export CHAOS_SOAK_SECONDS=60 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown flag: $a (try --quick)" >&2; exit 2 ;;
  esac
done

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# The slowloris scenario runs the server under prlimit (util-linux).
if ! command -v prlimit >/dev/null; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq util-linux >/dev/null
fi

out=target/chaos
mkdir -p "$out"
log="$out/chaos.log"
started=$(date +%s)

cargo test --release --test chaos --no-run
tests=$(cargo test --release --test chaos -- --ignored --list 2>/dev/null | sed -n 's/: test$//p')
set +e
cargo test --release --test chaos -- --ignored --nocapture --test-threads 1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))

# The table: one row per CHAOS line; a test that reported nothing gets a row saying so.
rows="$out/rows.md"
awk -v tests="$tests" '
  BEGIN { n = split(tests, names, "\n") }
  /^test [^ ]+ \.\.\. / { current = $2 }
  /CHAOS\|/ {
    line = substr($0, index($0, "CHAOS|") + 6)
    split(line, f, "|")
    printf "| %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4]
    reported[current] = 1
  }
  END {
    for (i = 1; i <= n; i++) if (names[i] != "" && !(names[i] in reported))
      printf "| `%s` | — | no figures: it failed before reporting (see target/chaos/chaos.log) | FAIL |\n", names[i]
  }
' "$log" > "$rows"

section="$out/section.md"
{
  echo '## Chaos suite (`bench/chaos.sh`)'
  echo
  echo 'The release `ferroserve` binary, on loopback, through what production throws at it:'
  echo 'overload, a killed worker, SIGTERM under load, slowloris, malformed HTTP, mutated app'
  echo 'files, a worker that breaks the frame protocol, and a soak. The scenarios are the ignored'
  echo 'tests of `tests/chaos.rs`; `bench/chaos.sh` (about 13 minutes; `--quick`: a 60 s soak,'
  echo 'about 4) runs them one at a time and rewrites this section. Each scenario asserts its'
  echo 'pass criteria; a failed one says which in its verdict:'
  echo
  echo '- overload: only `200` or `503` with `Retry-After`; the p99 of the `503`s under half of'
  echo '  service time × queue length; at least 80 % of the measured capacity still served;'
  echo '- kill -9: fewer non-2xx than the 32 connections, and the replica back;'
  echo '- SIGTERM: every request written on an open connection answered, exit 0 within 5 s;'
  echo '- slowloris: the normal client ≥ 99 % 2xx with p99 under 100 ms, no slow connection'
  echo '  alive past twice the header timeout;'
  echo '- bad HTTP: no `5xx`, no connection left hanging, the server serves afterwards and its'
  echo '  RSS grew less than 50 MB;'
  echo '- config fuzz: every `ferroserve check` exits 0, or 1 with an `error:` line, within 5 s;'
  echo '- worker protocol fuzz: each fuzzing call `502`, each worker death logged, other callers'
  echo '  only `200`/`502`/`503`, the server serves afterwards;'
  echo '- soak: no failed request; the server'"'"'s RSS at the end within 20 % + 10 MB of its RSS'
  echo '  after the first minute.'
  echo
  echo "Last run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, Linux $(uname -r), commit" \
    "\`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes'); $mode run" \
    "(soak ${CHAOS_SOAK_SECONDS:-600} s), $((elapsed / 60)) min $((elapsed % 60)) s including the build."
  echo
  echo '| scenario | what | figures | verdict |'
  echo '|---|---|---|---|'
  cat "$rows"
} > "$section"

# Replace the section (from its heading to the next `## ` heading or the end), or append it.
doc=docs/RELIABILITY.md
awk -v section="$section" '
  BEGIN { while ((getline l < section) > 0) text = text l "\n" }
  /^## Chaos suite \(`bench\/chaos.sh`\)/ { printf "%s", text; skipping = 1; done = 1; next }
  skipping && /^## / { skipping = 0; print "" }
  !skipping { print }
  END { if (!done) printf "\n%s", text }
' "$doc" > "$out/RELIABILITY.md"
mv "$out/RELIABILITY.md" "$doc"

echo
cat "$section"
echo
echo "chaos suite: $mode run in $((elapsed / 60)) min $((elapsed % 60)) s; log in $log; $doc updated"
exit "$status"
