"""Benchmark: a whole `symbuilder build` against the hand-written script it replaces (issue 12).

Run: python tests/benchmarks/bench_build.py [--rows 50000] [--features 32] [--epochs 4]
                                            [--pairs 3]

Both sides are fresh processes doing the same job on the same generated CSV: read it, compute
the input layer's mean and variance, build an MLP with a frozen-affine input BatchNorm, train it
with Module.fit (same batch size, optimizer, epochs) and save a Module checkpoint. The
hand-written script is what an MXNet user writes without symbuilder (np.loadtxt, numpy
statistics, NDArrayIter, Module.fit with MXNet's accuracy metric, save_checkpoint). symbuilder
also validates, checkpoints resumably every epoch, evaluates exactly on the validation split,
checks the freeze and writes a manifest. Pairs are interleaved (A B, B A, ...) after one warm-up
pair (which also writes Python's bytecode cache, see bench_env); the report gives medians and the median of the per-pair ratios, then symbuilder's fixed
costs measured alone in one process. Not collected by pytest (bench_*.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SPEC = """\
name: bench_build
input: {{shape: [{features}]}}
layers:
  - {{op: FullyConnected, name: fc1, num_hidden: 64}}
  - {{op: Activation, name: relu1, act_type: relu}}
  - {{op: FullyConnected, name: fc2, num_hidden: 2}}
output: {{op: SoftmaxOutput, name: softmax}}
data:
  train: {{path: data.csv, label: y}}
  val_fraction: 0.2
train: {{epochs: {epochs}, batch_size: 128, optimizer: sgd,
        optimizer_params: {{learning_rate: 0.05, momentum: 0.9}}, eval_metric: [acc], seed: 0}}
export: {{formats: [checkpoint]}}
"""

HAND_WRITTEN = """\
import logging, sys
import mxnet as mx
import numpy as np

raw = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1, dtype=np.float32)
x, y = raw[:, :-1], raw[:, -1]
rng = np.random.RandomState(0)
order = rng.permutation(len(x))
n_val = int(round(0.2 * len(x)))
val, train = order[:n_val], order[n_val:]
mean = x[train].astype(np.float64).mean(axis=0)
var = x[train].astype(np.float64).var(axis=0)

data = mx.sym.Variable("data")
gamma = mx.sym.Variable("data_norm_gamma", lr_mult=0, wd_mult=0, init=mx.init.One())
beta = mx.sym.Variable("data_norm_beta", lr_mult=0, wd_mult=0, init=mx.init.Zero())
net = mx.sym.BatchNorm(data, gamma=gamma, beta=beta, name="data_norm", eps=1e-3,
                       fix_gamma=False, use_global_stats=True)
net = mx.sym.FullyConnected(net, num_hidden=64, name="fc1")
net = mx.sym.Activation(net, act_type="relu", name="relu1")
net = mx.sym.FullyConnected(net, num_hidden=2, name="fc2")
net = mx.sym.SoftmaxOutput(net, name="softmax")

train_it = mx.io.NDArrayIter(x[train], y[train], batch_size=128, shuffle=True,
                             label_name="softmax_label")
val_it = mx.io.NDArrayIter(x[val], y[val], batch_size=128, label_name="softmax_label")
mod = mx.mod.Module(net, data_names=["data"], label_names=["softmax_label"],
                    fixed_param_names=["data_norm_gamma", "data_norm_beta"],
                    logger=logging.getLogger("quiet"))
mod.bind(train_it.provide_data, train_it.provide_label)
mod.init_params(mx.init.Xavier(magnitude=2.0),
                aux_params={"data_norm_moving_mean": mx.nd.array(mean),
                            "data_norm_moving_var": mx.nd.array(var)}, allow_missing=True)
mod.fit(train_it, eval_data=val_it, eval_metric="acc", optimizer="sgd",
        optimizer_params={"learning_rate": 0.05, "momentum": 0.9}, num_epoch=int(sys.argv[3]),
        epoch_end_callback=mx.callback.do_checkpoint(sys.argv[2]))
"""


def write_data(folder: str, rows: int, features: int) -> str:
    rng = np.random.RandomState(0)
    scales = 10.0 ** rng.uniform(-2, 3, features)
    x = rng.randn(rows, features) * scales + rng.randn(features) * scales * 3
    y = (x[:, :4] / scales[:4]).sum(axis=1) > 0
    path = os.path.join(folder, "data.csv")
    header = ",".join([f"f{i}" for i in range(features)] + ["y"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt=["%.6g"] * features + ["%d"])
    return path


def bench_env() -> dict:
    """Both contenders' environment: symbuilder first on the path, and Python's bytecode
    cache on, as on a user's machine (pip compiles an installed package; an editable one
    writes its .pyc on first import). Some sandboxes set PYTHONDONTWRITEBYTECODE, which
    would make every symbuilder run recompile its ~70 modules (~0.1 s) while MXNet's .pyc,
    compiled at install, are read: the warm-up pair writes the cache instead."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MXNET_SUBGRAPH_VERBOSE="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(argv: list, cwd: str) -> float:
    env = bench_env()
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-800:]}")
    return seconds


def fixed_costs(folder: str, spec_path: str) -> list:
    """symbuilder's stages timed alone, in one process (a second process run)."""
    probe = textwrap.dedent(f"""
        import time, json, sys
        t0 = time.perf_counter()
        import symbuilder.cli
        t_cli = time.perf_counter()
        from symbuilder import pipeline
        from symbuilder.spec.load import load_spec
        t_import = time.perf_counter()
        spec = load_spec({spec_path!r})
        t_spec = time.perf_counter()
        out = pipeline.build(spec, out_dir={os.path.join(folder, 'probe')!r})
        t_build = time.perf_counter()
        print(json.dumps({{"cli import": t_cli - t0, "pipeline + mxnet import": t_import - t_cli,
                          "load + validate spec": t_spec - t_import,
                          "build (data, stats, train, export)": t_build - t_spec}}))
    """)
    env = bench_env()
    done = subprocess.run([sys.executable, "-c", probe], cwd=folder, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return [f"(fixed-cost probe failed: {done.stderr[-300:]})"]
    import json
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return [f"| {k} | {v:.2f} s |" for k, v in figures.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-build-") as folder:
        data = write_data(folder, args.rows, args.features)
        spec_path = os.path.join(folder, "spec.yaml")
        with open(spec_path, "w") as f:
            f.write(SPEC.format(features=args.features, epochs=args.epochs))
        script = os.path.join(folder, "hand_written.py")
        with open(script, "w") as f:
            f.write(HAND_WRITTEN)
        ours = [sys.executable, "-m", "symbuilder", "build", spec_path, "-q",
                "--out", os.path.join(folder, "export")]
        theirs = [sys.executable, script, data, os.path.join(folder, "hand"), str(args.epochs)]
        timed(ours, folder), timed(theirs, folder)  # warm-up: page cache, .pyc files
        sb, hw, ratios = [], [], []
        for k in range(args.pairs):
            pair = (ours, theirs) if k % 2 == 0 else (theirs, ours)
            a, b = timed(pair[0], folder), timed(pair[1], folder)
            s, h = (a, b) if k % 2 == 0 else (b, a)
            sb.append(s)
            hw.append(h)
            ratios.append(s / h)
            print(f"pair {k + 1}: symbuilder {s:.2f} s, hand-written {h:.2f} s, ratio "
                  f"{s / h:.3f}", file=sys.stderr)
        print(f"## Whole build vs hand-written Module.fit script ({args.rows:,} rows x "
              f"{args.features} features, {args.epochs} epochs, checkpoint format)\n")
        print("| contender | median wall time |")
        print("| --- | --- |")
        print(f"| `symbuilder build` | {statistics.median(sb):.2f} s |")
        print(f"| hand-written Module.fit script | {statistics.median(hw):.2f} s |")
        print(f"\nmedian of per-pair ratios (symbuilder / hand-written): "
              f"{statistics.median(ratios):.3f} over {args.pairs} interleaved pairs\n")
        print("symbuilder's stages, timed alone in one process:\n")
        print("| stage | seconds |")
        print("| --- | --- |")
        for line in fixed_costs(folder, spec_path):
            print(line)
        print(f"\n(`python tests/benchmarks/bench_build.py --rows {args.rows} --features "
              f"{args.features} --epochs {args.epochs} --pairs {args.pairs}`)")


if __name__ == "__main__":
    main()
