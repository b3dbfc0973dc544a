"""The scaling study (dev only, for bench_all.py): build and export time of generated MLPs
against their layer count, to show the cost of an added layer does not grow with the net."""
from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

Say = Callable[[str], None]


def scaling_spec_text(layers: int, data_path: str, *, hidden: int = 16, classes: int = 2,
                      features: int = 30) -> str:
    """YAML of an MLP of exactly `layers` layers on a csv with a 'benign' label column:
    FullyConnected(hidden) and Activation(relu) alternating, then FullyConnected(classes)."""
    if layers < 1:
        raise ValueError("layers must be >= 1")
    rows = []
    for i in range(layers - 1):
        rows.append(f"  - {{op: FullyConnected, name: fc{i}, num_hidden: {hidden}}}" if i % 2 == 0
                    else f"  - {{op: Activation, name: act{i}, act_type: relu}}")
    rows.append(f"  - {{op: FullyConnected, name: out, num_hidden: {classes}}}")
    return "\n".join([
        f"name: mlp{layers}",
        "input:",
        "  name: data",
        f"  shape: [{features}]",
        "  normalize: {stats: dataset, eps: 0.001}",
        "layers:",
        *rows,
        "output: {op: SoftmaxOutput, name: softmax}",
        "data:",
        f"  train: {{path: {data_path}, format: csv, label: benign}}",
        "  val_fraction: 0.2",
        "train: {epochs: 1, batch_size: 32, optimizer: sgd, "
        "optimizer_params: {learning_rate: 0.05}, seed: 7}",
        "export: {formats: [checkpoint, onnx], onnx: {opset: 17}, verify: {atol: 1.0e-5}}",
        "",
    ])


@dataclasses.dataclass
class ScalingFigures:
    layers: int
    phases: Dict[str, float]   # median seconds per phase
    build: float               # median seconds: load + validate, symbol, ONNX, parity

    @property
    def per_layer_ms(self) -> float:
        return 1e3 * self.build / self.layers


SCALING_PHASES = ("load + validate", "build_symbol", "ONNX translation", "ORT parity")


def time_build(text: str, held_out: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Seconds of each phase of a build without training: the spec loaded and validated
    from text (symbuilder.loads_spec), build_symbol, the ONNX file written and checked
    (onnxfile.export_onnx, as a build does), and the ONNX Runtime parity suite the build
    runs (proof.parity_or_fail). Parameters come from the initializer (Module.init_params;
    timed as 'init params', not part of the build)."""
    import mxnet as mx
    from symbuilder import proof
    from symbuilder.export import onnxfile
    from symbuilder.bench import input_names
    from symbuilder.bench._product import global_initializer
    from symbuilder.graph import build_symbol
    from symbuilder.graph.shapes import data_shapes
    from symbuilder.spec.load import loads_spec
    times: Dict[str, float] = {}
    t = time.perf_counter()
    spec = loads_spec(text)
    times["load + validate"] = time.perf_counter() - t
    t = time.perf_counter()
    symbol = build_symbol(spec)
    times["build_symbol"] = time.perf_counter() - t
    t = time.perf_counter()
    mod = mx.mod.Module(symbol, data_names=input_names(spec),
                        label_names=[spec.output.label_name], context=mx.cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod.bind(data_shapes=list(data_shapes(spec, 1).items()), for_training=False)
    mx.random.seed(spec.train.seed)
    mod.init_params(global_initializer(spec))
    arg_params, aux_params = mod.get_params()
    mx.nd.waitall()
    times["init params"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
        t = time.perf_counter()
        path = onnxfile.export_onnx(tmp, spec.name, symbol, arg_params, aux_params,
                                     data_shapes(spec, 1), opset=spec.export.onnx.opset,
                                     dynamic_batch=spec.export.onnx.dynamic_batch)
        with open(path, "rb") as f:
            model_bytes = f.read()
        times["ONNX translation"] = time.perf_counter() - t
    t = time.perf_counter()
    proof.parity_or_fail(symbol, arg_params, aux_params, model_bytes,
                           atol=spec.export.verify.atol, held_out=held_out,
                           random_samples=len(next(iter(held_out.values()))))
    times["ORT parity"] = time.perf_counter() - t
    times["layers"] = float(len(spec.layers))
    return times


def compare_scaling(data_path: str, *, counts: Sequence[int] = (10, 100, 1000),
                    repeats: int = 3, samples: int = 64,
                    say: Optional[Say] = None) -> List[ScalingFigures]:
    """Build time (no training) of generated MLPs of each layer count, interleaved after a
    warm-up, medians over repeats. The data is read once, outside the clocks."""
    from symbuilder.data import load_data
    from symbuilder.spec.load import loads_spec
    say = say or (lambda line: None)
    texts = {n: scaling_spec_text(n, data_path) for n in counts}
    data = load_data(loads_spec(texts[counts[0]]))
    held_out = {k: np.ascontiguousarray(v[:samples]) for k, v in data.val.inputs.items()}
    time_build(texts[counts[0]], held_out)  # warm-up: imports, first binds, ORT
    runs: Dict[int, List[Dict[str, float]]] = {n: [] for n in counts}
    for r in range(repeats):
        order = list(counts)[r % len(counts):] + list(counts)[:r % len(counts)]
        for n in order:
            gc.collect()
            runs[n].append(time_build(texts[n], held_out))
        say(f"scaling round {r + 1}/{repeats} done")
    out = []
    for n in counts:
        phases = {p: statistics.median(run[p] for run in runs[n])
                  for p in SCALING_PHASES + ("init params",)}
        build = statistics.median(sum(run[p] for p in SCALING_PHASES) for run in runs[n])
        out.append(ScalingFigures(n, phases, build))
    return out


def scaling_table(figures: Sequence[ScalingFigures]) -> str:
    """Markdown: per layer count, each phase, the build, per-layer time, and the marginal
    cost per added layer between consecutive counts (equal marginals = linear growth)."""
    lines = ["| layers | " + " | ".join(f"{p} s" for p in SCALING_PHASES) +
             " | build s | ms per layer | marginal ms per added layer | init params s (not in build) |",
             "|---" * (len(SCALING_PHASES) + 5) + "|"]
    previous = None
    for f in figures:
        marginal = "-"
        if previous is not None:
            marginal = f"{1e3 * (f.build - previous.build) / (f.layers - previous.layers):.2f}"
        lines.append(f"| {f.layers} | " + " | ".join(f"{f.phases[p]:.3f}" for p in SCALING_PHASES)
                     + f" | {f.build:.3f} | {f.per_layer_ms:.2f} | {marginal} | "
                       f"{f.phases['init params']:.3f} |")
        previous = f
    return "\n".join(lines)


def scaling_verdict(figures: Sequence[ScalingFigures]) -> str:
    """One line: the ratio of the last two marginal costs per layer (1.0 = linear)."""
    if len(figures) < 3:
        return ""
    a, b, c = figures[-3], figures[-2], figures[-1]
    first = (b.build - a.build) / (b.layers - a.layers)
    last = (c.build - b.build) / (c.layers - b.layers)
    ratio = last / first if first > 0 else float("inf")
    kind = ("linear: the cost of an added layer does not grow with the layer count"
            if ratio <= 1.5 else "NOT linear: an added layer costs more in a bigger network")
    return (f"marginal cost per layer {a.layers}->{b.layers}: {1e3 * first:.2f} ms, "
            f"{b.layers}->{c.layers}: {1e3 * last:.2f} ms; ratio {ratio:.2f} ({kind}; "
            f"per-layer time ratio {c.per_layer_ms / b.per_layer_ms:.2f}x from {b.layers} "
            f"to {c.layers} layers)")

