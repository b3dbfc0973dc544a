"""MXNet -> ONNX translations of the remaining layer ops real graphs need: adaptive pooling,
resizing, normalizations, matrix products and a few elementwise activations.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from symbuilder.onnx.ops_tensor import shape_of
from symbuilder.onnx.registry import OpContext, normalize_axis, register


# ---------------------------------------------------------------------------------------------
# Adaptive pooling and resizing


def _bin_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging weights of MXNet's adaptive bins [floor(i*n/m), ceil((i+1)*n/m))."""
    m = np.zeros((size_out, size_in), dtype=np.float32)
    for i in range(size_out):
        lo = (i * size_in) // size_out
        hi = -((-(i + 1) * size_in) // size_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@register("_contrib_AdaptiveAvgPooling2D")
def adaptive_avg_pooling_2d(ctx: OpContext) -> None:
    h, w = ctx.in_shape(0)[2:]
    oh, ow = ctx.out_shape(0)[2:]
    # Each output cell averages a rectangle of rows x columns, so the pooling is separable:
    # rows (A_h @ x) then columns (x @ A_w^T), with static bin matrices.
    cols = ctx.node("MatMul", [ctx.inputs[0], ctx.const(_bin_matrix(w, ow).T, "cols")])
    ctx.node("MatMul", [ctx.const(_bin_matrix(h, oh), "rows"), cols], ctx.outputs[:1])


def _resize(ctx: OpContext, out_hw: Tuple[int, int], mode: str, transform: str, i: int = 0,
            outputs: Optional[Sequence[str]] = None, **extra) -> str:
    """Resize input i to static (H, W) with the runtime batch and channels (sizes, not float
    scales), into ``outputs`` (default: the op's output)."""
    x = ctx.inputs[i]
    sizes = ctx.node("Concat", [shape_of(ctx, x, 0, 2), ctx.ints(out_hw, "hw")], suffix="sizes", axis=0)
    return ctx.node("Resize", [x, "", "", sizes], ctx.outputs[:1] if outputs is None else outputs, mode=mode,
                    coordinate_transformation_mode=transform, **extra)


@register("_contrib_BilinearResize2D")
def bilinear_resize_2d(ctx: OpContext) -> None:
    # Every mode (size, scales, like, odd_scale...) only decides the output size, which MXNet's
    # shape inference has resolved. MXNet's align_corners=True maps corner to corner; False is PyTorch's half-pixel rule.
    align = ctx.attr_bool("align_corners", True)
    _resize(ctx, ctx.out_shape(0)[2:], "linear", "align_corners" if align else "pytorch_half_pixel")


@register("UpSampling")
def upsampling(ctx: OpContext) -> None:
    sample_type = ctx.attr_str("sample_type")
    if sample_type == "bilinear":
        _bilinear_upsampling(ctx)
        return
    # nearest: the only other sample_type MXNet's parser accepts.
    # Integer scale, nearest: output pixel (i, j) is input (i // s, j // s). With several inputs
    # each is scaled to the first one's output size, then they are concatenated along the
    # channels or summed (multi_input_mode; measured against numpy, scales 1, 2 and 3).
    num_args = ctx.attr_int("num_args", 1)
    out_hw = ctx.out_shape(0)[2:]
    if num_args == 1:
        _resize(ctx, out_hw, "nearest", "asymmetric", nearest_mode="floor")
        return
    scaled = [_resize(ctx, out_hw, "nearest", "asymmetric", i=i, outputs=[ctx.fresh(f"up{i}")], nearest_mode="floor")
              for i in range(num_args)]
    if ctx.attr_str("multi_input_mode", "concat") == "sum":
        ctx.node("Sum", scaled, ctx.outputs[:1])
    else:
        ctx.node("Concat", scaled, ctx.outputs[:1], axis=1)


def _bilinear_upsampling(ctx: OpContext) -> None:
    # MXNet's bilinear UpSampling is a grouped deconvolution with its weight input (measured equal
    # to Deconvolution to 5e-7): kernel 2s - s % 2, stride s, pad ceil((s - 1) / 2), one group per channel.
    scale = ctx.attr_int("scale")
    kernel = 2 * scale - scale % 2
    pad = math.ceil((scale - 1) / 2)
    ctx.node("ConvTranspose", ctx.inputs[:2], ctx.outputs[:1], kernel_shape=[kernel, kernel], strides=[scale, scale],
             pads=[pad] * 4, group=ctx.attr_int("num_filter"))


# ---------------------------------------------------------------------------------------------
# Normalizations


@register("L2Normalization")
def l2_normalization(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    mode = ctx.attr_str("mode", "instance")
    # Every mode MXNet's parser accepts (it rejects any other at symbol creation and load).
    axes = {"instance": range(1, rank), "channel": [1], "spatial": range(2, rank)}[mode]
    x = ctx.inputs[0]
    sq = ctx.reduce("ReduceSum", ctx.node("Mul", [x, x]), list(axes), keepdims=True)
    norm = ctx.node("Sqrt", [ctx.node("Add", [sq, ctx.scalar_like(ctx.attr_float("eps", 1e-10), 0, "eps")])])
    ctx.node("Div", [x, norm], ctx.outputs[:1])


@register("LRN")
def lrn(ctx: OpContext) -> None:
    ctx.node("LRN", ctx.inputs[:1], ctx.outputs[:1], alpha=ctx.attr_float("alpha", 1e-4),
             beta=ctx.attr_float("beta", 0.75), bias=ctx.attr_float("knorm", 2.0), size=ctx.attr_int("nsize"))


@register("norm")
def norm(ctx: OpContext) -> None:
    ord_ = ctx.attr_int("ord", 2)
    if ord_ not in (1, 2):
        # Shape inference passes; the kernel fails ("norm only supports ord=1 and ord=2", measured).
        raise ctx.error(f"ord={ord_}: MXNet 1.9.1's norm kernel fails on it (it runs ord 1 and 2), so there is "
                        "no MXNet result to reproduce")
    out_dtype = ctx.attr_str("out_dtype", None)
    if out_dtype is not None and np.dtype(out_dtype) != np.dtype(ctx.input_infos[0].dtype):
        # MXNet 1.9.1's CPU kernel fails on every out_dtype but the input's own (measured: float16,
        # float64 and int32 out of float32, float32 out of float16 and float64): a Cast after the
        # norm would export a model MXNet has no result for.
        raise ctx.error(f"out_dtype='{out_dtype}' differs from the input's {np.dtype(ctx.input_infos[0].dtype)}: "
                        "MXNet 1.9.1's norm kernel fails on it, so there is no MXNet result to reproduce")
    rank = ctx.in_rank(0)
    axes = sorted({normalize_axis(a, rank, ctx) for a in ctx.attr_ints("axis", ())}) or list(range(rank))
    keepdims = ctx.attr_bool("keepdims", False)
    op = "ReduceL2" if ord_ == 2 else "ReduceL1"
    if len(axes) == rank and not keepdims:  # MXNet's full reduction is shape (1,)
        ctx.reshape(ctx.reduce(op, ctx.inputs[0], axes, keepdims=False), [1], ctx.outputs[:1])
    else:
        ctx.reduce(op, ctx.inputs[0], axes, keepdims=keepdims, outputs=ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Elementwise


@register("hard_sigmoid")
def hard_sigmoid(ctx: OpContext) -> None:
    ctx.node("HardSigmoid", ctx.inputs[:1], ctx.outputs[:1], alpha=ctx.attr_float("alpha", 0.2),
             beta=ctx.attr_float("beta", 0.5))


@register("log2")
def log2(ctx: OpContext) -> None:
    ln = ctx.node("Log", ctx.inputs[:1])
    ctx.node("Mul", [ln, ctx.scalar_like(1.0 / math.log(2.0), 0, "inv_ln2")], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Matrix products


def _last_two_swapped(ctx: OpContext, x: str, rank: int) -> str:
    return ctx.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2])


@register("dot")
def dot(ctx: OpContext) -> None:
    # forward_stype only picks the output's storage (csr, row_sparse): on dense inputs MXNet falls
    # back to the dense kernel and the values are the dense product (measured), which ONNX has.
    ta, tb = ctx.attr_bool("transpose_a", False), ctx.attr_bool("transpose_b", False)
    a, b = ctx.inputs[:2]
    ra, rb = ctx.in_rank(0), ctx.in_rank(1)
    if ra == 2 and rb == 2:
        a = ctx.transpose(a, [1, 0]) if ta else a
        b = ctx.transpose(b, [1, 0]) if tb else b
        ctx.node("MatMul", [a, b], ctx.outputs[:1])
        return
    # N-D: MXNet views each input as a matrix and contracts a's last axis (its FIRST with
    # transpose_a) with b's first axis (its LAST with transpose_b): a tensordot (measured), not a
    # batched matmul. [0, -1] keeps a leading axis that may be the batch dynamic.
    a2 = ctx.transpose(ctx.reshape(a, [0, -1], suffix="a2d"), [1, 0]) if ta else \
        ctx.reshape(a, [-1, ctx.in_shape(0)[-1]], suffix="a2d")
    b2 = ctx.transpose(ctx.reshape(b, [-1, ctx.in_shape(1)[-1]], suffix="b2d"), [1, 0]) if tb else \
        ctx.reshape(b, [0, -1], suffix="b2d")
    ctx.reshape(ctx.node("MatMul", [a2, b2]), ctx.reshape_target(ctx.output_infos[0]), ctx.outputs[:1])


@register("batch_dot")
def batch_dot(ctx: OpContext) -> None:
    a, b = ctx.inputs[:2]
    ra, rb = ctx.in_rank(0), ctx.in_rank(1)
    a = _last_two_swapped(ctx, a, ra) if ctx.attr_bool("transpose_a", False) else a
    b = _last_two_swapped(ctx, b, rb) if ctx.attr_bool("transpose_b", False) else b
    ctx.node("MatMul", [a, b], ctx.outputs[:1])


def _swapped(rank: int, i: int, j: int) -> list:
    perm = list(range(rank))
    perm[i], perm[j] = j, i
    return perm


@register("_linalg_gemm2")
def linalg_gemm2(ctx: OpContext) -> None:
    a, b = ctx.inputs[:2]
    ra = ctx.in_rank(0)
    # axis holds the matrix rows (columns stay last): MXNet swaps it with axis -2, multiplies,
    # and swaps back (measured against numpy, axis 0, 1 and -3).
    rows = normalize_axis(ctx.attr_int("axis", -2), ra, ctx)
    if rows != ra - 2:
        if ctx.in_rank(1) != ra:
            raise ctx.error(f"axis={ctx.attr_int('axis')} needs inputs of one rank (ranks {ra}, {ctx.in_rank(1)})")
        a, b = (ctx.transpose(x, _swapped(ra, rows, ra - 2), suffix="rows_last") for x in (a, b))
    a = _last_two_swapped(ctx, a, ra) if ctx.attr_bool("transpose_a", False) else a
    b = _last_two_swapped(ctx, b, ctx.in_rank(1)) if ctx.attr_bool("transpose_b", False) else b
    alpha = ctx.attr_float("alpha", 1.0)
    out = ctx.outputs[:1] if rows == ra - 2 else None
    product = ctx.node("MatMul", [a, b], None if alpha != 1.0 else out)
    if alpha != 1.0:
        product = ctx.node("Mul", [product, ctx.scalar_like(alpha, 0, "alpha")], out)
    if rows != ra - 2:
        ctx.transpose(product, _swapped(ra, rows, ra - 2), ctx.outputs[:1])
