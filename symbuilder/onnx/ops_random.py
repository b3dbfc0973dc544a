"""MXNet -> ONNX translations of the random ops: _random_normal, _random_uniform, their ``_like``
forms, and _sample_multinomial.

Their values are fresh draws on every run, so parity checks them by shape, dtype and
distribution (symbuilder.proof), never value by value.

Measured in MXNet 1.9.1 and ONNX Runtime 1.32 (CPU):
- every dtype MXNet accepts is expressible: ORT has no float16 RandomNormal kernel and no
  float64 Multinomial kernel, so values are drawn in float32 (float64 for a float64 output) and
  cast, and multinomial probabilities are cast to float32;
- _sample_multinomial takes probabilities and does NOT normalise them: it draws u ~ U[0, 1) and
  returns the first j with cumsum(p)[j] > u, or k (one past the last category) when none is.
  ONNX Multinomial takes unnormalised log-probabilities, so the translation feeds it
  log(p'), p'_j = min(cumsum_j, 1) - min(cumsum_{j-1}, 1) and p'_k = 1 - min(cumsum_{k-1}, 1):
  the same law for every p, not only for rows that sum to 1;
- get_prob=True adds log p[sample] (float32). For the out-of-range draw k MXNet reads past the
  row (the next row's first probability; -inf after the last row): the translation gives -inf.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from symbuilder.onnx.ops_tensor import onnx_dtype
from symbuilder.onnx.registry import OpContext, register


def _draw_dtype(dtype: object) -> np.dtype:
    """The dtype ORT draws in for an output of ``dtype``: float64 stays, all else is float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _finish(ctx: OpContext, drawn: str, i: int = 0) -> None:
    """Write ``drawn`` (float32/float64) to output i, cast to the dtype MXNet gives it."""
    ctx.node("Cast", [drawn], ctx.outputs[i:i + 1], to=onnx_dtype(ctx.output_infos[i].dtype))


def _distribution(ctx: OpContext, normal: bool) -> dict:
    if normal:
        return {"mean": ctx.attr_float("loc", 0.0), "scale": ctx.attr_float("scale", 1.0)}
    return {"low": ctx.attr_float("low", 0.0), "high": ctx.attr_float("high", 1.0)}


def _random(ctx: OpContext, normal: bool) -> None:
    dtype = _draw_dtype(ctx.output_infos[0].dtype)
    drawn = ctx.node("RandomNormal" if normal else "RandomUniform", [], suffix="draw",
                     shape=list(ctx.out_shape(0)), dtype=onnx_dtype(dtype),  # an attribute: never the batch
                     **_distribution(ctx, normal))
    _finish(ctx, drawn)


def _random_like(ctx: OpContext, normal: bool) -> None:
    dtype = _draw_dtype(ctx.output_infos[0].dtype)
    drawn = ctx.node("RandomNormalLike" if normal else "RandomUniformLike", ctx.inputs[:1],
                     suffix="draw", dtype=onnx_dtype(dtype), **_distribution(ctx, normal))
    _finish(ctx, drawn)


@register("_random_normal", random=True)
def random_normal(ctx: OpContext) -> None:
    _random(ctx, normal=True)


@register("_random_uniform", random=True)
def random_uniform(ctx: OpContext) -> None:
    _random(ctx, normal=False)


@register("_random_normal_like", random=True)
def random_normal_like(ctx: OpContext) -> None:
    _random_like(ctx, normal=True)


@register("_random_uniform_like", random=True)
def random_uniform_like(ctx: OpContext) -> None:
    _random_like(ctx, normal=False)


def _mxnet_law(ctx: OpContext, p: str) -> str:
    """(N, k+1): the probabilities MXNet's inverse-CDF draw really gives each category of the
    (N, k) rows ``p``, the last column being the out-of-range draw k (see the module doc)."""
    cum = ctx.node("CumSum", [p, ctx.const(np.asarray(1, dtype=np.int64), "axis")], suffix="cumsum")
    cum = ctx.node("Clip", [cum, ctx.const(np.float32(0), "zero"), ctx.const(np.float32(1), "one")],
                   suffix="cdf")
    upper = ctx.node("Pad", [cum, ctx.ints([0, 0, 0, 1], "upper_pads"), ctx.const(np.float32(1), "upper_fill")],
                     suffix="cdf_upper")
    lower = ctx.node("Pad", [cum, ctx.ints([0, 1, 0, 0], "lower_pads")], suffix="cdf_lower")
    return ctx.node("Sub", [upper, lower], suffix="law")


@register("_sample_multinomial", random=True)
def sample_multinomial(ctx: OpContext) -> None:
    k = ctx.in_shape(0)[-1]
    shape = ctx.attr_ints("shape", ())
    p = ctx.node("Cast", ctx.inputs[:1], suffix="p_float", to=TensorProto.FLOAT)  # ORT: float32 only
    p = ctx.reshape(p, [-1, k], suffix="p_rows")
    law = _mxnet_law(ctx, p)
    drawn = ctx.node("Multinomial", [ctx.node("Log", [law], suffix="log_law")], suffix="draw",
                     sample_size=int(np.prod(shape)) if shape else 1, dtype=TensorProto.INT32)
    _finish(ctx, ctx.reshape(drawn, ctx.reshape_target(ctx.output_infos[0]), suffix="sample"))
    if ctx.attr_bool("get_prob", False):
        rows = ctx.node("Pad", [p, ctx.ints([0, 0, 0, 1], "p_pads")], suffix="p_extended")
        picked = ctx.node("GatherElements", [rows, drawn], suffix="p_drawn", axis=1)
        logp = ctx.reshape(ctx.node("Log", [picked], suffix="log_p"), ctx.reshape_target(ctx.output_infos[1]),
                           suffix="log_p_shaped")
        _finish(ctx, logp, 1)
