"""MXNet -> ONNX translations of tensor-construction and layout ops (fill, arange, tile, split,
broadcast, reshape_like, slice_like, pad, crop, reverse, space/depth).

Shapes that depend on the batch are computed in the graph (Shape, Gather, Concat), never frozen,
so a model exported with a dynamic batch stays valid at every batch size.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
from onnx import helper, numpy_helper

from symbuilder.onnx.registry import OpContext, normalize_axis, register

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def onnx_dtype(dtype: object) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def attr_dtype(ctx: OpContext, key: str = "dtype", default: Optional[str] = "float32") -> np.dtype:
    """The numpy dtype an attribute names. MXNet 1.9.1 also accepts bfloat16 (Cast, one_hot, zeros,
    arange), which numpy cannot name: refused, as ONNX cannot reproduce it."""
    text = ctx.attr_str(key, default)
    if text == "bfloat16":
        # Measured: MXNet truncates float32 to bfloat16 (-2.7 -> -2.6875), ONNX Runtime's Cast rounds
        # to nearest (-2.703125); and ORT returns no bfloat16 array to compare with.
        raise ctx.error(f"{key}='bfloat16': MXNet truncates to bfloat16 where ONNX's Cast rounds to the nearest "
                        "value (-2.7 gives -2.6875 and -2.703125)")
    return np.dtype(text)


def shape_of(ctx: OpContext, x: str, start: Optional[int] = None, end: Optional[int] = None) -> str:
    """The int64 runtime shape of ``x`` (dims start..end): dynamic, never a frozen constant."""
    if ctx.opset >= 15 or (start is None and end is None):
        return ctx.node("Shape", [x], suffix="shape", start=start, end=end)
    # Shape's start/end attributes arrived in opset 15.
    full = ctx.node("Shape", [x], suffix="shape")
    stop = _INT64_MAX if end is None else end
    return ctx.node("Slice", [full, ctx.ints([start or 0], "shape_start"), ctx.ints([stop], "shape_end")],
                    suffix="shape_slice")


def dims_of(ctx: OpContext, x: str, axes: Sequence[int]) -> str:
    """The int64 1-D runtime sizes of ``x`` along ``axes``."""
    return ctx.node("Gather", [shape_of(ctx, x), ctx.ints(axes, "dims_idx")], suffix="dims", axis=0)


def emit_constant(ctx: OpContext, value: np.ndarray) -> None:
    """An op whose output is a constant: an Identity of an initializer (a graph output needs a node)."""
    ctx.node("Identity", [ctx.const(value, "value")], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Fill ops


def _fill_like(ctx: OpContext, value: float) -> None:
    dtype = ctx.input_infos[0].dtype
    fill = numpy_helper.from_array(np.asarray([value], dtype=dtype), "value")
    ctx.node("ConstantOfShape", [shape_of(ctx, ctx.inputs[0])], ctx.outputs[:1], value=fill)


@register("ones_like")
def ones_like(ctx: OpContext) -> None:
    _fill_like(ctx, 1.0)


@register("zeros_like")
def zeros_like(ctx: OpContext) -> None:
    _fill_like(ctx, 0.0)


def _fill(ctx: OpContext, value: float) -> None:
    shape = ctx.attr_ints("shape")
    dtype = attr_dtype(ctx)
    if all(d > 0 for d in shape):
        emit_constant(ctx, np.full(shape, value, dtype=dtype))
        return
    # A dim of 0 is MXNet's "infer me" (gluon's RNN begin_state: zeros of (L*D, 0, H)); shape
    # inference resolved it from the consumer. A dim that follows the batch is read at run time.
    info = ctx.output_infos[0]
    if info.shape is None:
        raise ctx.error(f"shape={shape}: MXNet could not infer the dims given as 0")
    follows = [bool(b) and ctx.dynamic_batch for b in (info.batch_dims or (False,) * len(info.shape))]
    if not any(follows):
        emit_constant(ctx, np.full(info.shape, value, dtype=dtype))
        return
    batch = int(next(iter(d for d, f in zip(info.shape, follows) if f)))
    if any(f and d != batch for d, f in zip(info.shape, follows)) or batch != ctx.parts.batch_size:
        raise ctx.error(f"shape={shape}: the inferred {info.shape} has dims that are multiples of the batch; "
                        "export with dynamic_batch=False")
    dims = [ctx.runtime_batch() if f else ctx.ints([d], f"dim{i}") for i, (d, f) in enumerate(zip(info.shape, follows))]
    target = ctx.node("Concat", dims, suffix="shape", axis=0)
    ctx.node("ConstantOfShape", [target], ctx.outputs[:1], value=numpy_helper.from_array(np.asarray([value], dtype)))


@register("_ones")
def ones(ctx: OpContext) -> None:
    _fill(ctx, 1.0)


@register("_zeros")
def zeros(ctx: OpContext) -> None:
    _fill(ctx, 0.0)


@register("_arange")
def arange(ctx: OpContext) -> None:
    start = ctx.attr_float("start", 0.0)
    stop = ctx.attr_float("stop", None)
    step = ctx.attr_float("step", 1.0)
    repeat = ctx.attr_int("repeat", 1)
    length = None
    if ctx.attr_bool("infer_range", False):
        # The length comes from MXNet's shape inference (the consumer's shape); start stays the
        # start even without a stop (measured: arange(start=3, infer_range=True) -> 3, 4, ...).
        length = _inferred_length(ctx)
        n = -(-length // repeat)
    else:
        if stop is None:  # arange(n) counts 0..n
            start, stop = 0.0, start
        n = max(int(math.ceil((stop - start) / step)), 0)
    # Values as MXNet's kernel writes them: start + i * step in double, then cast.
    values = np.repeat(start + np.arange(n, dtype=np.float64) * step, repeat)[:length]
    emit_constant(ctx, values.astype(attr_dtype(ctx)))


def _inferred_length(ctx: OpContext) -> int:
    """infer_range's output length: fixed in the graph, so it must not change with the batch."""
    if ctx.dynamic_batch and any(ctx.output_infos[0].batch_dims):
        raise ctx.error("infer_range=True takes its length from a tensor that changes with the batch "
                        "size; export with dynamic_batch=False or use contrib.arange_like")
    return int(np.prod(ctx.out_shape(0)))


@register("_contrib_arange_like")
def arange_like(ctx: OpContext) -> None:
    start = ctx.attr_float("start", 0.0)
    step = ctx.attr_float("step", 1.0)
    repeat = ctx.attr_int("repeat", 1)
    axis = ctx.attr_int("axis", None)
    x = ctx.inputs[0]
    if axis is None:
        count = ctx.node("Size", [x])
    else:
        axis = normalize_axis(axis, ctx.in_rank(0), ctx)
        count = ctx.squeeze(dims_of(ctx, x, [axis]), [0], suffix="count")
    # Integer positions first (an exact count), then start + (i // repeat) * step in floats.
    i = ctx.node("Range", [ctx.const(np.int64(0), "zero"), count, ctx.const(np.int64(1), "one")])
    if repeat != 1:
        i = ctx.node("Div", [i, ctx.const(np.int64(repeat), "repeat")])
    dtype = ctx.output_infos[0].dtype
    values = ctx.node("Cast", [i], to=onnx_dtype(dtype))
    values = ctx.node("Mul", [values, ctx.const(np.asarray(step, dtype), "step")])
    if axis is None:
        values = ctx.node("Add", [values, ctx.const(np.asarray(start, dtype), "start")])
        ctx.node("Reshape", [values, shape_of(ctx, x)], ctx.outputs[:1])
    else:
        ctx.node("Add", [values, ctx.const(np.asarray(start, dtype), "start")], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Repetition and splitting


@register("tile")
def tile(ctx: OpContext) -> None:
    reps = list(ctx.attr_ints("reps"))
    x, rank = ctx.inputs[0], ctx.in_rank(0)
    if len(reps) > rank:  # MXNet prepends size-1 axes to the data
        x = ctx.unsqueeze(x, list(range(len(reps) - rank)))
    reps = [1] * (rank - len(reps)) + reps  # ...or ones to the reps
    ctx.node("Tile", [x, ctx.ints(reps, "repeats")], ctx.outputs[:1])


@register("repeat")
def repeat(ctx: OpContext) -> None:
    repeats = ctx.attr_int("repeats")
    axis = ctx.attr_int("axis", None)
    x = ctx.inputs[0]
    if axis is None:  # MXNet repeats the flattened input
        x, rank, axis = ctx.reshape(x, [-1], suffix="flat"), 1, 0
    else:
        rank = ctx.in_rank(0)
        axis = normalize_axis(axis, rank, ctx)
    # Each element is repeated in place: a new axis after `axis`, tiled, merged back.
    expanded = ctx.unsqueeze(x, [axis + 1])
    reps = [1] * (rank + 1)
    reps[axis + 1] = repeats
    tiled = ctx.node("Tile", [expanded, ctx.ints(reps, "repeats")])
    ctx.reshape(tiled, ctx.reshape_target(ctx.output_infos[0]), ctx.outputs[:1])


def _split_parts(ctx: OpContext) -> tuple:
    n = ctx.attr_int("num_outputs")
    axis = normalize_axis(ctx.attr_int("axis", 1), ctx.in_rank(0), ctx)
    squeeze = ctx.attr_bool("squeeze_axis", False)
    outputs = ctx.outputs[:n]
    parts = [ctx.fresh(f"part{k}") for k in range(n)] if squeeze else list(outputs)
    return n, axis, squeeze, outputs, parts


def _finish_split(ctx: OpContext, axis: int, squeeze: bool, outputs: List[str], parts: List[str]) -> None:
    if squeeze:
        for part, out in zip(parts, outputs):
            ctx.squeeze(part, [axis], [out])


@register("SliceChannel", opsets=(13, 17))
def slice_channel_13(ctx: OpContext) -> None:
    n, axis, squeeze, outputs, parts = _split_parts(ctx)
    # Opsets 13..17: without a `split` input, Split cuts into len(outputs) equal parts.
    ctx.node("Split", ctx.inputs[:1], parts, axis=axis)
    _finish_split(ctx, axis, squeeze, outputs, parts)


@register("SliceChannel", opsets=(18, 21))
def slice_channel_18(ctx: OpContext) -> None:
    n, axis, squeeze, outputs, parts = _split_parts(ctx)
    # Opset 18 requires num_outputs (or a split input) to be given.
    ctx.node("Split", ctx.inputs[:1], parts, axis=axis, num_outputs=n)
    _finish_split(ctx, axis, squeeze, outputs, parts)


@register("_split_v2")
def split_v2(ctx: OpContext) -> None:
    """mx.sym.split_v2: cut at `indices` (MXNet writes them with a leading 0) or into
    `sections` equal parts, as ONNX Split with explicit sizes (static along that axis)."""
    axis = normalize_axis(ctx.attr_int("axis", 0), ctx.in_rank(0), ctx)
    info = ctx.input_infos[0]
    if info.batch_dims and info.batch_dims[axis]:
        raise ctx.error("split_v2 along the batch axis cannot keep a dynamic batch; export "
                        "with a fixed batch (--fixed-batch)")
    dim = ctx.in_shape(0)[axis]
    sections = ctx.attr_int("sections", 0)
    if sections > 0:
        sizes = [dim // sections] * sections
    else:
        bounds = [b for b in ctx.attr_ints("indices") if b != 0] + [dim]
        sizes = [b - a for a, b in zip([0] + bounds[:-1], bounds)]
    squeeze = ctx.attr_bool("squeeze_axis", False)
    outputs = ctx.outputs[:len(sizes)]
    parts = [ctx.fresh(f"part{k}") for k in range(len(sizes))] if squeeze else list(outputs)
    ctx.node("Split", [ctx.inputs[0], ctx.ints(sizes, "split")], parts, axis=axis)
    _finish_split(ctx, axis, squeeze, outputs, parts)


@register("stack")
def stack(ctx: OpContext) -> None:
    axis = normalize_axis(ctx.attr_int("axis", 0), ctx.in_rank(0) + 1, ctx)
    expanded = [ctx.unsqueeze(x, [axis], suffix=f"in{k}") for k, x in enumerate(ctx.inputs)]
    ctx.node("Concat", expanded, ctx.outputs[:1], axis=axis)


@register("add_n")
def add_n(ctx: OpContext) -> None:
    ctx.node("Sum", ctx.inputs, ctx.outputs[:1])


@register("SwapAxis")
def swap_axis(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    a = normalize_axis(ctx.attr_int("dim1", 0), rank, ctx)
    b = normalize_axis(ctx.attr_int("dim2", 0), rank, ctx)
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    ctx.transpose(ctx.inputs[0], perm, ctx.outputs[:1])


@register("reverse")
def reverse(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    axes = sorted({normalize_axis(a, rank, ctx) for a in ctx.attr_ints("axis")})
    n = len(axes)
    ctx.node("Slice", [ctx.inputs[0], ctx.ints([-1] * n, "starts"), ctx.ints([_INT64_MIN] * n, "ends"),
                       ctx.ints(axes, "axes"), ctx.ints([-1] * n, "steps")], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Shapes as tensors (MXNet returns int64)


@register("shape_array")
def shape_array(ctx: OpContext) -> None:
    ctx.node("Shape", ctx.inputs[:1], ctx.outputs[:1])


@register("size_array")
def size_array(ctx: OpContext) -> None:
    # MXNet's size is shape (1,), ONNX Size a 0-d scalar.
    ctx.reshape(ctx.node("Size", ctx.inputs[:1]), [1], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Broadcasting and shape-following ops


@register("broadcast_to")
def broadcast_to(ctx: OpContext) -> None:
    # MXNet's 0 keeps the input dim; in ONNX Expand a 1 does the same (bidirectional broadcast).
    target = [1 if d == 0 else d for d in ctx.attr_ints("shape")]
    if len(target) != ctx.in_rank(0):
        raise ctx.error(f"shape={tuple(target)} does not match the rank-{ctx.in_rank(0)} input")
    ctx.node("Expand", [ctx.inputs[0], ctx.ints(target, "shape")], ctx.outputs[:1])


@register("broadcast_axis")
def broadcast_axis(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    axes = ctx.attr_ints("axis", ())
    sizes = ctx.attr_ints("size", ())
    if len(axes) != len(sizes):
        raise ctx.error(f"axis={axes} and size={sizes} differ in length")
    target = [1] * rank
    for a, s in zip(axes, sizes):
        target[normalize_axis(a, rank, ctx)] = s
    ctx.node("Expand", [ctx.inputs[0], ctx.ints(target, "shape")], ctx.outputs[:1])


@register("broadcast_like")
def broadcast_like(ctx: OpContext) -> None:
    lhs_axes = ctx.attr_ints("lhs_axes", ())
    rhs_axes = ctx.attr_ints("rhs_axes", ())
    if not lhs_axes and not rhs_axes:
        ctx.node("Expand", [ctx.inputs[0], shape_of(ctx, ctx.inputs[1])], ctx.outputs[:1])
        return
    if len(lhs_axes) != len(rhs_axes):
        raise ctx.error(f"lhs_axes={lhs_axes} and rhs_axes={rhs_axes} differ in length")
    # The lhs's own shape with dims lhs_axes taken from the rhs's dims rhs_axes (read at run time).
    rank = ctx.in_rank(0)
    lhs = [normalize_axis(a, rank, ctx) for a in lhs_axes]
    rhs = [normalize_axis(a, ctx.in_rank(1), ctx) for a in rhs_axes]
    taken = {a: i for i, a in enumerate(lhs)}
    dims = [dims_of(ctx, ctx.inputs[1], [rhs[taken[a]]]) if a in taken else dims_of(ctx, ctx.inputs[0], [a])
            for a in range(rank)]
    target = ctx.node("Concat", dims, suffix="target", axis=0)
    ctx.node("Expand", [ctx.inputs[0], target], ctx.outputs[:1])


def _shape_range(ctx: OpContext, x: str, rank: int, begin: Optional[int], end: Optional[int]) -> tuple:
    b = 0 if begin is None else normalize_axis(begin, rank, ctx)
    e = rank if end is None else (end % rank if end < 0 else end)
    if not b <= e <= rank:
        raise ctx.error(f"begin {begin} / end {end} are not a range of a rank-{rank} shape")
    return b, e


@register("reshape_like")
def reshape_like(ctx: OpContext) -> None:
    lhs, rhs = ctx.inputs[0], ctx.inputs[1]
    lrank, rrank = ctx.in_rank(0), ctx.in_rank(1)
    lb, le = _shape_range(ctx, lhs, lrank, ctx.attr_int("lhs_begin", None), ctx.attr_int("lhs_end", None))
    rb, re_ = _shape_range(ctx, rhs, rrank, ctx.attr_int("rhs_begin", None), ctx.attr_int("rhs_end", None))
    # lhs dims [lb, le) are replaced by rhs dims [rb, re), all read at run time.
    pieces = []
    if lb > 0:
        pieces.append(shape_of(ctx, lhs, 0, lb))
    pieces.append(shape_of(ctx, rhs, rb, re_))
    if le < lrank:
        pieces.append(shape_of(ctx, lhs, le, lrank))
    target = pieces[0] if len(pieces) == 1 else ctx.node("Concat", pieces, suffix="target", axis=0)
    ctx.node("Reshape", [lhs, target], ctx.outputs[:1])


@register("slice_like")
def slice_like(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    axes = ctx.attr_ints("axes", ())
    axes = [normalize_axis(a, rank, ctx) for a in axes] if axes else list(range(rank))
    if ctx.in_rank(1) < max(axes) + 1:
        raise ctx.error(f"shape_like has rank {ctx.in_rank(1)}, fewer dims than the sliced axes {axes}")
    ends = dims_of(ctx, ctx.inputs[1], axes)
    ctx.node("Slice", [ctx.inputs[0], ctx.ints([0] * len(axes), "starts"), ends, ctx.ints(axes, "axes")],
             ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Padding, cropping, space <-> depth


@register("Pad")
def pad(ctx: OpContext) -> None:
    mode = ctx.attr_str("mode", "constant")  # constant, edge, reflect: all MXNet's parser accepts; ONNX's names
    width = ctx.attr_ints("pad_width")
    rank = ctx.in_rank(0)
    if len(width) != 2 * rank:
        raise ctx.error(f"pad_width={width} needs 2 values per axis of the rank-{rank} input")
    # MXNet: (before0, after0, before1, after1, ...); ONNX: all befores, then all afters.
    pads = list(width[0::2]) + list(width[1::2])
    inputs = [ctx.inputs[0], ctx.ints(pads, "pads")]
    if mode == "constant":
        inputs.append(ctx.scalar_like(ctx.attr_float("constant_value", 0.0), 0, "constant_value"))
    ctx.node("Pad", inputs, ctx.outputs[:1], mode=mode)


@register("Crop")
def crop(ctx: OpContext) -> None:
    n, c, h, w = ctx.in_shape(0)
    out_h, out_w = ctx.out_shape(0)[2:]
    if ctx.attr_bool("center_crop", False):
        top, left = (h - out_h) // 2, (w - out_w) // 2
    else:
        top, left = (list(ctx.attr_ints("offset", (0, 0))) + [0, 0])[:2]
    ctx.node("Slice", [ctx.inputs[0], ctx.ints([top, left], "starts"), ctx.ints([top + out_h, left + out_w], "ends"),
                       ctx.ints([2, 3], "axes")], ctx.outputs[:1])


@register("space_to_depth")
def space_to_depth(ctx: OpContext) -> None:
    ctx.node("SpaceToDepth", ctx.inputs[:1], ctx.outputs[:1], blocksize=ctx.attr_int("block_size"))


@register("depth_to_space")
def depth_to_space(ctx: OpContext) -> None:
    # MXNet's layout (block, block, C) along the depth is ONNX's DCR mode.
    ctx.node("DepthToSpace", ctx.inputs[:1], ctx.outputs[:1], blocksize=ctx.attr_int("block_size"), mode="DCR")
