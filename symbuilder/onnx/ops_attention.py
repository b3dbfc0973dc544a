"""MXNet -> ONNX translations of the interleaved multi-head attention ops (GluonNLP's BERT and
transformer graphs): ``_contrib_interleaved_matmul_{selfatt,encdec}_{qk,valatt}``.

Layouts (MXNet's docs, checked against numpy): projections are time-major (T, N, heads * ...);
self-attention interleaves q, k, v per head as (T, N, heads, 3, d), encoder-decoder interleaves
k, v as (T, N, heads, 2, d); the attention scores are (N * heads, Tq, Tk).
"""
from __future__ import annotations

import math

from symbuilder.onnx.registry import OpContext, register


def _heads(ctx: OpContext, i: int, slots: int) -> tuple:
    """(heads, head_dim) of input i, whose last axis is heads * slots * head_dim."""
    heads = ctx.attr_int("heads")
    width = ctx.in_shape(i)[2]
    if width % (heads * slots):
        raise ctx.error(f"the projection width {width} is not heads={heads} x {slots} x head_dim")
    return heads, width // (heads * slots)


def _per_head(ctx: OpContext, i: int, slots: int, slot: int, name: str) -> str:
    """Input i's projection ``slot`` as (N, heads, T, d)."""
    heads, dim = _heads(ctx, i, slots)
    x = ctx.inputs[i]
    if slots > 1:
        split = ctx.reshape(x, [0, 0, heads, slots, dim], suffix=f"{name}_split")
        x = ctx.node("Gather", [split, ctx.ints([slot], f"{name}_slot")], suffix=f"{name}_slot", axis=3)
    x = ctx.reshape(x, [0, 0, heads, dim], suffix=f"{name}_heads")  # (T, N, heads, d)
    return ctx.transpose(x, [1, 2, 0, 3], suffix=f"{name}_nhtd")


def _scores(ctx: OpContext, q: str, k: str, dim: int) -> None:
    """(N * heads, Tq, Tk) = q k^T / sqrt(d): the scale after the product, as MXNet's gemm alpha."""
    scores = ctx.node("MatMul", [q, ctx.transpose(k, [0, 1, 3, 2], suffix="k_t")], suffix="qk")
    scaled = ctx.node("Mul", [scores, ctx.scalar_like(1.0 / math.sqrt(dim), 0, "inv_sqrt_dim")], suffix="scaled")
    tq, tk = ctx.out_shape(0)[1:]
    ctx.reshape(scaled, [-1, tq, tk], ctx.outputs[:1])


def _weighted_values(ctx: OpContext, v: str) -> None:
    """attention (N * heads, Tq, Tk) x v (N, heads, Tk, d) -> (Tq, N, heads * d)."""
    heads = ctx.attr_int("heads")
    _, tq, tk = ctx.in_shape(1)
    att = ctx.reshape(ctx.inputs[1], [-1, heads, tq, tk], suffix="att_heads")
    out = ctx.transpose(ctx.node("MatMul", [att, v], suffix="att_v"), [2, 0, 1, 3], suffix="tnhd")
    ctx.reshape(out, [0, 0, -1], ctx.outputs[:1])


@register("_contrib_interleaved_matmul_selfatt_qk")
def selfatt_qk(ctx: OpContext) -> None:
    _, dim = _heads(ctx, 0, 3)
    _scores(ctx, _per_head(ctx, 0, 3, 0, "q"), _per_head(ctx, 0, 3, 1, "k"), dim)


@register("_contrib_interleaved_matmul_selfatt_valatt")
def selfatt_valatt(ctx: OpContext) -> None:
    _weighted_values(ctx, _per_head(ctx, 0, 3, 2, "v"))


@register("_contrib_interleaved_matmul_encdec_qk")
def encdec_qk(ctx: OpContext) -> None:
    _, dim = _heads(ctx, 0, 1)
    _scores(ctx, _per_head(ctx, 0, 1, 0, "q"), _per_head(ctx, 1, 2, 0, "k"), dim)


@register("_contrib_interleaved_matmul_encdec_valatt")
def encdec_valatt(ctx: OpContext) -> None:
    _weighted_values(ctx, _per_head(ctx, 0, 2, 1, "v"))
