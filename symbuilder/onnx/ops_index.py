"""MXNet -> ONNX translations of sorting and indexing ops (topk, argsort, argmax/argmin, take,
pick, gather_nd, one_hot).

MXNet carries indices as floats (float32 by default) and truncates them to integers, as ONNX's
Cast does; indices MXNet writes out are cast back to the op's ``dtype``.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from symbuilder.onnx.ops_tensor import attr_dtype, dims_of, onnx_dtype, shape_of
from symbuilder.onnx.registry import OpContext, normalize_axis, register


def as_int64(ctx: OpContext, x: str) -> str:
    return ctx.node("Cast", [x], suffix="as_int64", to=TensorProto.INT64)


def _cast_out(ctx: OpContext, x: str, i: int, dtype: str) -> None:
    ctx.node("Cast", [x], ctx.outputs[i:i + 1], to=onnx_dtype(dtype))


def _explicit_none(ctx: OpContext, key: str) -> bool:
    # attr_* read a written "None" as absent; here None (flatten) differs from the default.
    return ctx.attrs.get(key, "").strip() == "None"


def _sort_input(ctx: OpContext, default: int) -> tuple:
    """(tensor, axis) to sort along: axis=None sorts the flattened input, as MXNet does."""
    if _explicit_none(ctx, "axis"):
        return ctx.reshape(ctx.inputs[0], [-1], suffix="flat"), 0
    return ctx.inputs[0], normalize_axis(ctx.attr_int("axis", default), ctx.in_rank(0), ctx)


def _topk(ctx: OpContext, x: str, axis: int, k: int, largest: bool) -> tuple:
    """TopK along ``axis``; ``k`` < 1 means the whole axis, read at run time (it may be the batch)."""
    k_input = ctx.ints([k], "k") if k >= 1 else dims_of(ctx, x, [axis])
    values, idx = ctx.fresh("values"), ctx.fresh("indices")
    ctx.node("TopK", [x, k_input], [values, idx], axis=axis, largest=int(largest), sorted=1)
    return values, idx


@register("topk")
def topk(ctx: OpContext) -> None:
    x, axis = _sort_input(ctx, -1)
    ret = ctx.attr_str("ret_typ", "indices")  # value, indices, both or mask: all MXNet's parser accepts
    values, idx = _topk(ctx, x, axis, ctx.attr_int("k", 1), largest=not ctx.attr_bool("is_ascend", False))
    dtype = ctx.attr_str("dtype", "float32")
    if ret == "mask":
        _topk_mask(ctx, x, axis, idx)
    elif ret == "value":
        ctx.node("Identity", [values], ctx.outputs[:1])
    elif ret == "indices":
        _cast_out(ctx, idx, 0, dtype)
    else:
        ctx.node("Identity", [values], ctx.outputs[:1])
        _cast_out(ctx, idx, 1, dtype)


def _topk_mask(ctx: OpContext, x: str, axis: int, idx: str) -> None:
    """MXNet's mask: the input's shape and dtype, 1 at the top-k positions, 0 elsewhere."""
    dtype = ctx.input_infos[0].dtype
    zeros = ctx.node("ConstantOfShape", [shape_of(ctx, x)], suffix="zeros",
                     value=numpy_helper.from_array(np.zeros(1, dtype=dtype)))
    ones = ctx.node("ConstantOfShape", [shape_of(ctx, idx)], suffix="ones",
                    value=numpy_helper.from_array(np.ones(1, dtype=dtype)))
    mask = ctx.node("ScatterElements", [zeros, idx, ones], suffix="mask", axis=axis)
    # axis=None sorted the flattened input; the mask has the input's own shape.
    ctx.node("Reshape", [mask, shape_of(ctx, ctx.inputs[0])], ctx.outputs[:1])


@register("argsort")
def argsort(ctx: OpContext) -> None:
    x, axis = _sort_input(ctx, -1)
    _, idx = _topk(ctx, x, axis, 0, largest=not ctx.attr_bool("is_ascend", True))
    _cast_out(ctx, idx, 0, ctx.attr_str("dtype", "float32"))


def _arg_reduce(ctx: OpContext, onnx_op: str) -> None:
    keepdims = ctx.attr_bool("keepdims", False)
    x, axis = ctx.inputs[0], ctx.attr_int("axis", None)
    if axis is None:  # over the flattened input: shape (1,)
        x, axis, keepdims = ctx.reshape(x, [-1], suffix="flat"), 0, True
    else:
        axis = normalize_axis(axis, ctx.in_rank(0), ctx)
    idx = ctx.node(onnx_op, [x], axis=axis, keepdims=int(keepdims))
    # MXNet returns the index as a float of the input's dtype.
    _cast_out(ctx, idx, 0, ctx.input_infos[0].dtype)


@register("argmax")
def argmax(ctx: OpContext) -> None:
    _arg_reduce(ctx, "ArgMax")


@register("argmin")
def argmin(ctx: OpContext) -> None:
    _arg_reduce(ctx, "ArgMin")


def _bounded(ctx: OpContext, idx: str, data: str, axis: int, mode: str) -> str:
    """Integer indices into ``data``'s ``axis``, clipped, wrapped or checked as MXNet's ``mode`` says
    (clip, wrap or raise: all MXNet's parser accepts)."""
    idx = as_int64(ctx, idx)
    dim = ctx.squeeze(dims_of(ctx, data, [axis]), [0], suffix="dim")  # at run time: the axis may be the batch
    if mode == "raise":
        # MXNet fails on any index outside [0, dim); ORT's Gather fails outside [-dim, dim) and
        # counts a negative one from the end: send negatives out of range, so ORT fails too.
        negative = ctx.node("Less", [idx, ctx.const(np.int64(0), "zero")])
        return ctx.node("Where", [negative, dim, idx], suffix="checked")
    if mode == "wrap":
        return ctx.node("Mod", [idx, dim], fmod=0)  # integer Mod: Python's sign, as MXNet's wrap
    last = ctx.node("Sub", [dim, ctx.const(np.int64(1), "one")])
    return ctx.node("Clip", [idx, ctx.const(np.int64(0), "zero"), last])


@register("take")
def take(ctx: OpContext) -> None:
    axis = normalize_axis(ctx.attr_int("axis", 0), ctx.in_rank(0), ctx)
    idx = _bounded(ctx, ctx.inputs[1], ctx.inputs[0], axis, ctx.attr_str("mode", "clip"))
    ctx.node("Gather", [ctx.inputs[0], idx], ctx.outputs[:1], axis=axis)


@register("pick")
def pick(ctx: OpContext) -> None:
    # axis=None fails MXNet's own shape inference ("not supported by pick yet"): never reaches here.
    rank = ctx.in_rank(0)
    axis = normalize_axis(ctx.attr_int("axis", -1), rank, ctx)
    keepdims = ctx.attr_bool("keepdims", False)
    idx = _bounded(ctx, ctx.inputs[1], ctx.inputs[0], axis, ctx.attr_str("mode", "clip"))
    if ctx.in_rank(1) == rank - 1:
        idx = ctx.unsqueeze(idx, [axis])
    picked = ctx.node("GatherElements", [ctx.inputs[0], idx], None if not keepdims else ctx.outputs[:1], axis=axis)
    if not keepdims:
        ctx.squeeze(picked, [axis], ctx.outputs[:1])


@register("gather_nd")
def gather_nd(ctx: OpContext) -> None:
    # MXNet indexes with the FIRST axis of `indices` (M, ...); ONNX GatherND with the last.
    r = ctx.in_rank(1)
    idx = ctx.transpose(as_int64(ctx, ctx.inputs[1]), list(range(1, r)) + [0])
    ctx.node("GatherND", [ctx.inputs[0], idx], ctx.outputs[:1])


@register("one_hot")
def one_hot(ctx: OpContext) -> None:
    depth = ctx.attr_int("depth")
    dtype = attr_dtype(ctx)
    values = ctx.const(np.asarray([ctx.attr_float("off_value", 0.0), ctx.attr_float("on_value", 1.0)], dtype), "values")
    idx = as_int64(ctx, ctx.inputs[0])
    # ONNX counts negative indices from the end; MXNet gives them an all-off row, as ONNX does
    # for indices >= depth: move them there.
    depth_c = ctx.const(np.int64(depth), "depth")
    idx = ctx.node("Where", [ctx.node("Less", [idx, ctx.const(np.int64(0), "zero")]), depth_c, idx])
    ctx.node("OneHot", [idx, ctx.reshape(depth_c, [1], suffix="depth1"), values], ctx.outputs[:1], axis=-1)
