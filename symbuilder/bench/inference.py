"""Inference: ONNX Runtime on the export against MXNet Module forward, at batch 1 (latency)
and at a large batch (throughput)."""
from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import onnxruntime as ort

from .. import proof
from ..export.checkpoint import to_numpy_params
from ..onnx import to_onnx
from .harness import Say, input_names


@dataclasses.dataclass
class InferenceFigures:
    name: str
    p50_ms: float             # batch 1 latency
    p99_ms: float
    batch: int
    throughput: float         # samples/s at `batch`, median call


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def compare_inference(spec: Any, symbol: Any, arg_params: Dict, aux_params: Dict,
                      samples: Any, *, repeats: int, calls: int = 200,
                      batch: int = 256, batch_calls: int = 10,
                      say: Optional[Say] = None) -> List[InferenceFigures]:
    """ONNX Runtime (the export, all graph optimisations, default threads) against MXNet
    Module forward (bound for inference), both from numpy batches to a numpy result.
    `samples`: an array (one input) or arrays by input name. Batch 1: `calls`
    single-sample calls per round; batch `batch`: `batch_calls` calls per round; rounds
    interleaved, after a warm-up."""
    say = say or (lambda line: None)
    names = input_names(spec)
    samples = _samples_by_name(names, samples)
    shapes = {item.name: tuple(item.shape) for item in spec.all_inputs}
    session = _ort_session(spec, symbol, arg_params, aux_params, {n: shapes[n] for n in names})
    modules = {b: _mxnet_module(spec, symbol, arg_params, aux_params,
                                {n: (b,) + shapes[n] for n in names}) for b in (1, batch)}
    count = min(len(v) for v in samples.values())
    picks = np.resize(np.arange(count), batch)
    big = {n: np.ascontiguousarray(samples[n][picks], dtype=np.float32) for n in names}
    one = [{n: np.ascontiguousarray(samples[n][i % count][None], dtype=np.float32)
            for n in names} for i in range(calls)]

    def run_ort(x: Dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, x)[0]

    def run_mx(x: Dict[str, np.ndarray]) -> np.ndarray:
        mod = modules[len(next(iter(x.values())))]
        mod.forward(mx.io.DataBatch([mx.nd.array(x[n]) for n in names]), is_train=False)
        out = mod.get_outputs()[0].asnumpy()
        mx.nd.waitall()
        return out

    backends = {"ONNX Runtime (export)": run_ort, "MXNet Module forward": run_mx}
    # The build's tolerance rule and defaults: a model the build would refuse is not timed.
    check = proof.compare(run_mx(big), run_ort(big), proof.DEFAULT_ATOL, proof.DEFAULT_RTOL)
    if not check["passed"]:
        raise RuntimeError(f"ONNX Runtime and MXNet disagree by {check['max_abs']:.3g} (max rel "
                           f"{check['max_rel']:.3g} of the output's scale): not benchmarking")
    single, many = _timed_rounds(backends, one, big, repeats=repeats, batch_calls=batch_calls,
                                 say=say)
    return [InferenceFigures(n, 1e3 * _percentile(single[n], 50), 1e3 * _percentile(single[n], 99),
                             batch, batch / statistics.median(many[n])) for n in backends]


def _samples_by_name(names: Sequence[str], samples: Any) -> Dict[str, np.ndarray]:
    if isinstance(samples, dict):
        return samples
    if len(names) != 1:
        raise ValueError(f"several inputs ({', '.join(names)}): pass samples by name")
    return {names[0]: samples}


def _ort_session(spec: Any, symbol: Any, arg_params: Dict, aux_params: Dict,
                 sample_shapes: Dict[str, tuple]) -> ort.InferenceSession:
    """The export as the build makes it (dynamic batch, the spec's opset), in ONNX Runtime."""
    model = to_onnx(symbol, to_numpy_params(arg_params, aux_params),
                    {n: (1,) + s for n, s in sample_shapes.items()},
                    opset=spec.export.onnx.opset, dynamic_batch=True, model_name=spec.name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _mxnet_module(spec: Any, symbol: Any, arg_params: Dict, aux_params: Dict,
                  data_shapes: Dict[str, tuple]) -> Any:
    mod = mx.mod.Module(symbol, data_names=list(data_shapes), label_names=[spec.output.label_name],
                        context=mx.cpu())
    with warnings.catch_warnings():  # no label shapes: bound for inference
        warnings.simplefilter("ignore")
        mod.bind(data_shapes=list(data_shapes.items()), for_training=False)
    mod.set_params(arg_params, aux_params, allow_missing=False)
    return mod


def _timed_rounds(backends: Dict[str, Callable[[Dict[str, np.ndarray]], np.ndarray]],
                  one: List[Dict[str, np.ndarray]], big: Dict[str, np.ndarray], *,
                  repeats: int, batch_calls: int,
                  say: Say) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Seconds per call of each backend, single-sample and batched, after a warm-up; the
    backends take turns first from round to round so neither always runs on a cold cache."""
    for fn in backends.values():  # warm-up
        for x in one[:20]:
            fn(x)
        for _ in range(2):
            fn(big)
    single: Dict[str, List[float]] = {n: [] for n in backends}
    many: Dict[str, List[float]] = {n: [] for n in backends}
    order = list(backends)
    for r in range(repeats):
        for name in order[r % 2:] + order[:r % 2]:
            fn = backends[name]
            for x in one:
                t = time.perf_counter()
                fn(x)
                single[name].append(time.perf_counter() - t)
            for _ in range(batch_calls):
                t = time.perf_counter()
                fn(big)
                many[name].append(time.perf_counter() - t)
        say(f"inference round {r + 1}/{repeats} done")
    return single, many

