"""The proof: ONNX Runtime against MXNet on the same inputs, the tolerance rule, the random
samples and their seed. The build, `symbuilder export`, `symbuilder verify` and `bench` all
run this suite, with the defaults of symbuilder.defaults.

Parity is checked with ONNX Runtime's graph optimisations fully on and fully off (fusions can
change numerics), at batch 1 and at the full batch (a dynamic batch axis must really work),
on held-out samples and on random ones. An output passes when
max|ort - mxnet| <= atol + rtol * scale, scale = max|mxnet| over that output (TOLERANCE_RULE):
float32 rounding grows with the magnitudes a layer sums, so an element near zero in a large
output carries the output's error, not its own (measured: defaults.py).

An output whose values depend on a random op (one registered ``random=True``: _random_normal,
_sample_multinomial...; anything downstream of one) cannot match value by value. It passes
when its shape and dtype are exactly MXNet's and its values have MXNet's distribution
(DISTRIBUTION_RULE): a float output by the two-sample Kolmogorov-Smirnov statistic of all its
elements against the asymptotic critical value at alpha = DISTRIBUTION_ALPHA, an integer output
(drawn categories) by each value's frequency against Hoeffding's bound at alpha over the number
of values (Bonferroni), which holds at any sample size. Both count as samples the number of
values the random ops upstream draw (draw_counts), not the output's elements: a draw broadcast
over the batch repeats in every row, and counting its copies as samples made 4 in 10 correct
exports fail (measured). Each check falsely fails a correct translation with probability about
alpha (1e-6) when each element has its own draw (elements not identically distributed, because
they depend on the data, only make the tests more conservative); elements that mix several
draws are counted as the draws, a heuristic; a suite runs at most a few dozen such checks. Its
row says "distribution" with the statistic, the critical value and the samples counted,
instead of max_abs. Deterministic outputs of the same graph keep the exact rule.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import mxnet as mx
import numpy as np
import onnx

from .defaults import (DEFAULT_ATOL, DEFAULT_RANDOM_SAMPLES, DEFAULT_RTOL, DEFAULT_SEED,
                       TOLERANCE_RULE)
from .errors import ExportError
from .heavyimport import import_blocking_signals

if TYPE_CHECKING:  # annotations only: ONNX Runtime is imported on first use (_ort)
    import onnxruntime as ort

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "DEFAULT_RANDOM_SAMPLES", "DEFAULT_SEED",
           "TOLERANCE_RULE", "ParityReport", "compare", "feature_range", "mxnet_forward",
           "onnx_forward", "parity_or_fail", "parity_suite", "random_inputs", "session",
           "verify_parity"]

# Divisor floor for the relative error, so an output that is exactly zero everywhere gives a
# huge (honest) relative error instead of a division by zero.
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
    rule: str = TOLERANCE_RULE

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
    dtypes: Optional[Mapping[str, str]] = None,
) -> List[np.ndarray]:
    """MXNet's inference outputs (is_train=False, CPU); label variables are bound to zeros.

    An input named in `dtypes` is bound with that dtype (the ONNX graph declares the same);
    any other float64 input is given to MXNet as float32, its default dtype (the parameters
    are float32).
    """
    ctx = mx.cpu()
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    arrays = {k: v.astype((dtypes or {}).get(k) or
                          (np.float32 if v.dtype == np.float64 else v.dtype), copy=False)
              for k, v in arrays.items()}
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


def _ort() -> Any:
    """onnxruntime, imported when a first session is made: a build that exports no ONNX
    model (formats: [checkpoint]) never pays its import (20..45 ms here; issue 12's
    whole-build benchmark). Imported with signals blocked, as the CLI imports it for the
    commands that always need it: an interrupt inside the import would break it."""
    return import_blocking_signals(["onnxruntime"])[0]


def session(model: Union[onnx.ModelProto, bytes, str], optimize: bool) -> "ort.InferenceSession":
    data = _model_bytes(model)
    key = (hashlib.sha256(data).hexdigest(), optimize)
    cached = _SESSION_CACHE.get(key)
    if cached is not None:
        _SESSION_CACHE.move_to_end(key)
        return cached
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = _ORT_THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    made = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    _SESSION_CACHE[key] = made
    if len(_SESSION_CACHE) > _SESSION_CACHE_SIZE:
        _SESSION_CACHE.popitem(last=False)
    return made


def onnx_forward(
    model: Union[onnx.ModelProto, bytes, str],
    inputs: Mapping[str, np.ndarray],
    *,
    optimize: bool = True,
) -> List[np.ndarray]:
    """ONNX Runtime's outputs (CPU) for ``inputs``; inputs the graph does not declare are ignored.

    Each input is cast to the dtype the graph declares (e.g. float64 data to a float input).
    """
    sess = session(model, optimize)
    feeds = {}
    for spec in sess.get_inputs():
        if spec.name not in inputs:
            raise KeyError(f"ONNX input '{spec.name}' was not given (given: {sorted(inputs)})")
        value = np.asarray(inputs[spec.name])
        feeds[spec.name] = value.astype(_ORT_TYPES.get(spec.type, value.dtype), copy=False)
    return sess.run(None, feeds)


def is_exact(dtype: Any) -> bool:
    """Integer and boolean values (indices, counts, masks) have no rounding: equal or wrong."""
    return np.issubdtype(np.dtype(dtype), np.integer) or np.dtype(dtype) == np.bool_


# The tolerance a float16 output is held to, relative to its scale: 4 units in the last place.
FLOAT16_RTOL = 4 * float(np.finfo(np.float16).eps)


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Dict[str, Any]:
    """One output against MXNet's under TOLERANCE_RULE: max_abs, max_rel (max_abs over the
    output's scale, not elementwise: an element near zero would report noise as a huge
    relative error), scale and passed. An integer or boolean MXNet output is compared exactly
    (atol = rtol = 0; `exact` in the row)."""
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "scale": None,
                "passed": False, "reason": f"shape {got.shape} != MXNet's {ref.shape}"}
    if is_exact(ref.dtype):
        row = _compare_floats(ref, got, 0.0, 0.0)
        # float64 cannot hold every int64: equality decides, and unequal integers differ by 1+.
        equal = bool(np.array_equal(ref, got))
        row.update(passed=equal, max_abs=row["max_abs"] if equal else max(row["max_abs"], 1.0),
                   exact=True)
        return row
    if ref.dtype == np.float16:
        # Half precision rounds at 2^-11 of a value: the same computation in two runtimes
        # differs by a few of those units of the output's scale, far above float32's 1e-5.
        rtol = max(rtol, FLOAT16_RTOL)
    return _compare_floats(ref, got, atol, rtol)


def _compare_floats(ref: np.ndarray, got: np.ndarray, atol: float,
                    rtol: float) -> Dict[str, Any]:
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    # NaN in exactly the same places is agreement; anywhere else it is an infinite error.
    both_nan = np.isnan(ref64) & np.isnan(got64)
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    finite = np.abs(ref64[np.isfinite(ref64)])
    scale = float(finite.max()) if finite.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"max_abs": max_abs, "max_rel": max_abs / max(scale, _TINY) if max_abs else 0.0,
            "scale": scale, "passed": bool(max_abs <= atol + rtol * scale)}


DISTRIBUTION_ALPHA = 1e-6
DISTRIBUTION_RULE = ("random outputs: shape and dtype exact; values: two-sample Kolmogorov-Smirnov "
                     "(float) or per-value frequency within Hoeffding's bound (integer), each at "
                     f"alpha {DISTRIBUTION_ALPHA:g}, over as many samples as the random ops draw")


def _random_sources(symbol: mx.sym.Symbol) -> List[frozenset]:
    """Per output of ``symbol``: the names of the random-op nodes its values depend on."""
    import json  # here with the import below, to leave proof's import block as it is
    from symbuilder.onnx.registry import random_ops  # local: proof's import block is being reorganised elsewhere
    graph = json.loads(symbol.tojson())
    sources: List[frozenset] = []
    for node in graph["nodes"]:
        upstream = frozenset().union(*(sources[j] for j, *_ in node["inputs"]))
        sources.append(upstream | {node["name"]} if node["op"] in random_ops() else upstream)
    return [sources[head[0]] for head in graph["heads"]]


def random_outputs(symbol: mx.sym.Symbol) -> List[bool]:
    """Per output of ``symbol``: True when its values depend on a random op."""
    return [bool(s) for s in _random_sources(symbol)]


def draw_counts(symbol: mx.sym.Symbol, shapes: Mapping[str, Tuple[int, ...]]) -> List[Optional[int]]:
    """Per output: how many independent values the random ops it depends on draw in one forward
    pass at these input (and parameter) shapes; None for a deterministic output. An output
    has at most this many independent elements (a draw broadcast over the batch repeats), so
    the distribution tests count this many samples, not its elements."""
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(**{k: tuple(v) for k, v in shapes.items()})
    sizes: Dict[str, int] = {}
    for name, shape in zip(internals.list_outputs(), out_shapes):
        node = name.rsplit("_output", 1)[0]
        if node not in sizes and shape is not None:  # the first output: the draws themselves
            sizes[node] = int(np.prod(shape))
    return [sum(sizes.get(n, 0) for n in src) if src else None for src in _random_sources(symbol)]


def _ks_statistic(a: np.ndarray, b: np.ndarray, tol: float = 0.0) -> float:
    """max over x of F_a(x) - F_b(x + tol) and F_b(x) - F_a(x + tol): the two-sample
    Kolmogorov-Smirnov statistic (tol = 0) with values within ``tol`` counted as equal, since
    two runtimes round the same discrete value (a log-probability) differently. It is never
    above the plain statistic, so the plain critical value keeps its false-alarm rate."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])

    def cdf(x: np.ndarray, at: np.ndarray) -> np.ndarray:
        return np.searchsorted(x, at, side="right") / x.size

    return float(max((cdf(a, points) - cdf(b, points + tol)).max(),
                     (cdf(b, points) - cdf(a, points + tol)).max()))


def _frequency_statistic(a: np.ndarray, b: np.ndarray, n: int) -> Tuple[float, float]:
    """(max over values v of |freq_a(v) - freq_b(v)|, its bound at DISTRIBUTION_ALPHA for ``n``
    independent draws each): Hoeffding gives P(|diff - E diff| >= t) <= 2 exp(-2 t^2 / (2 / n))."""
    values = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), values, side="right") - np.searchsorted(np.sort(a), values, side="left")
    fb = np.searchsorted(np.sort(b), values, side="right") - np.searchsorted(np.sort(b), values, side="left")
    stat = float(np.abs(fa / a.size - fb / b.size).max())
    width = 2.0 / n
    return stat, float(np.sqrt(width * np.log(2 * values.size / DISTRIBUTION_ALPHA) / 2))


def compare_distribution(ref: np.ndarray, got: np.ndarray, atol: float = DEFAULT_ATOL,
                         rtol: float = DEFAULT_RTOL, draws: Optional[int] = None) -> Dict[str, Any]:
    """A random output against MXNet's draw: exact shape and dtype, then DISTRIBUTION_RULE
    (float values within the exact rule's atol + rtol * scale of each other count as equal).
    ``draws`` (draw_counts): the independent values behind the output, when fewer than its
    elements; the critical value is that of ``draws`` samples each."""
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return {"distribution": "shape and dtype", "passed": False,
                "reason": f"{got.dtype} {got.shape} != MXNet's {ref.dtype} {ref.shape}"}
    a, b = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
    if a.size == 0:
        return {"distribution": "shape and dtype", "passed": True}
    n = min(a.size, draws or a.size)
    if is_exact(ref.dtype):
        stat, critical = _frequency_statistic(a, b, n)
        test = "value frequencies (Hoeffding)"
    else:
        finite = np.abs(a[np.isfinite(a)])
        rtol = max(rtol, FLOAT16_RTOL) if ref.dtype == np.float16 else rtol
        stat = _ks_statistic(a, b, atol + rtol * (float(finite.max()) if finite.size else 0.0))
        critical = float(np.sqrt(-np.log(DISTRIBUTION_ALPHA / 2) / 2 * 2 / n))
        test = "two-sample Kolmogorov-Smirnov"
    return {"distribution": test, "statistic": stat, "critical": critical,
            "alpha": DISTRIBUTION_ALPHA, "samples": n, "passed": bool(stat <= critical)}


def _shapes(arg_params: Mapping[str, Any], feed: Mapping[str, np.ndarray]) -> Dict[str, Tuple[int, ...]]:
    """The input and parameter shapes of one forward pass, for shape inference."""
    return {**{k: _as_numpy(v).shape for k, v in arg_params.items()}, **{k: v.shape for k, v in feed.items()}}


def _worst(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The largest ``key`` over the rows that have it (a distribution row has no max_abs)."""
    return max((r[key] for r in rows if key in r), default=0.0)


def verify_parity(
    symbol: mx.sym.Symbol,
    arg_params: Mapping[str, Any],
    aux_params: Mapping[str, Any],
    model: Union[onnx.ModelProto, bytes, str],
    inputs: Mapping[str, np.ndarray],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    dtypes: Optional[Mapping[str, str]] = None,
) -> ParityReport:
    """Compare every output of ONNX Runtime (all optimisations / none) with MXNet at batch 1 and full batch."""
    data = _model_bytes(model)  # serialise once; sessions are cached by content
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    full = min(v.shape[0] for v in inputs.values())
    batches = [1] if full == 1 else [1, full]
    output_names = symbol.list_outputs()
    drawn = random_outputs(symbol)
    details: List[Dict[str, Any]] = []
    for batch in batches:
        feed = {k: v[:batch] for k, v in inputs.items()}
        reference = mxnet_forward(symbol, arg_params, aux_params, feed, dtypes)
        draws = draw_counts(symbol, _shapes(arg_params, feed)) if any(drawn) else drawn
        for optimize in (True, False):
            got = onnx_forward(data, feed, optimize=optimize)
            level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
            if len(got) != len(reference):
                details.append({"output": "*", "batch": batch, "ort_level": level, "max_abs": float("inf"),
                                "max_rel": float("inf"), "passed": False,
                                "reason": f"{len(got)} ONNX outputs, {len(reference)} MXNet outputs"})
                continue
            for name, ref, out, random, n in zip(output_names, reference, got, drawn, draws):
                row = {"output": name, "batch": batch, "ort_level": level}
                row.update(compare_distribution(ref, np.asarray(out), atol, rtol, n) if random
                           else compare(ref, np.asarray(out), atol, rtol))
                details.append(row)
    max_abs, max_rel = _worst(details, "max_abs"), _worst(details, "max_rel")
    passed = bool(details) and all(d["passed"] for d in details)
    return ParityReport(max_abs=max_abs, max_rel=max_rel, atol=atol, passed=passed, details=details, rtol=rtol)


# --------------------------------------------------------------------------------------------
# The suite: held-out samples plus random ones, ORT with all optimisations and none, batch 1
# and N (every chunk of N for a model fixed to batch N)


def feature_range(samples: np.ndarray) -> Dict[str, List[Any]]:
    """Per-feature (per element of one sample) min and max over the samples."""
    samples = np.asarray(samples, dtype=np.float64)
    return {"low": samples.min(axis=0).tolist(), "high": samples.max(axis=0).tolist()}


def default_range(dtype: Any) -> Optional[Dict[str, int]]:
    """The range random samples of an integer (or bool) input take when none is given: small
    non-negative values, so an index input (Embedding, take) stays in bounds; None for floats
    (standard normal)."""
    if np.dtype(dtype) == np.bool_:
        return {"low": 0, "high": 1}
    return {"low": 0, "high": 9} if is_exact(dtype) else None


def _bound(value: Any, shape: Tuple[int, ...]) -> np.ndarray:
    """A range bound: one number for the whole sample, or one per element (any layout)."""
    array = np.asarray(value, dtype=np.float64)
    return array.reshape(shape) if array.size > 1 else np.broadcast_to(array.reshape(()), shape)


def random_inputs(shapes: Mapping[str, Sequence[int]], n: int, *, seed: int = DEFAULT_SEED,
                  ranges: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  dtypes: Optional[Mapping[str, str]] = None) -> Dict[str, np.ndarray]:
    """`n` random samples per input, of its dtype in `dtypes` (float32 by default). A float
    input is uniform over [low, high) of `ranges[name]` (one number or one per element) when
    given, standard normal otherwise; an integer or bool input takes integers uniform in
    [low, high] (default_range without one). Same seed, same samples."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        sample_shape = tuple(int(d) for d in shapes[name])
        dtype = np.dtype((dtypes or {}).get(name, "float32"))
        rnge = (ranges or {}).get(name) or default_range(dtype)
        if rnge is None:
            values = rng.standard_normal((n,) + sample_shape)
        else:
            low, high = _bound(rnge["low"], sample_shape), _bound(rnge["high"], sample_shape)
            if is_exact(dtype):  # [low, high + 1) floored: every integer equally likely
                values = np.minimum(np.floor(low + (high - low + 1) *
                                             rng.random_sample((n,) + sample_shape)), high)
            else:
                values = low + (high - low) * rng.random_sample((n,) + sample_shape)
        out[name] = values.astype(dtype)
    return out


def parity_suite(symbol: Any, arg_params: Mapping, aux_params: Mapping, model: Any, *,
                 atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                 held_out: Optional[Mapping[str, np.ndarray]] = None,
                 sample_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 random_samples: int = DEFAULT_RANDOM_SAMPLES, seed: int = DEFAULT_SEED,
                 ranges: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 dtypes: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """ONNX Runtime (all graph optimisations, and none) against MXNet at batch 1 and the full
    batch, on the held-out samples and on random samples; the figures and the rule applied,
    as the manifest keeps them. Random samples are drawn uniformly over the held-out samples'
    per-feature range (or over `ranges`, or standard normal when neither is known); `dtypes`
    gives the inputs' dtypes (float32 by default), as the ONNX graph declares them."""
    model_bytes = _model_bytes(model)
    held_out = {k: np.ascontiguousarray(v) for k, v in (held_out or {}).items()}
    if ranges is None and held_out:
        ranges = {k: feature_range(v) for k, v in held_out.items()}
    if sample_shapes is None:
        sample_shapes = {k: v.shape[1:] for k, v in held_out.items()}
    sets = [("held_out", held_out)] if held_out else []
    if random_samples > 0:
        sets.append(("random", random_inputs(sample_shapes, random_samples, seed=seed,
                                             ranges=ranges, dtypes=dtypes)))
    if not sets:
        raise ValueError("parity_suite needs held-out samples or random_samples > 0")
    fixed = _fixed_batch(model_bytes)
    checks: Dict[str, Dict[str, Any]] = {}
    details: List[Dict[str, Any]] = []
    for label, inputs in sets:
        if fixed and fixed > 1:
            rows = _fixed_batch_parity(symbol, arg_params, aux_params, model_bytes, inputs,
                                       fixed, atol, rtol, dtypes)
        else:
            rows = verify_parity(symbol, arg_params, aux_params, model_bytes, inputs,
                                 atol=atol, rtol=rtol, dtypes=dtypes).details
        checks[label] = {"samples": min(len(v) for v in inputs.values()),
                         "max_abs": _worst(rows, "max_abs"),
                         "max_rel": _worst(rows, "max_rel"),
                         "passed": bool(rows) and all(r["passed"] for r in rows)}
        details.extend(dict(row, inputs=label) for row in rows)
    if "random" in checks:
        checks["random"].update(
            seed=seed, distribution="uniform over the per-feature [low, high] in random_range"
            if ranges else "standard normal")
    figures = {
        "passed": all(c["passed"] for c in checks.values()),
        "atol": atol,
        "rtol": rtol,
        "rule": TOLERANCE_RULE,
        "max_abs": max(c["max_abs"] for c in checks.values()),
        "max_rel": max(c["max_rel"] for c in checks.values()),
        "ort_levels": ["ORT_ENABLE_ALL", "ORT_DISABLE_ALL"],
        "batches": sorted({d["batch"] for d in details}),
        "inputs": checks,
        "random_range": {k: dict(v) for k, v in ranges.items()} if ranges else None,
        "details": details,
    }
    if any(random_outputs(symbol)):
        figures["random_outputs_rule"] = DISTRIBUTION_RULE
    return figures


def _fixed_batch(model_bytes: bytes) -> Optional[int]:
    """The batch size an ONNX model is fixed to (first dim of its first input), or None."""
    model = onnx.load_from_string(model_bytes)
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


def _fixed_batch_parity(symbol: Any, arg_params: Mapping, aux_params: Mapping,
                        model_bytes: bytes, inputs: Mapping[str, np.ndarray], batch: int,
                        atol: float, rtol: float,
                        dtypes: Optional[Mapping[str, str]] = None) -> List[Dict[str, Any]]:
    """verify_parity's rows for a model that only takes `batch` samples at a time: every
    chunk of `batch` (the last one padded by repeating its last sample), both ORT levels.
    The rule is applied per chunk, each against its own scale."""
    n = min(len(v) for v in inputs.values())
    drawn = dict(zip(symbol.list_outputs(), random_outputs(symbol)))
    per_chunk = dict(zip(symbol.list_outputs(), draw_counts(symbol, _shapes(
        arg_params, {k: v[:1].repeat(batch, axis=0) for k, v in inputs.items()})))) if any(drawn.values()) else {}
    rows = []
    for optimize in (True, False):
        level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
        worst: Dict[str, Dict[str, Any]] = {}
        draws: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = {}
        for start in range(0, n, batch):
            feed = {}
            for k, v in inputs.items():
                chunk = v[start:start + batch]
                pad = batch - len(chunk)
                feed[k] = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) \
                    if pad else chunk
            reference = mxnet_forward(symbol, arg_params, aux_params, feed, dtypes)
            got = onnx_forward(model_bytes, feed, optimize=optimize)
            for name, ref, out in zip(symbol.list_outputs(), reference, got):
                if drawn[name]:  # judged once on every chunk's draws together: more samples
                    draws.setdefault(name, ([], []))[0].append(ref)
                    draws[name][1].append(np.asarray(out))
                    continue
                row = compare(ref, np.asarray(out), atol, rtol)
                agg = worst.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0, "passed": True,
                                                  "scale": 0.0})
                agg["max_abs"] = max(agg["max_abs"], row["max_abs"])
                agg["max_rel"] = max(agg["max_rel"], row["max_rel"])
                agg["passed"] = agg["passed"] and row["passed"]
                agg["scale"] = max(agg["scale"], row["scale"] or 0.0)
                if row.get("exact"):
                    agg["exact"] = True
        for name, (refs, outs) in draws.items():
            worst[name] = compare_distribution(np.concatenate(refs), np.concatenate(outs), atol, rtol,
                                               per_chunk[name] * len(refs))
        rows += [dict({"output": k, "batch": batch, "ort_level": level}, **v)
                 for k, v in worst.items()]
    return rows


def parity_or_fail(symbol: Any, arg_params: Mapping, aux_params: Mapping, model: Any, *,
                   atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                   **kwargs: Any) -> Dict[str, Any]:
    """parity_suite, raising ExportError with the figures when ONNX Runtime disagrees."""
    figures = parity_suite(symbol, arg_params, aux_params, model, atol=atol, rtol=rtol,
                           **kwargs)
    if not figures["passed"]:
        raise ExportError(f"ONNX Runtime disagrees with MXNet: {failure_figures(figures)}")
    return figures


def failure_figures(figures: Mapping[str, Any]) -> str:
    """A failed suite's figures in one line: the worst row against its bound, per input set."""
    failed = [d for d in figures["details"] if not d["passed"]] or figures["details"]
    parts = ", ".join(f"{k}: {c['max_abs']:.3g} on {c['samples']} samples"
                      for k, c in figures["inputs"].items())
    drawn = [d for d in failed if "distribution" in d]
    if drawn:
        return _distribution_failure(drawn[0], parts)
    worst = max(failed, key=lambda d: d["max_rel"])
    scale = worst.get("scale")
    bound = (f" > atol {figures['atol']:g} + rtol {figures['rtol']:g} x scale {scale:.3g}"
             if scale is not None else f" ({worst.get('reason', 'no figures')})")
    return (f"max abs difference {worst['max_abs']:.3g}{bound} (max rel "
            f"{figures['max_rel']:.3g} of the output's scale; {parts}; worst: output "
            f"'{worst['output']}' at batch {worst['batch']}, {worst['ort_level']}, "
            f"{worst['inputs']} inputs)")


def _distribution_failure(row: Mapping[str, Any], parts: str) -> str:
    """A random output's failed check in one line: its statistic against the critical value."""
    what = (f"{row['distribution']} statistic {row['statistic']:.3g} > critical {row['critical']:.3g} "
            f"(alpha {row['alpha']:g}, {row['samples']} values)" if "statistic" in row
            else f"{row['distribution']}: {row['reason']}")
    return (f"random output '{row['output']}' does not have MXNet's distribution: {what} at batch "
            f"{row['batch']}, {row['ort_level']}, {row['inputs']} inputs ({parts})")
