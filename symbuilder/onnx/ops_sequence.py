"""MXNet -> ONNX translations of sequence ops (SequenceMask, SequenceReverse, SequenceLast) and
the transformer helper ``_contrib_div_sqrt_dim``.

MXNet's sequence layout is time-major by default (axis=0: (T, N, ...)); ``axis=1`` is (N, T, ...).
Lengths are floats in MXNet; the time axis is read at run time, so T may be the dynamic axis.
"""
from __future__ import annotations

import numpy as np

from symbuilder.onnx.ops_index import as_int64
from symbuilder.onnx.ops_tensor import dims_of
from symbuilder.onnx.registry import OpContext, register


def _time_axis(ctx: OpContext) -> int:
    # MXNet's shape inference refuses any other axis (0 or 1; SequenceReverse 0 only), negative ones too.
    return ctx.attr_int("axis", 0)


def _uses_lengths(ctx: OpContext) -> bool:
    return ctx.attr_bool("use_sequence_length", False) and len(ctx.inputs) > 1


@register("SequenceMask")
def sequence_mask(ctx: OpContext) -> None:
    axis = _time_axis(ctx)
    x = ctx.inputs[0]
    if not _uses_lengths(ctx):
        ctx.node("Identity", [x], ctx.outputs[:1])
        return
    rank = ctx.in_rank(0)
    t = ctx.squeeze(dims_of(ctx, x, [axis]), [0], suffix="steps")
    steps = ctx.node("Range", [ctx.const(np.int64(0), "zero"), t, ctx.const(np.int64(1), "one")])
    # MXNet truncates the float lengths to integers: a length of 2.5 masks step 2 (measured).
    lengths = as_int64(ctx, ctx.inputs[1])
    if axis == 0:  # (T, 1) < (1, N)
        keep = ctx.node("Less", [ctx.unsqueeze(steps, [1]), ctx.unsqueeze(lengths, [0])])
    else:  # (1, T) < (N, 1)
        keep = ctx.node("Less", [ctx.unsqueeze(steps, [0]), ctx.unsqueeze(lengths, [1])])
    if rank > 2:
        keep = ctx.unsqueeze(keep, list(range(2, rank)), suffix="keep")
    value = ctx.scalar_like(ctx.attr_float("value", 0.0), 0, "value")
    ctx.node("Where", [keep, x, value], ctx.outputs[:1])


@register("SequenceReverse")
def sequence_reverse(ctx: OpContext) -> None:
    x = ctx.inputs[0]  # time-major: MXNet's shape inference refuses any axis but 0
    if not _uses_lengths(ctx):
        ctx.node("Slice", [x, ctx.ints([-1], "starts"), ctx.ints([np.iinfo(np.int64).min], "ends"),
                           ctx.ints([0], "axes"), ctx.ints([-1], "steps")], ctx.outputs[:1])
        return
    ctx.node("ReverseSequence", [x, as_int64(ctx, ctx.inputs[1])], ctx.outputs[:1], batch_axis=1, time_axis=0)


@register("SequenceLast")
def sequence_last(ctx: OpContext) -> None:
    axis = _time_axis(ctx)
    x = ctx.inputs[0]
    if not _uses_lengths(ctx):
        ctx.node("Gather", [x, ctx.const(np.int64(-1), "last")], ctx.outputs[:1], axis=axis)
        return
    if axis == 0:  # batch first, so GatherND can take one step per sequence
        rank = ctx.in_rank(0)
        x = ctx.transpose(x, [1, 0] + list(range(2, rank)))
    last = ctx.node("Sub", [as_int64(ctx, ctx.inputs[1]), ctx.const(np.int64(1), "one")])
    ctx.node("GatherND", [x, ctx.unsqueeze(last, [1])], ctx.outputs[:1], batch_dims=1)


@register("_contrib_div_sqrt_dim")
def div_sqrt_dim(ctx: OpContext) -> None:
    # x / sqrt(size of the last axis), the size read statically: it is a feature axis.
    d = ctx.in_shape(0)[-1]
    ctx.node("Div", [ctx.inputs[0], ctx.scalar_like(np.sqrt(d), 0, "sqrt_dim")], ctx.outputs[:1])
