"""ONNX Runtime vs MXNet parity: run both on the same inputs and report the largest disagreement.

Parity is checked with ONNX Runtime's graph optimisations fully on and fully off (fusions can
change numerics), at batch 1 and at the full batch (a dynamic batch axis must really work).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Tuple, Union

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort

# Divisor floor for the relative error, so an exact zero in MXNet's output gives a huge (honest)
# relative error instead of a division by zero.
_TINY = float(np.finfo(np.float32).tiny)

# ORT sessions are costly to build (graph optimisation); keep the few most recent ones.
_SESSION_CACHE: "OrderedDict[Tuple[str, bool], ort.InferenceSession]" = OrderedDict()
_SESSION_CACHE_SIZE = 8
_ORT_THREADS = 2  # the machines we target are small; more threads only add contention

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


@dataclass
class ParityReport:
    """The outcome of one parity check; ``details`` has one row per (output, batch size, ORT level)."""

    max_abs: float
    max_rel: float
    atol: float
    passed: bool
    details: List[Dict[str, Any]] = field(default_factory=list)
    rtol: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, mx.nd.NDArray):
        return value.asnumpy()
    return np.asarray(value)


def mxnet_forward(
    symbol: mx.sym.Symbol,
    arg_params: Mapping[str, Any],
    aux_params: Mapping[str, Any],
    inputs: Mapping[str, np.ndarray],
) -> List[np.ndarray]:
    """MXNet's inference outputs (is_train=False, CPU); label variables are bound to zeros.

    float64 inputs are given to MXNet as float32, its default dtype (the parameters are float32).
    """
    ctx = mx.cpu()
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    arrays = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}
    arg_names = symbol.list_arguments()
    aux_names = symbol.list_auxiliary_states()
    known = {k: v.shape for k, v in arrays.items() if k in arg_names}
    known.update({k: _as_numpy(v).shape for k, v in arg_params.items() if k in arg_names})
    arg_shapes, _, aux_shapes = symbol.infer_shape_partial(**known)
    args = {}
    for name, shape in zip(arg_names, arg_shapes):
        if name in arrays:
            args[name] = mx.nd.array(arrays[name], ctx=ctx, dtype=arrays[name].dtype)
        elif name in arg_params:
            value = _as_numpy(arg_params[name])
            args[name] = mx.nd.array(value, ctx=ctx, dtype=value.dtype)
        else:
            # Anything else is a loss head's label: it does not affect the forward output.
            args[name] = mx.nd.zeros(shape, ctx=ctx)
    aux = {}
    for name in aux_names:
        value = _as_numpy(aux_params[name])
        aux[name] = mx.nd.array(value, ctx=ctx, dtype=value.dtype)
    executor = symbol.bind(ctx, args=args, aux_states=aux, grad_req="null")
    outputs = executor.forward(is_train=False)
    return [o.asnumpy() for o in outputs]


def _model_bytes(model: Union[onnx.ModelProto, bytes, str]) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def _session(model: Union[onnx.ModelProto, bytes, str], optimize: bool) -> ort.InferenceSession:
    data = _model_bytes(model)
    key = (hashlib.sha256(data).hexdigest(), optimize)
    session = _SESSION_CACHE.get(key)
    if session is not None:
        _SESSION_CACHE.move_to_end(key)
        return session
    options = ort.SessionOptions()
    options.intra_op_num_threads = _ORT_THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    _SESSION_CACHE[key] = session
    if len(_SESSION_CACHE) > _SESSION_CACHE_SIZE:
        _SESSION_CACHE.popitem(last=False)
    return session


def onnx_forward(
    model: Union[onnx.ModelProto, bytes, str],
    inputs: Mapping[str, np.ndarray],
    *,
    optimize: bool = True,
) -> List[np.ndarray]:
    """ONNX Runtime's outputs (CPU) for ``inputs``; inputs the graph does not declare are ignored.

    Each input is cast to the dtype the graph declares (e.g. float64 data to a float input).
    """
    session = _session(model, optimize)
    feeds = {}
    for spec in session.get_inputs():
        if spec.name not in inputs:
            raise KeyError(f"ONNX input '{spec.name}' was not given (given: {sorted(inputs)})")
        value = np.asarray(inputs[spec.name])
        feeds[spec.name] = value.astype(_ORT_TYPES.get(spec.type, value.dtype), copy=False)
    return session.run(None, feeds)


def _compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Dict[str, Any]:
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "passed": False,
                "reason": f"shape {got.shape} != MXNet's {ref.shape}"}
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    # NaN in exactly the same places is agreement; anywhere else it is an infinite error.
    both_nan = np.isnan(ref64) & np.isnan(got64)
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    rel = diff / np.maximum(np.abs(np.nan_to_num(ref64)), _TINY)
    passed = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(ref64))))
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "passed": passed,
    }


def verify_parity(
    symbol: mx.sym.Symbol,
    arg_params: Mapping[str, Any],
    aux_params: Mapping[str, Any],
    model: Union[onnx.ModelProto, bytes, str],
    inputs: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float = 0.0,
) -> ParityReport:
    """Compare every output of ONNX Runtime (all optimisations / none) with MXNet at batch 1 and full batch."""
    data = _model_bytes(model)  # serialise once; sessions are cached by content
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    full = min(v.shape[0] for v in inputs.values())
    batches = [1] if full == 1 else [1, full]
    output_names = symbol.list_outputs()
    details: List[Dict[str, Any]] = []
    for batch in batches:
        feed = {k: v[:batch] for k, v in inputs.items()}
        reference = mxnet_forward(symbol, arg_params, aux_params, feed)
        for optimize in (True, False):
            got = onnx_forward(data, feed, optimize=optimize)
            level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
            if len(got) != len(reference):
                details.append({"output": "*", "batch": batch, "ort_level": level, "max_abs": float("inf"),
                                "max_rel": float("inf"), "passed": False,
                                "reason": f"{len(got)} ONNX outputs, {len(reference)} MXNet outputs"})
                continue
            for name, ref, out in zip(output_names, reference, got):
                row = {"output": name, "batch": batch, "ort_level": level}
                row.update(_compare(ref, np.asarray(out), atol, rtol))
                details.append(row)
    max_abs = max((d["max_abs"] for d in details), default=0.0)
    max_rel = max((d["max_rel"] for d in details), default=0.0)
    passed = bool(details) and all(d["passed"] for d in details)
    return ParityReport(max_abs=max_abs, max_rel=max_rel, atol=atol, passed=passed, details=details, rtol=rtol)
