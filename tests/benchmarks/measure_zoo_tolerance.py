"""How far ONNX Runtime drifts from MXNet on real network shapes (dev only; the figures behind
the default parity tolerance of issue 13): every `mxnet.gluon.model_zoo.vision` network at
random weights (pretrained=False: nothing is downloaded; He-initialised, seed 0), hybridized
and exported as symbol + params, translated with symbuilder's own `to_onnx` as `symbuilder
export` does, run on standard-normal input at batch 1 and 2, ORT with all graph
optimisations and none.

Per network: max |ort - mx|, the output scale max |mx|, their ratio, and the smallest rtol
for which |ort - mx| <= atol + rtol * |mx| holds everywhere with atol = 1e-5 * max |mx|.
Each network runs in its own process, skipped after --timeout seconds.

Measured 2026-12-01 (2 shared cores, 1 thread, mxnet 1.9.1, onnxruntime 1.32, 7 minutes): all
34 networks translate; max abs / scale median 6e-7, max 3.2e-6 (vgg19_bn); max abs itself
ranges from 5e-7 (vgg13, scale 0.28) to 3.2e3 (resnet152_v1, scale 6.4e9), so no absolute
atol fits them all, while atol = 1e-5 * scale holds everywhere with rtol 0.

    OMP_NUM_THREADS=1 python tests/benchmarks/measure_zoo_tolerance.py [--networks a,b]
        [--json FILE] [--timeout 120]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

# vision.get_model's table in mxnet 1.9.1 (it has no public list of names).
NETWORKS = [
    "alexnet", "densenet121", "densenet161", "densenet169", "densenet201", "inceptionv3",
    "mobilenet0.25", "mobilenet0.5", "mobilenet0.75", "mobilenet1.0", "mobilenetv2_0.25",
    "mobilenetv2_0.5", "mobilenetv2_0.75", "mobilenetv2_1.0", "resnet18_v1", "resnet34_v1",
    "resnet50_v1", "resnet101_v1", "resnet152_v1", "resnet18_v2", "resnet34_v2", "resnet50_v2",
    "resnet101_v2", "resnet152_v2", "squeezenet1.0", "squeezenet1.1", "vgg11", "vgg11_bn",
    "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]
ATOL_OF_SCALE = 1e-5
LEVELS = ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL")


def figures(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    """max_abs, scale, ratio, and the rtol needed with atol = ATOL_OF_SCALE * scale."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    scale = float(np.abs(ref64).max())
    excess = diff - ATOL_OF_SCALE * scale
    over = excess > 0
    if not over.any():
        rtol = 0.0
    elif np.any(ref64[over] == 0):
        rtol = float("inf")
    else:
        rtol = float((excess[over] / np.abs(ref64[over])).max())
    max_abs = float(diff.max())
    return {"max_abs": max_abs, "scale": scale, "ratio": max_abs / scale if scale else
            float("inf"), "rtol_needed": rtol}


def _session(model_bytes: bytes, level: str) -> Any:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine is shared; one core each, as MXNet
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(model_bytes, sess_options=options,
                                providers=["CPUExecutionProvider"])


def _exported(name: str, x: np.ndarray):
    """(symbol, arg_params, aux_params) of the network at seeded random weights, through
    Gluon's own export and symbuilder's checkpoint loader."""
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision
    from symbuilder.export.checkpoint import load_checkpoint
    mx.random.seed(0)
    net = vision.get_model(name, pretrained=False)
    # He initialisation keeps activations at unit scale through the ReLUs, as a trained net's
    # BatchNorms do; MXNet's default Xavier(avg) let mobilenet0.25's outputs fall to 6e-16.
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                   ctx=mx.cpu())
    net.hybridize()
    net(mx.nd.array(x[:1]))  # the forward that records the graph export writes
    with tempfile.TemporaryDirectory() as tmp:
        net.export(os.path.join(tmp, "net"), 0)
        return load_checkpoint(os.path.join(tmp, "net"), 0)


def measure(name: str) -> Dict[str, Any]:
    """One network, every (batch, ORT level): the figures, or the translation error."""
    from symbuilder.export.checkpoint import to_numpy_params
    from symbuilder.onnx import to_onnx
    from symbuilder.proof import mxnet_forward
    size = 299 if name.startswith("inception") else 224
    x = np.random.RandomState(0).standard_normal((2, 3, size, size)).astype(np.float32)
    symbol, arg_params, aux_params = _exported(name, x)
    try:
        model = to_onnx(symbol, to_numpy_params(arg_params, aux_params),
                        {"data": (1, 3, size, size)}, opset=17, dynamic_batch=True,
                        model_name=name).SerializeToString()
    except Exception as e:  # ExportError, or anything onnx raises: it is the measurement
        return {"network": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    rows = []
    for batch in (1, 2):
        ref = mxnet_forward(symbol, arg_params, aux_params, {"data": x[:batch]})[0]
        for level in LEVELS:
            got = _session(model, level).run(None, {"data": x[:batch]})[0]
            rows.append(dict(figures(ref, got), batch=batch, ort_level=level))
    return {"network": name, "input": [3, size, size], "rows": rows}


def _run_one(name: str, timeout: float) -> Dict[str, Any]:
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return {"network": name, "error": f"skipped after {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"network": name, "error": f"exit {proc.returncode}: {tail}"}
    return dict(json.loads(lines[-1]), seconds=round(time.time() - start, 1))


def table(results: List[Dict[str, Any]]) -> str:
    head = ("| network | max abs | scale max|mx| | max abs / scale "
            "| rtol needed (atol=1e-5·scale) | ratio b1 ENABLE / DISABLE "
            "| ratio b2 ENABLE / DISABLE | s |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['network']} | failed: {r['error']} |||||||")
            continue
        rows = r["rows"]
        worst = max(rows, key=lambda row: row["ratio"])
        by = {(row["batch"], row["ort_level"]): row["ratio"] for row in rows}
        lines.append(
            f"| {r['network']} | {max(row['max_abs'] for row in rows):.3g} | {worst['scale']:.3g} "
            f"| {worst['ratio']:.3g} | {max(row['rtol_needed'] for row in rows):.3g} "
            f"| {by[(1, LEVELS[0])]:.3g} / {by[(1, LEVELS[1])]:.3g} "
            f"| {by[(2, LEVELS[0])]:.3g} / {by[(2, LEVELS[1])]:.3g} | {r.get('seconds', '')} |")
    ok = [r for r in results if "error" not in r]
    if ok:
        ratios = [max(row["ratio"] for row in r["rows"]) for r in ok]
        lines.append(f"\n{len(ok)} of {len(results)} networks measured; max abs / scale: "
                     f"median {np.median(ratios):.3g}, max {max(ratios):.3g}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", help="comma-separated subset of " + ", ".join(NETWORKS))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per network")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one network
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    names = args.networks.split(",") if args.networks else NETWORKS
    results = []
    for name in names:
        results.append(_run_one(name, args.timeout))
        print(f"{name}: {results[-1].get('error') or 'measured'}", file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    sys.exit(main())
