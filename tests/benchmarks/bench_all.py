"""Benchmark: symbuilder against its alternatives, side by side in one run (issue 8).

Run: python tests/benchmarks/bench_all.py [--quick] [--out FILE]   (or: make bench)

1. Training throughput on both example specs: symbuilder's train() against a hand-written
   Module.fit loop on the identical symbol and data (bare, + validation, + validation and
   checkpoints), a hybridized Gluon twin and a PyTorch twin (where torch is installed).
2. Inference: ONNX Runtime on the export against MXNet Module forward, batch 1 and 256.
3. Input statistics: tests/benchmarks/bench_stats.py (array_stats against numpy), run as a
   subprocess.
4. Scaling: build (load + validate, build_symbol, ONNX, ORT parity; no training) of
   generated 10-, 100- and 1000-layer MLPs.
5. One markdown report on stdout, with the machine and this command.
Every section interleaves its contenders after a warm-up and reports medians. Progress
goes to stderr. Not collected by pytest (bench_*.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPECS = {  # spec -> (epochs per run, repeats): runs long enough to time, short enough for 10 min
    "specs/breast_cancer_mlp.yaml": (30, 15),
    "specs/digits_cnn.yaml": (5, 11),
}
QUICK = {"specs/breast_cancer_mlp.yaml": (2, 1), "specs/digits_cnn.yaml": (2, 1)}


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def stats_section(quick: bool) -> str:
    """bench_stats.py's table, run as it is (a subprocess: its own peak-memory figures)."""
    args = ["--mb", "16", "--repeats", "2", "--no-memmap"] if quick else \
        ["--mb", "256", "--repeats", "5"]
    script = os.path.join(HERE, "bench_stats.py")
    out = subprocess.run([sys.executable, script] + args, capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
                                            os.environ.get("PYTHONPATH", "")))
    if out.returncode != 0:
        return f"bench_stats.py failed (exit {out.returncode}): {out.stderr.strip()[-500:]}"
    lines = [line for line in out.stdout.splitlines() if not line.startswith("{")]
    return "\n".join(lines).strip() + f"\n\n(`python tests/benchmarks/bench_stats.py {' '.join(args)}`)"


def explain(spec_name: str, report, costs) -> str:
    """Where symbuilder trails its same-work twin, with the fixed per-epoch costs that
    account for it (measured alone)."""
    rows = {f.name: f for f in report.training}
    lines = []
    for name in ("symbuilder train() training only", "symbuilder train() as built"):
        f = rows[name]
        twin = rows.get(f.twin)
        if twin is None:
            continue
        for label, loop in (("whole run", False), ("epoch loop", True)):
            ratio = f.paired(twin, epoch_loop=loop)
            mine, theirs = (f.epoch_loops, twin.epoch_loops) if loop else (f.whole_runs,
                                                                         twin.whole_runs)
            if ratio < 1.0:
                outside = [x.ms_per_epoch - 1e3 * report.train_samples / x.epoch_loop
                           for x in (f, twin)]
                lines.append(f"- {spec_name}, {name}, {label}: {ratio:.2f}x of '{twin.name}' "
                             f"(whole run {f.ms_per_epoch:.1f} vs {twin.ms_per_epoch:.1f} ms per "
                             f"epoch, of which outside the epoch loop {outside[0]:.1f} vs "
                             f"{outside[1]:.1f} ms; samples/s across repeats "
                             f"{min(mine):,.0f}..{max(mine):,.0f} vs "
                             f"{min(theirs):,.0f}..{max(theirs):,.0f})")
    bare, val = rows.get("hand-written Module.fit"), rows.get("hand-written Module.fit + val")
    if bare and val:  # identical work inside the epoch loop: the run's noise floor
        lines.append(f"- {spec_name}: noise floor of this run: the bare and + val hand-written "
                     "epoch loops do identical work, and their paired ratio is "
                     f"{val.paired(bare, epoch_loop=True):.2f}x")
    fixed = (f"fixed costs measured alone on {spec_name}: mx.random.seed (train() reseeds every "
             f"epoch) {costs['seed']:.1f} ms of engine time; symbuilder checkpoint "
             f"(RunStore.save: params + optimizer state + state.json, 2 fsyncs) "
             f"{costs['symbuilder checkpoint']:.1f} ms; do_checkpoint (symbol + params, no "
             f"fsync) {costs['do_checkpoint']:.1f} ms; build_symbol once per train() call "
             f"(the hand-written runs build outside the clock) {costs['build_symbol']:.1f} ms; "
             f"validation: symbuilder's (train.evaluate: forward loop, padding rows left out) "
             f"{costs['symbuilder validation']:.1f} ms, Module.score (eval_data; counts the "
             f"padded rows) {costs['Module.score']:.1f} ms")
    return "\n".join(lines + [f"- {fixed}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run: 1 repeat, 2 epochs, small stats array")
    parser.add_argument("--out", metavar="FILE", help="also write the report here")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    from symbuilder import bench
    from symbuilder.data import load_data
    from symbuilder.spec.load import load_spec
    # Dev-only studies live beside this script (its folder is sys.path[0]), not in the package.
    from fixed_costs import fixed_costs
    from scaling_study import compare_scaling, scaling_table, scaling_verdict

    started = time.perf_counter()
    info = bench.machine()
    plan = QUICK if args.quick else SPECS
    inference_repeats = 1 if args.quick else 5
    command = "python tests/benchmarks/bench_all.py" + (" --quick" if args.quick else "")
    sections = []
    training_parts, inference_parts, notes, skipped = [], [], [], []
    for path, (epochs, repeats) in plan.items():
        spec = load_spec(path)
        data = load_data(spec)
        say(f"{spec.name}: {epochs} epochs per run, {repeats} repeats")
        report = bench.run_bench(spec, repeats=repeats, epochs=epochs, data=data,
                                 inference_repeats=inference_repeats, say=say)
        costs = fixed_costs(spec, data, repeats=5 if args.quick else 15)
        training_parts.append(
            f"**{spec.name}** ({report.train_samples} training samples, {epochs} epochs per "
            f"run, median of {repeats} interleaved runs after a warm-up; `symbuilder bench "
            f"{path} --epochs {epochs} --repeats {repeats}`)\n\n"
            + bench.training_table(report.training))
        inference_parts.append(f"**{spec.name}**\n\n" + bench.inference_table(report.inference))
        notes.append(explain(spec.name, report, costs))
        skipped += [f"{spec.name}: {s}" for s in report.skipped]
    say("input statistics: bench_stats.py")
    stats = stats_section(args.quick)
    say("scaling")
    counts = (10, 30, 100) if args.quick else (10, 100, 1000)
    scaling = compare_scaling(os.path.join(ROOT, "specs", "data", "breast_cancer.csv"),
                                    counts=counts, repeats=1 if args.quick else 3, say=say)
    elapsed = time.perf_counter() - started
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    sections.append("# symbuilder benchmarks\n")
    sections.append(f"Measured {datetime.date.today().isoformat()} on {bench.machine_line(info)}"
                    + (f", {end_load:.2f} at the end" if end_load is not None else "")
                    + f". Command: `{command}` (or `make bench`); for your own spec: "
                      "`symbuilder bench SPEC`. Whole comparison: "
                      f"{elapsed / 60:.1f} minutes.\n")
    sections.append("## 1. Training throughput\n\nsamples/s; every clock stops after "
                    "`mx.nd.waitall()`. " + bench.FOOTNOTE + "\n")
    sections.append("\n\n".join(training_parts) + "\n")
    if skipped:
        sections.append("Not measured: " + "; ".join(skipped) + "\n")
    sections.append("Where symbuilder trails the hand-written run doing the same work, and "
                    "the fixed per-epoch costs behind it:\n\n" + "\n".join(notes) + "\n")
    sections.append("## 2. Inference\n\nONNX Runtime on the export (all graph optimisations, "
                    "default threads) against MXNet Module forward bound for inference; both "
                    "from numpy in to numpy out; batch 1: p50/p99 of 200 calls a round; batch "
                    f"256: median call; {inference_repeats} interleaved rounds.\n")
    sections.append("\n\n".join(inference_parts) + "\n")
    sections.append("## 3. Input statistics\n\nThe calibration pass (`symbuilder.moments."
                    "array_stats`, float64 accumulation) against numpy mean + var over the "
                    "same float32 array:\n\n" + stats + "\n")
    sections.append("## 4. Scaling\n\nBuild without training of generated MLPs "
                    "(FullyConnected(16)/relu alternating, then FullyConnected(2); breast "
                    "cancer data, read once outside the clocks): spec text loaded and "
                    "validated (`loads_spec`), `build_symbol`, the ONNX file written and "
                    "checked (`export_onnx`), and the ORT parity suite a build runs; "
                    f"median of {1 if args.quick else 3} interleaved rounds. Training skipped: "
                    "parameters come from the initializer ('init params', not in build).\n\n"
                    + scaling_table(scaling) + "\n\n" + scaling_verdict(scaling)
                    + "\n")
    text = "\n".join(sections)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    say(f"done in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
