"""Where the time goes: serves an app with `ferroserve run`, loads it with wrk, and reports
the CPU each process spent per request (the proxy, each worker, wrk), split into user and
kernel time; optionally a py-spy profile of a worker and a perf profile of the proxy.

    python3 bench/profile/profile.py --ferroserve target/release/ferroserve \\
        [--app bench/apps/iris/iris.yaml] [--post bench/apps/iris/body.json --path /predict] \\
        [--concurrency 64] [--duration 10] [--py-spy] [--perf] [--out target/bench/profile]

bench/profile.sh runs it with the benchmark's venv. CPU times come from /proc/PID/stat
(clock ticks of 10 ms: a run of a few seconds at thousands of requests per second is
precise to a few percent).
"""

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid):
    """(user, kernel) seconds of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def children(pid):
    """Every process descended from `pid`."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in found and child not in found:
                found.add(child)
                grew = True
    found.discard(pid)
    return sorted(found)


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def ready(url, body):
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def collapsed_summary(path, rows=25):
    """The hottest frames of a py-spy collapsed-stack file: by own time, and by the time of
    everything they called."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    # A frame's text may carry bytes that are not UTF-8 (native symbols, a module's source).
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = [re.sub(r" \(.*\)$", "", fr) for fr in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                total[frame] += n
    lines = [f"{samples} samples"]
    lines.append("own time (the frame itself):")
    lines += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in own.most_common(rows)]
    lines.append("with what it called:")
    lines += [f"  {100 * n / samples:5.1f} %  {name}" for name, n in total.most_common(rows)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ferroserve", required=True)
    parser.add_argument("--app", default="bench/apps/iris/iris.yaml")
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--post", default="bench/apps/iris/body.json", help="a body to POST; empty for GET")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--py-spy", action="store_true", help="also a py-spy profile of the first worker")
    parser.add_argument("--perf", action="store_true", help="also a perf profile of the proxy")
    parser.add_argument("--out", default="target/bench/profile")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    port = free_port()
    env = dict(os.environ, FERROSERVE_PYTHON=sys.executable, FERROSERVE_LOG="error", FERROSERVE_CONTROL_PORT="0")
    server = subprocess.Popen(
        [args.ferroserve, "run", args.app, "--port", str(port)], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}{args.path}"
    body = open(args.post, "rb").read() if args.post else None
    try:
        deadline = time.time() + 60
        while not ready(url, body):
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"{args.app} did not serve {args.path}")
            time.sleep(0.05)
        wrk = ["wrk", "-t1", f"-c{args.concurrency}", url]
        if body is not None:
            wrk[3:3] = ["-s", "bench/apps/onnx/post.lua"]
            wrk += ["--", args.post]
        subprocess.run(wrk[:2] + [wrk[2], f"-d{args.warmup}s"] + wrk[3:], capture_output=True, check=True)

        workers = [p for p in children(server.pid) if "ferroserve._worker" in cmdline(p)]
        processes = {"proxy (ferroserve)": server.pid}
        processes.update({f"worker {i} (python)": p for i, p in enumerate(workers)})
        profilers = []
        if args.py_spy and workers:
            raw = os.path.join(args.out, "worker.collapsed")
            profilers.append(("py-spy", raw, subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(workers[0]),
                 "--duration", str(args.duration), "--rate", "250", "--format", "raw", "--output", raw, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        if args.perf:
            data = os.path.join(args.out, "proxy.perf.data")
            profilers.append(("perf", data, subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(server.pid), "-o", data,
                 "--", "sleep", str(args.duration)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

        before = {name: cpu(pid) for name, pid in processes.items()}
        load = subprocess.Popen(wrk[:2] + [wrk[2], f"-d{args.duration}s"] + wrk[3:], stdout=subprocess.PIPE, text=True)
        out = load.stdout.read()
        # wrk's own CPU from its exit status; the server's over the same span, read at once.
        _, _, usage = os.wait4(load.pid, 0)
        load.returncode = 0
        after = {name: cpu(pid) for name, pid in processes.items()}
        for _, _, profiler in profilers:
            profiler.wait(timeout=args.duration + 60)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            server.kill()

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    rows = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in processes}
    rows["load generator (wrk)"] = (usage.ru_utime, usage.ru_stime)
    print(f"{args.app} at c={args.concurrency}: {rate:,.0f} requests/s, {requests:,} requests in {args.duration} s")
    print(f"{'process':<26} {'CPU µs/request':>15} {'user':>8} {'kernel':>8} {'cores':>6}")
    report = {"app": args.app, "concurrency": args.concurrency, "requests_per_sec": rate, "processes": {}}
    total = 0.0
    for name, (user, kernel) in rows.items():
        per = (user + kernel) / requests * 1e6
        total += per
        report["processes"][name] = {"cpu_us_per_request": per, "user_s": user, "kernel_s": kernel}
        print(f"{name:<26} {per:>15.1f} {user / requests * 1e6:>8.1f} {kernel / requests * 1e6:>8.1f} "
              f"{(user + kernel) / args.duration:>6.2f}")
    print(f"{'all':<26} {total:>15.1f}")
    for tool, path, _ in profilers:
        if tool == "py-spy" and os.path.exists(path):
            summary = collapsed_summary(path)
            print(f"\npy-spy, worker 0 ({path}):\n{summary}")
        if tool == "perf" and os.path.exists(path):
            script = path + ".txt"
            with open(script, "w") as f:
                subprocess.run(["perf", "script", "-i", path], stdout=f, stderr=subprocess.DEVNULL)
            attributed = subprocess.run([sys.executable, os.path.join(HERE, "attribute.py"), script, "20"],
                                        capture_output=True, text=True).stdout
            print(f"\nperf, the proxy ({script}):\n{attributed}")
    with open(os.path.join(args.out, "profile.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
