"""Attributes `perf script` samples to the first Ferroserve, hyper or tokio frame on their stack.

    perf record -e cpu-clock -F 1500 --call-graph dwarf,8192 -p PID -o perf.data -- sleep 4
    perf script -i perf.data > perf.txt
    python3 bench/profile/attribute.py perf.txt [ROWS]

Prints the share of samples in the kernel and per attributed function, most first.
"""

import collections
import re
import sys


def attribute(frames):
    """The category of one sample's stack (leaf first)."""
    if not frames or "[kernel" in frames[0]:
        return "kernel"
    for crate in ("ferroserve", "hyper::", "tokio::"):
        for frame in frames:
            if crate in frame and "accept_loop" not in frame:
                name = re.sub(r"\+0x[0-9a-f]+.*", "", frame)[:90]
                return f"{crate.rstrip(':')}: {name}"
    return "other: " + frames[0][:80]


def main():
    path = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    counts = collections.Counter()
    total = 0
    for sample in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
        lines = sample.strip().split("\n")
        if len(lines) < 2:
            continue
        total += 1
        frames = [re.sub(r"^\s*[0-9a-f]+ ", "", line.strip()) for line in lines[1:]]
        counts[attribute(frames)] += 1
    print(f"{total} samples")
    for name, count in counts.most_common(rows):
        print(f"{100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
