"""Benchmark: symbuilder.moments.array_stats against numpy's own mean + var.

Run: python tests/benchmarks/bench_stats.py [--mb 512] [--repeats 7] [--no-memmap]

One run, interleaved, after a warm-up, medians over repeats, over the same in-memory float32
array of shape (N, 64). Peak memory: tracemalloc (numpy reports its buffers to it) for the
in-memory case; peak RSS of a subprocess (VmHWM) for the memmap case, where file pages read
count too. Not collected by pytest (bench_*.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Callable, Dict, List

import numpy as np

from symbuilder.moments import array_stats

CHANNELS = 64


def numpy_mean_var(x: np.ndarray) -> None:
    x.mean(axis=0)
    x.var(axis=0)


def symbuilder_stats(x: np.ndarray) -> None:
    array_stats(x)


def traced_peak(fn: Callable[[np.ndarray], None], x: np.ndarray) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


_RSS_SCRIPT = """
import sys, numpy as np
from symbuilder.moments import array_stats
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
x = np.load(sys.argv[1], mmap_mode="r")
before = status("VmRSS")
if sys.argv[2] == "numpy":
    x.mean(axis=0); x.var(axis=0)
else:
    array_stats(x)
print(status("VmHWM") - before)
"""


def memmap_rss_growth(x: np.ndarray) -> Dict[str, int]:
    fd, path = tempfile.mkstemp(suffix=".npy", dir="/tmp")
    os.close(fd)
    try:
        np.save(path, x)
        growth = {}
        for which in ("numpy", "symbuilder"):
            out = subprocess.run(
                [sys.executable, "-c", _RSS_SCRIPT, path, which],
                capture_output=True, text=True, check=True,
            )
            growth[which] = int(out.stdout.strip())
        return growth
    finally:
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="array size in MB (float32)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-memmap", action="store_true", help="skip the memmap RSS rows")
    args = parser.parse_args()

    rows = args.mb * 2**20 // (4 * CHANNELS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, CHANNELS), dtype=np.float32)
    x *= np.geomspace(0.1, 1e3, CHANNELS, dtype=np.float32)
    x += np.linspace(-1e3, 1e4, CHANNELS, dtype=np.float32)

    contenders: Dict[str, Callable[[np.ndarray], None]] = {
        "numpy mean+var (float32)": numpy_mean_var,
        "symbuilder array_stats (float64)": symbuilder_stats,
    }
    for fn in contenders.values():  # warm-up: page in x, allocate, fill caches
        fn(x)
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():  # interleaved so drift hits both alike
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    peaks = {name: traced_peak(fn, x) for name, fn in contenders.items()}
    rss = None if args.no_memmap else memmap_rss_growth(x)

    print(f"array: float32 {x.shape}, {x.nbytes / 2**20:.0f} MB; median of {args.repeats} "
          f"interleaved runs after warm-up; numpy {np.__version__}, {os.cpu_count()} cpus\n")
    print("| method | median s | GB/s | min..max s | peak traced alloc (in-memory) "
          "| peak RSS growth (memmap) |")
    print("|---|---|---|---|---|---|")
    gbps = {}
    for (name, ts), rss_key in zip(times.items(), ("numpy", "symbuilder")):
        median = statistics.median(ts)
        gbps[name] = x.nbytes / median / 1e9
        rss_text = "-" if rss is None else f"{rss[rss_key] / 2**20:.0f} MB"
        print(f"| {name} | {median:.3f} | {gbps[name]:.2f} | {min(ts):.3f}..{max(ts):.3f} "
              f"| {peaks[name] / 2**20:.1f} MB | {rss_text} |")
    ratio = gbps["symbuilder array_stats (float64)"] / gbps["numpy mean+var (float32)"]
    print(f"\nthroughput ratio array_stats / numpy: {ratio:.2f}x")
    print(json.dumps({"gbps": gbps, "traced_peak": peaks, "memmap_rss_growth": rss}))


if __name__ == "__main__":
    main()
