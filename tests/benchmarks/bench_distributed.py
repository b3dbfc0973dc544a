"""Benchmark: training throughput on MXNet's parameter server, 1 and 2 workers on this host.

Run: python tests/benchmarks/bench_distributed.py [--repeats 3] [--out RESULTS.md]

Jobs, per spec (specs/breast_cancer_mlp.yaml, specs/digits_cnn.yaml):
  local       `symbuilder build` (one process, kvstore local): the baseline
  1w sync     `symbuilder launch --workers 1` (dist_sync): the ps-lite overhead alone
  2w sync     `symbuilder launch --workers 2` (dist_sync)
  2w async    `symbuilder launch --workers 2` (dist_async)
All with --set export.formats=[checkpoint] (no ONNX parity run, which only rank 0 does and
which costs the same everywhere) and checkpoints every epoch (the default).

Epoch-loop samples/s: every worker prints, per epoch, samples/s = (training rows) /
(its epoch's seconds, clock stopped after mx.nd.waitall()); this script turns those back
into seconds and computes the JOB's samples per second per epoch: the rows all workers
trained in it (each worker ceil(n/W) rows) / the slowest worker's epoch seconds. Epoch 1
(binding, first allocations, the job's first kvstore round trips) is skipped; the figure
is the median over the other epochs, then the median over repeats. Wall time: from
starting the command to its exit, process start, data loading, joining, checkpoints and
the export included; median over repeats.

One warm-up job per spec first, then the jobs interleaved (the order rotates every
repeat). OMP_NUM_THREADS is removed from the jobs' environment (MXNet's default; an
explicit value oversubscribes the cores with several workers, see `launch`'s note) unless
--keep-omp. On a 2-core host the point is the overhead, not a speed-up. Not collected by
pytest (bench_*.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = {"breast_cancer_mlp": (os.path.join(ROOT, "specs", "breast_cancer_mlp.yaml"), 30),
         "digits_cnn": (os.path.join(ROOT, "specs", "digits_cnn.yaml"), 8)}
JOBS = [("local", 1, "local"), ("1w sync", 1, "dist_sync"), ("2w sync", 2, "dist_sync"),
        ("2w async", 2, "dist_async")]
EPOCH_LINE = re.compile(r"^(?:\[worker (\d+)\] )?epoch +(\d+)/\d+ .* ([\d,]+) samples/s$")


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import mxnet as mx
    import numpy as np
    return (f"{cores} cores ({os.cpu_count()} CPUs), {model}; Linux {platform.release()}; "
            f"Python {platform.python_version()}, mxnet {mx.__version__}, numpy {np.__version__}")


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def train_rows(spec_path: str) -> int:
    from symbuilder.data import load_data
    from symbuilder.spec.load import load_spec
    return len(load_data(load_spec(spec_path)).train)


def run_job(spec_path: str, epochs: int, workers: int, kvstore: str, env: Dict[str, str],
            folder: str) -> Tuple[float, List[float], str]:
    """Run one job; returns (wall seconds, per-epoch job samples/s from epoch 2 on, output)."""
    out = os.path.join(folder, "export")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    common = [spec_path, "--set", f"train.kvstore={kvstore}", "--epochs", str(epochs),
              "--set", "export.formats=[checkpoint]", "--out", out]
    if kvstore == "local":
        cmd = [sys.executable, "-m", "symbuilder", "build", *common]
    else:
        cmd = [sys.executable, "-m", "symbuilder", "launch", "--workers", str(workers),
               "--timeout", "240", *common]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    wall = time.perf_counter() - started
    text = run.stdout + run.stderr
    if run.returncode != 0:
        raise SystemExit(f"job failed ({' '.join(cmd)}):\n{text[-3000:]}")
    return wall, _job_rates(text, workers, train_rows.cache[spec_path]), text


train_rows.cache = {}  # type: ignore[attr-defined]


def _job_rates(text: str, workers: int, n: int) -> List[float]:
    """Job samples/s per epoch (epoch 2 on) from the workers' printed epoch lines."""
    seconds: Dict[int, Dict[int, float]] = {}
    for line in text.splitlines():
        m = EPOCH_LINE.match(line.strip())
        if m:
            rank, epoch, rate = int(m.group(1) or 0), int(m.group(2)), float(m.group(3).replace(",", ""))
            seconds.setdefault(epoch, {})[rank] = n / rate  # the printed rate is n / seconds
    rows = -(-n // workers) * workers  # every worker trains ceil(n / W) rows
    rates = [rows / max(by_rank.values()) for epoch, by_rank in sorted(seconds.items())
             if epoch > 1 and len(by_rank) == workers]
    if not rates:
        raise SystemExit(f"no epoch lines found in:\n{text[-2000:]}")
    return rates


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--specs", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--no-async", action="store_true", help="skip the dist_async jobs")
    parser.add_argument("--keep-omp", action="store_true",
                        help="keep OMP_NUM_THREADS in the jobs' environment")
    parser.add_argument("--out", metavar="FILE", help="also write the report here (markdown)")
    args = parser.parse_args(argv)
    env = dict(os.environ, MXNET_SUBGRAPH_VERBOSE="0", PYTHONUNBUFFERED="1")
    if not args.keep_omp:
        env.pop("OMP_NUM_THREADS", None)
    jobs = [j for j in JOBS if not (args.no_async and j[2] == "dist_async")]
    scratch = tempfile.mkdtemp(prefix="bench_dist_")
    started = time.perf_counter()
    load_before = load()
    results: Dict[Tuple[str, str], Dict[str, List[float]]] = {}
    try:
        for name in args.specs:
            path, _ = SPECS[name]
            train_rows.cache[path] = train_rows(path)  # type: ignore[attr-defined]
        for name in args.specs:  # warm-up: page cache, imports, MKLDNN's first binds
            path, epochs = SPECS[name]
            run_job(path, 2, 2, "dist_sync", env, os.path.join(scratch, "warm"))
        for rep in range(args.repeats):
            order = jobs[rep % len(jobs):] + jobs[:rep % len(jobs)]
            for name in args.specs:
                path, epochs = SPECS[name]
                for label, workers, kvstore in order:
                    wall, rates, _ = run_job(path, epochs, workers, kvstore, env,
                                             os.path.join(scratch, "job"))
                    slot = results.setdefault((name, label), {"wall": [], "rate": []})
                    slot["wall"].append(wall)
                    slot["rate"].append(statistics.median(rates))
                    print(f"  repeat {rep + 1}: {name:18s} {label:9s} {statistics.median(rates):10,.0f} "
                          f"samples/s  {wall:5.2f} s wall", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - started
    lines = [f"Machine: {machine()}",
             f"Load average (1, 5, 15 min) before: {load_before}; after: {load()}",
             f"OMP_NUM_THREADS in the jobs: {env.get('OMP_NUM_THREADS', 'unset')}; "
             f"repeats: {args.repeats}; benchmark took {elapsed:.0f} s",
             "",
             "| spec | job | workers | epoch-loop samples/s (job) | vs local | wall s per job | vs local |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in args.specs:
        path, epochs = SPECS[name]
        base = results[(name, "local")]
        base_rate, base_wall = statistics.median(base["rate"]), statistics.median(base["wall"])
        for label, workers, kvstore in jobs:
            slot = results[(name, label)]
            rate, wall = statistics.median(slot["rate"]), statistics.median(slot["wall"])
            lines.append(f"| {name} ({train_rows.cache[path]} rows, {epochs} epochs) | {label} "
                         f"({kvstore}) | {workers} | {rate:,.0f} | {rate / base_rate:.2f}x | "
                         f"{wall:.2f} | {wall / base_wall:.2f}x |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        command = "python tests/benchmarks/bench_distributed.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a)
        with open(args.out, "w") as f:
            f.write("# Distributed training benchmark (1 and 2 workers on one host)\n\n"
                    f"Command: `{command}`  \n"
                    f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"
                    "\n\n" + report + "\n\n" + _NOTES)


_NOTES = """\
How to read it: "epoch-loop samples/s (job)" is the rows all workers trained in an epoch
divided by the slowest worker's epoch seconds (epoch 1 skipped; median over epochs, then
over repeats). "1w sync" is the same work as "local" through ps-lite (every batch's
gradients pushed to the server and pulled back over loopback TCP): its ratio is the
parameter server's overhead. The 2-worker jobs split each epoch between two processes on
the same cores, so each update is computed on 2 x batch_size rows and an epoch has half
as many updates; on a host with as many cores as workers the ratio measures overhead, not
a speed-up. Wall time includes starting 3-4 Python processes (scheduler, server, workers),
each importing MXNet, joining, per-epoch checkpoints by rank 0 and the checkpoint export.
The machine was shared with other work during the run (see the load averages).
"""


if __name__ == "__main__":
    main()
