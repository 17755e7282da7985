#!/usr/bin/env bash
# Cluster mode on one machine, in one command: builds in release mode, installs the pinned
# load generator, starts a 3-member etcd on 127.0.0.1/.2/.3, and measures the builtin `echo`
# backend at /echo with wrk, in one run:
#
#   raw hyper           the bench's raw-hyper baseline (answers `ok` on every path)
#   single node         `ferroserve run`, no cluster, 3 replicas: the reference
#   single node, 3 wrk  the same under the load of "cluster, all 3" (three wrk at once)
#   cluster, n1         3 nodes, 1 replica each; all the load on n1 (its local replica first)
#   cluster, all 3      the same cluster; one wrk per node's proxy, at once, summed
#   remote only         another cluster: n1 has no replica (--cpus 0), so every request
#                       crosses the h2c peer hop to n2 or n3
#
#   bench/cluster.sh                  # 6 s per measurement (plus 1 s of warm-up)
#   bench/cluster.sh --duration 8
#
# Results: a table on stdout and target/bench/cluster.json. Throughput scaling is recorded,
# not asserted: on one machine every node, etcd and wrk share the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C   # wrk, `times` and awk: decimal points

WRK_VERSION="4.1.0-3+b2"          # Debian bookworm's wrk, pinned (as bench/run.sh)
DURATION=6
WARMUP=1
THREADS=2
CONNECTIONS=64
OUT=target/bench/cluster.json

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="${2:-}"; shift 2 ;;
    --connections) CONNECTIONS="${2:-}"; shift 2 ;;
    --out) OUT="${2:-}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
for n in "$DURATION" "$CONNECTIONS"; do
  case "$n" in ''|*[!0-9]*) echo "not a number: '$n'" >&2; exit 2 ;; esac
done
if [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 120 ]; then
  echo "--duration must be 1 to 120 seconds" >&2; exit 2
fi

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v wrk >/dev/null; then
  echo "installing wrk $WRK_VERSION" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq "wrk=$WRK_VERSION" >/dev/null
fi
ETCD=""
for b in /usr/bin/etcd /usr/local/bin/etcd; do [ -x "$b" ] && ETCD="$b" && break; done
if [ -z "$ETCD" ]; then
  echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1
fi
command -v python3 >/dev/null || { echo "python3 is needed (free ports, JSON)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

# Low priority: a build shares the machine with whatever else runs on it. One build for the
# `ferroserve` command and the raw-hyper baseline, as bench/run.sh builds them (their
# features unify the same way, so neither script rebuilds what the other built).
nice -n 19 cargo build --release --bins -p ferroserve-bench -p ferroserve-cli
# What was built: the commit, and whether its sources had uncommitted changes then.
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (not a git checkout)")
if [ -n "$(git status --porcelain --untracked-files=no -- Cargo.toml Cargo.lock src crates 2>/dev/null)" ]; then
  COMMIT="$COMMIT (with uncommitted changes)"
fi
FERROSERVE="$PWD/target/release/ferroserve"
RAW_HYPER="$PWD/target/release/raw-hyper"

# ---------------------------------------------------------------------------------------
# Processes: every one started here is in PID[], and the trap stops them all.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-cluster-bench.XXXXXX")
declare -A PID=()
WATCHDOG=""

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  [ -n "$WATCHDOG" ] && kill -TERM "$WATCHDOG" 2>/dev/null
  # The nodes (and wrk) first, gracefully, while etcd still answers them; then etcd, whose
  # data is thrown away (three members stopping together take seconds to agree on it).
  local name others=()
  for name in "${!PID[@]}"; do
    case "$name" in etcd*) ;; *) others+=("${PID[$name]}") ;; esac
  done
  stop_all "${others[@]}"
  for name in "${!PID[@]}"; do
    case "$name" in etcd*) kill -KILL "${PID[$name]}" 2>/dev/null ;; esac
  done
  wait 2>/dev/null
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts `name`: `spawn NAME CMD...`, output in $WORK/NAME.out and .err.
spawn() {
  local name=$1; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  PID[$name]=$!
}

# SIGTERM to the processes, then SIGKILL to those still there after 10 s.
stop_all() {
  local p alive
  [ $# -eq 0 ] && return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# Stops the named processes and forgets them.
stop() {
  local name pids=()
  for name in "$@"; do
    [ -n "${PID[$name]:-}" ] && pids+=("${PID[$name]}")
  done
  stop_all "${pids[@]}"
  for name in "$@"; do unset "PID[$name]"; done
}

die() {
  echo "bench/cluster.sh: $*" >&2
  local f
  for f in "$WORK"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f" .err), last lines of stderr:" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}

# A free port on an address (bound, then released; a small race, as in the tests).
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}

# The address a ferroserve process printed after `prefix`, waiting up to 60 s.
printed_addr() {
  local name=$1 prefix=$2 addr="" deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    addr=$(sed -n "s#^$prefix##p" "$WORK/$name.out" | head -n 1)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited before printing '$prefix'"
    sleep 0.1
  done
  die "$name printed no '$prefix' within 60 s"
}

# CPU seconds (user + system) a process used so far; 0 when it is gone.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
  local total=0 p t
  for p in "$@"; do
    t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# Where the CPU went, as "wall server etcd wrk machine" in seconds: the clock, the
# serving processes, etcd, this script's finished children (wrk, run under `timeout`, is
# one once waited for), and the whole machine's busy time (/proc/stat, all but idle and
# iowait). The machine's time minus the others is what else ran meanwhile.
SNAP=""
snapshot() {
  # `times` in this shell, not a subshell: its second line is the children's user and
  # system time.
  times >"$WORK/times"
  local children machine
  children=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$WORK/times")
  machine=$(awk -v hz="$CLK_TCK" '/^cpu / { printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat)
  SNAP="$(date +%s.%N) $(ticks_s "${SERVERS[@]}") $(ticks_s "${ETCD_PIDS[@]}") $children $machine"
}
ticks_s() {
  awk -v t="$(cpu_ticks "$@")" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }'
}

# ---------------------------------------------------------------------------------------
# The measurements. Each is one line of $WORK/manifest.tsv: key, label, wrk output files,
# the CPU snapshots before and after, and a JSON note.

MANIFEST="$WORK/manifest.tsv"
: >"$MANIFEST"
ETCD_PIDS=()
SERVERS=()      # the processes that serve the row being measured (for its CPU figure)
COUNT_NODES=()  # cluster nodes whose `echo` request counts the row records

# Waits (15 s at most) until a GET of the URL answers 200.
answers_200() {
  local deadline=$((SECONDS + 15))
  while [ "$SECONDS" -lt "$deadline" ]; do
    curl -fs --max-time 2 -o /dev/null "$1" && return 0
    sleep 0.2
  done
  die "$1 does not answer 200: $(curl -s --max-time 2 -w ' (%{http_code})' "$1")"
}

# measure KEY LABEL URL...: warm-up, then one wrk per URL, all at once.
measure() {
  local key=$1 label=$2; shift 2
  local urls=("$@") i files=() waiting=()
  echo "measuring: $label (${#urls[@]} × wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)" >&2
  for i in "${!urls[@]}"; do
    answers_200 "${urls[$i]}"
    spawn "warmup-$key-$i" timeout $((WARMUP + 20)) wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${urls[$i]}"
    waiting+=("warmup-$key-$i")
  done
  for i in "${waiting[@]}"; do wait "${PID[$i]}" || true; unset "PID[$i]"; done
  waiting=()
  local counted_before="" note="{}" before after
  [ ${#COUNT_NODES[@]} -gt 0 ] && counted_before=$(counters "${COUNT_NODES[@]}")
  snapshot; before=$SNAP
  for i in "${!urls[@]}"; do
    spawn "wrk-$key-$i" timeout $((DURATION + 30)) \
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${urls[$i]}"
    waiting+=("wrk-$key-$i")
    files+=("$WORK/wrk-$key-$i.out")
  done
  for i in "${waiting[@]}"; do
    wait "${PID[$i]}" || die "wrk failed ($i): $(cat "$WORK/$i.out" "$WORK/$i.err")"
    unset "PID[$i]"
  done
  snapshot; after=$SNAP
  if [ ${#COUNT_NODES[@]} -gt 0 ]; then
    note=$(counters_note "${COUNT_NODES[*]}" "$counted_before" "$(counters "${COUNT_NODES[@]}")")
  fi
  local joined
  joined=$(IFS=,; echo "${files[*]}")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "$joined" "$before" "$after" "$note" >>"$MANIFEST"
}

APP="$WORK/app.yaml"
cat >"$APP" <<'EOF'
backends:
  echo:
    builtin: echo
    num_replicas: 3
endpoints:
  echo:
    backend: echo
    route: /echo
EOF
# The remote-only cluster: each replica reserves a CPU, n1 offers none, n2 and n3 one each.
APP_REMOTE="$WORK/app-remote.yaml"
cat >"$APP_REMOTE" <<'EOF'
backends:
  echo:
    builtin: echo
    num_replicas: 2
    num_cpus: 1
endpoints:
  echo:
    backend: echo
    route: /echo
EOF

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# No run may hang: the whole measuring part is bounded (the build above is not).
LIMIT=$((240 + 8 * (DURATION + WARMUP + 2)))
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$LIMIT" & sp=$!; wait "$sp"
  echo "bench/cluster.sh: still running after ${LIMIT}s; giving up" >&2
  kill -TERM $$ ) &
WATCHDOG=$!

# --- etcd: 3 members on 127.0.0.1, .2, .3, free ports, fast elections -------------------
declare -A ETCD_CLIENT=() ETCD_PEER=()
initial=""
for i in 1 2 3; do
  ETCD_CLIENT[$i]="127.0.0.$i:$(free_port "127.0.0.$i")"
  ETCD_PEER[$i]="127.0.0.$i:$(free_port "127.0.0.$i")"
  initial+="etcd$i=http://${ETCD_PEER[$i]},"
done
initial=${initial%,}
token="bench-$$-$RANDOM"
for i in 1 2 3; do
  spawn "etcd$i" "$ETCD" --name "etcd$i" --data-dir "$WORK/etcd$i.data" \
    --listen-client-urls "http://${ETCD_CLIENT[$i]}" --advertise-client-urls "http://${ETCD_CLIENT[$i]}" \
    --listen-peer-urls "http://${ETCD_PEER[$i]}" --initial-advertise-peer-urls "http://${ETCD_PEER[$i]}" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --initial-cluster-token "$token" \
    --heartbeat-interval 50 --election-timeout 500 --logger zap --log-level error
  ETCD_PIDS+=("${PID[etcd$i]}")
done
healthy=0
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  healthy=1
  for i in 1 2 3; do
    curl -s --max-time 1 "http://${ETCD_CLIENT[$i]}/health" | grep -q '"health":"true"' || healthy=0
  done
  [ "$healthy" = 1 ] && break
  sleep 0.1
done
[ "$healthy" = 1 ] || die "etcd did not become healthy within 30 s"
ETCD_URL="etcd://${ETCD_CLIENT[1]},${ETCD_CLIENT[2]},${ETCD_CLIENT[3]}"
echo "etcd: $ETCD_URL" >&2

# --- 1. raw hyper ------------------------------------------------------------------------
spawn raw "$RAW_HYPER" --port 0
raw_addr=$(printed_addr raw "listening on http://")
SERVERS=("${PID[raw]}")
measure raw "raw hyper (baseline)" "http://$raw_addr/echo"
stop raw

# --- 2. a single node, no cluster --------------------------------------------------------
spawn single env FERROSERVE_LOG=warn "$FERROSERVE" run "$APP" \
  --host 127.0.0.1 --port 0 --control-host 127.0.0.1 --control-port 0
single_addr=$(printed_addr single "ferroserve listening on http://")
SERVERS=("${PID[single]}")
measure single "single node, no cluster (reference)" "http://$single_addr/echo"
# The load of "cluster, all 3" (three wrk at once, 3 × the connections) on the single node:
# what that load alone does, without a cluster.
measure single3 "single node, 3 wrk at once (no cluster)" \
  "http://$single_addr/echo" "http://$single_addr/echo" "http://$single_addr/echo"
stop single

# --- a cluster of 3 nodes ----------------------------------------------------------------
declare -A PROXY=() CONTROL=()
# start_node NAME IP PREFIX APP [EXTRA...]
start_node() {
  local name=$1 ip=$2 prefix=$3 app=$4; shift 4
  spawn "$name" env FERROSERVE_LOG=warn "$FERROSERVE" start "$app" \
    --host "$ip" --port 0 --control-host "$ip" --control-port 0 \
    --cluster "$ETCD_URL$prefix" --node-name "$name" --advertise "$ip" --peer-port 0 "$@"
}
started_nodes() {
  local name
  for name in "$@"; do
    PROXY[$name]=$(printed_addr "$name" "ferroserve listening on http://")
    CONTROL[$name]=$(printed_addr "$name" "ferroserve control API on http://")
  done
}

# Waits (60 s at most) until every node has applied the cluster's app and runs the replicas
# of `echo` given as NAME=COUNT, and the others know it.
wait_placement() {
  local spec=$*
  local args=() name deadline=$((SECONDS + 60))
  for name in "${!CONTROL[@]}"; do args+=("$name=${CONTROL[$name]}"); done
  while [ "$SECONDS" -lt "$deadline" ]; do
    if python3 - "$spec" "${args[@]}" >"$WORK/placement.txt" 2>&1 <<'EOF'
import json, sys, urllib.request
want = dict((n, int(c)) for n, c in (kv.split("=") for kv in sys.argv[1].split()))
for arg in sys.argv[2:]:
    name, control = arg.split("=", 1)
    s = json.load(urllib.request.urlopen(f"http://{control}/api/status", timeout=2))
    c = s.get("cluster") or {}
    if not c.get("registered") or c.get("app_revision") is None \
            or c.get("applied_revision") != c.get("app_revision"):
        sys.exit(f"{name}: not applied: {json.dumps(c)[:400]}")
    running = ((s.get("backends") or {}).get("echo") or {}).get("running_replicas", 0)
    if running != want[name]:
        sys.exit(f"{name}: runs {running} replicas of echo, not {want[name]}")
    for node, n in want.items():
        seen = len((((c.get("nodes") or {}).get(node) or {}).get("replicas") or {}).get("echo") or [])
        if seen != n:
            sys.exit(f"{name} sees {seen} replicas on {node}, not {n}")
EOF
    then return 0; fi
    sleep 0.25
  done
  die "the cluster did not reach '$spec' within 60 s: $(cat "$WORK/placement.txt")"
}

# The `echo` backend's request count on each node (metrics of its control API).
counters() {
  local name out=()
  for name in "$@"; do
    out+=("$(curl -s --max-time 2 "http://${CONTROL[$name]}/metrics" \
      | awk '/^ray_serve_deployment_request_counter_total\{deployment="echo"/ { s += $NF } END { print s + 0 }')")
  done
  echo "${out[*]}"
}
# A JSON note: each node's count, minus the count before.
counters_note() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
names, before, after = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3].split()
print(json.dumps({"echo_requests_counted_by_node": {n: int(a) - int(b) for n, a, b in zip(names, after, before)}}))
EOF
}

start_node n1 127.0.0.1 /bench-local "$APP"
start_node n2 127.0.0.2 /bench-local "$APP"
start_node n3 127.0.0.3 /bench-local "$APP"
started_nodes n1 n2 n3
wait_placement "n1=1 n2=1 n3=1"
SERVERS=("${PID[n1]}" "${PID[n2]}" "${PID[n3]}")

# --- 3. one node of the cluster takes all the load ---------------------------------------
COUNT_NODES=(n1 n2 n3)
measure one "cluster of 3, all load on n1" "http://${PROXY[n1]}/echo"

# --- 4. all three nodes take load at once ------------------------------------------------
measure all "cluster of 3, load on all 3 (3 wrk, summed)" \
  "http://${PROXY[n1]}/echo" "http://${PROXY[n2]}/echo" "http://${PROXY[n3]}/echo"
stop n1 n2 n3
COUNT_NODES=()

# --- 5. a node with no replica: every request crosses the peer hop -----------------------
PROXY=(); CONTROL=()
start_node n1 127.0.0.1 /bench-remote "$APP_REMOTE" --cpus 0
start_node n2 127.0.0.2 /bench-remote "$APP_REMOTE" --cpus 1
start_node n3 127.0.0.3 /bench-remote "$APP_REMOTE" --cpus 1
started_nodes n1 n2 n3
wait_placement "n1=0 n2=1 n3=1"
SERVERS=("${PID[n1]}" "${PID[n2]}" "${PID[n3]}")
COUNT_NODES=(n1 n2 n3)
measure remote "cluster of 3, load on n1 with no replica (remote calls only)" "http://${PROXY[n1]}/echo"
stop n1 n2 n3
COUNT_NODES=()

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table and the JSON --------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
WRK_LINE="$({ wrk --version 2>&1 || true; } | head -n 1 | cut -d' ' -f1-2) -t$THREADS -c$CONNECTIONS --latency, one wrk per proxy"
COMMIT="$COMMIT" DURATION="$DURATION" WARMUP="$WARMUP" WRK_LINE="$WRK_LINE" \
  LOAD_BEFORE="$LOAD_BEFORE" LOAD_AFTER="$LOAD_AFTER" \
  python3 - "$MANIFEST" "$OUT" <<'EOF'
import json, os, platform, re, subprocess, sys, time

manifest, out = sys.argv[1], sys.argv[2]
env = os.environ
ncpu = os.cpu_count()

def us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    return round(float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)], 1) if m else None

def parse(path):
    text = open(path).read()
    r = {"file": os.path.basename(path), "requests": None, "requests_per_sec": None,
         "p50_us": None, "p99_us": None, "non_2xx_3xx": 0, "socket_errors": {}}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3 and f[1] == "requests" and f[2] == "in":
            r["requests"] = int(f[0])
        elif f[:1] == ["Requests/sec:"]:
            r["requests_per_sec"] = float(f[1])
        elif f[:1] == ["50%"]:
            r["p50_us"] = us(f[1])
        elif f[:1] == ["99%"]:
            r["p99_us"] = us(f[1])
        elif f[:4] == ["Non-2xx", "or", "3xx", "responses:"]:
            r["non_2xx_3xx"] = int(f[4])
        elif f[:2] == ["Socket", "errors:"]:
            for kind, n in re.findall(r"(\w+) (\d+)", line.split(":", 1)[1]):
                r["socket_errors"][kind] = int(n)
    if r["requests_per_sec"] is None or r["p50_us"] is None:
        sys.exit(f"cannot read wrk's output {path}:\n{text}")
    r["output"] = text
    return r

rows = []
for line in open(manifest):
    key, label, files, before, after, note = line.rstrip("\n").split("\t")
    runs = [parse(p) for p in files.split(",")]
    wall, server, etcd, wrk, machine = (float(a) - float(b) for a, b in zip(after.split(), before.split()))
    row = {
        "key": key, "row": label, "wrk_processes": len(runs),
        "requests_per_sec": round(sum(r["requests_per_sec"] for r in runs), 1),
        # With several wrk at once: the worst of their percentiles.
        "p50_us": max(r["p50_us"] for r in runs),
        "p99_us": max(r["p99_us"] for r in runs),
        "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in runs),
        "socket_errors": sum(sum(r["socket_errors"].values()) for r in runs),
        # CPU over the measurement, in cores (seconds of CPU per second): the serving
        # processes, etcd, wrk (and this script's few commands), and everything else that
        # ran on the machine meanwhile (the machine's busy time minus those).
        "server_cpu_cores": round(server / wall, 2),
        # The serving processes' CPU per request answered (every node's, for the cluster).
        "server_cpu_us_per_request": round(server * 1e6 / max(1, sum(r["requests"] or 0 for r in runs)), 1),
        "etcd_cpu_cores": round(etcd / wall, 3),
        "wrk_cpu_cores": round(wrk / wall, 2),
        "other_cpu_cores": round(max(0.0, machine - server - etcd - wrk) / wall, 2),
        "wall_s": round(wall, 3),
        "wrk": runs,
    }
    row.update(json.loads(note))
    rows.append(row)

ref = next(r for r in rows if r["key"] == "single")["requests_per_sec"]
for r in rows:
    r["ratio_vs_single_node"] = round(r["requests_per_sec"] / ref, 3)

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""

model = sh("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1")
report = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "commit": env["COMMIT"],
    "machine": f"{ncpu} cores ({model}), {platform.system()} {platform.release()}",
    "load_generator": env["WRK_LINE"],
    "duration_s": int(env["DURATION"]),
    "warmup_s": int(env["WARMUP"]),
    "loadavg_before": env["LOAD_BEFORE"],
    "loadavg_after": env["LOAD_AFTER"],
    "rows": rows,
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)

def num(v):
    return f"{v:,.0f}".replace(",", " ")

def fmt_us(v):
    return f"{num(v)} µs" if v >= 100 else f"{v:.1f} µs"

print()
print(f"{report['date']}, commit {report['commit']}")
print(f"{report['machine']}; {report['load_generator']}; {report['duration_s']} s each")
print(f"load average before: {report['loadavg_before']}, after: {report['loadavg_after']}")
print()
print("| row | req/s | p50 | p99 | vs single node | non-2xx | socket errors | server CPU per request | CPU cores: servers / wrk / other |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['row']} | {num(r['requests_per_sec'])} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} "
          f"| {r['ratio_vs_single_node']:.3f} | {r['non_2xx_3xx']} | {r['socket_errors']} | {r['server_cpu_us_per_request']:.1f} µs | {r['server_cpu_cores']:.2f} / {r['wrk_cpu_cores']:.2f} / {r['other_cpu_cores']:.2f} |")
for r in rows:
    if len(r["wrk"]) > 1:
        each = ", ".join(num(w["requests_per_sec"]) for w in r["wrk"])
        print(f"\n{r['row']}: per node {each} req/s")
    if "echo_requests_counted_by_node" in r:
        print(f"{r['row']}: echo requests counted by node: {r['echo_requests_counted_by_node']}")
bad = [r["row"] for r in rows if r["non_2xx_3xx"] or r["socket_errors"]]
if bad:
    print("\nERRORS in: " + "; ".join(bad) + " (see the wrk output in the JSON)")
print(f"\nJSON: {out}")
EOF
