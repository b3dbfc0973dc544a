"""MXNet -> ONNX translations of the detection ops GluonCV's SSD / Faster R-CNN graphs use:
``_contrib_box_decode``, ``_contrib_MultiBoxPrior``, ``_contrib_ROIAlign``, ``ROIPooling`` and
``_contrib_box_nms``.
"""
from __future__ import annotations

from typing import Tuple

import mxnet as mx
import numpy as np
from onnx import TensorProto, numpy_helper

from symbuilder.onnx.ops_tensor import onnx_dtype, shape_of
from symbuilder.onnx.registry import OpContext, register


def _cols(ctx: OpContext, x: str, start: int, end: int, suffix: str) -> str:
    """x[..., start:end]."""
    return ctx.node("Slice", [x, ctx.ints([start], f"{suffix}_start"), ctx.ints([end], f"{suffix}_end"),
                              ctx.ints([-1], f"{suffix}_axis")], suffix=suffix)


def _half(ctx: OpContext, x: str, suffix: str) -> str:
    return ctx.node("Mul", [x, ctx.scalar_like(0.5, 0, "half")], suffix=suffix)


# ---------------------------------------------------------------------------------------------
# Anchors and box coding


@register("_contrib_box_decode")
def box_decode(ctx: OpContext) -> None:
    fmt = ctx.attr_str("format", "center")  # center or corner: all MXNet's parser accepts
    std = np.asarray([ctx.attr_float(f"std{i}", 1.0) for i in range(4)], dtype=ctx.input_infos[0].dtype)
    clip = ctx.attr_float("clip", -1.0)
    data, anchors = ctx.inputs[:2]
    scaled = ctx.node("Mul", [data, ctx.const(std, "std")], suffix="scaled")
    d_xy, d_wh = _cols(ctx, scaled, 0, 2, "d_xy"), _cols(ctx, scaled, 2, 4, "d_wh")
    if fmt == "corner":
        a_min, a_max = _cols(ctx, anchors, 0, 2, "a_min"), _cols(ctx, anchors, 2, 4, "a_max")
        a_wh = ctx.node("Sub", [a_max, a_min], suffix="a_wh")
        a_xy = ctx.node("Add", [a_min, _half(ctx, a_wh, "a_half_wh")], suffix="a_xy")
    else:
        a_xy, a_wh = _cols(ctx, anchors, 0, 2, "a_xy"), _cols(ctx, anchors, 2, 4, "a_wh")
    if clip > 0:  # MXNet clips the log-size offsets before exp
        d_wh = ctx.node("Min", [d_wh, ctx.scalar_like(clip, 0, "clip")], suffix="d_wh_clipped")
    center = ctx.node("Add", [ctx.node("Mul", [d_xy, a_wh], suffix="shift"), a_xy], suffix="center")
    half = _half(ctx, ctx.node("Mul", [ctx.node("Exp", [d_wh]), a_wh], suffix="wh"), "half_wh")
    lo = ctx.node("Sub", [center, half], suffix="lo")
    hi = ctx.node("Add", [center, half], suffix="hi")
    ctx.node("Concat", [lo, hi], ctx.outputs[:1], axis=-1)


@register("_contrib_MultiBoxPrior")
def multibox_prior(ctx: OpContext) -> None:
    # The priors depend only on the feature map's (static) height and width, not on its values:
    # MXNet itself computes them once at export, and the graph carries the constant.
    shape = ctx.in_shape(0)
    attrs = {k: v for k, v in ctx.attrs.items() if k in ("sizes", "ratios", "clip", "steps", "offsets")}
    probe = mx.nd.zeros((1,) + tuple(shape[1:]), dtype=ctx.input_infos[0].dtype)
    value = mx.nd.contrib.MultiBoxPrior(probe, **attrs).asnumpy()
    ctx.node("Identity", [ctx.const(value, "priors")], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# ROI feature extraction. MXNet's rois are (R, 5): [batch_index, x1, y1, x2, y2]; a negative
# batch index means "no ROI" and gives zeros (ONNX would read out of range).


def _roi_batch(ctx: OpContext) -> Tuple[str, str]:
    """(int64 batch indices clamped to >= 0, a (R, 1, 1, 1) 0/1 mask of the valid ones)."""
    idx = ctx.node("Cast", [ctx.squeeze(_cols(ctx, ctx.inputs[1], 0, 1, "roi_batch"), [1], suffix="roi_batch_1d")],
                   suffix="roi_batch_int", to=TensorProto.INT64)
    zero = ctx.const(np.int64(0), "zero")
    valid = ctx.node("Cast", [ctx.node("GreaterOrEqual", [idx, zero], suffix="roi_valid")], suffix="roi_valid_f",
                     to=_onnx_float(ctx))
    mask = ctx.reshape(valid, [-1, 1, 1, 1], suffix="roi_mask")
    return ctx.node("Max", [idx, zero], suffix="roi_batch_clamped"), mask


def _onnx_float(ctx: OpContext) -> int:
    return onnx_dtype(ctx.input_infos[0].dtype)


def _roi_align(ctx: OpContext, **mode) -> None:
    ph, pw = ctx.attr_ints("pooled_size")
    idx, mask = _roi_batch(ctx)
    boxes = _cols(ctx, ctx.inputs[1], 1, 5, "roi_boxes")
    pooled = ctx.node("RoiAlign", [ctx.inputs[0], boxes, idx], suffix="pooled", mode="avg", output_height=ph,
                      output_width=pw, sampling_ratio=max(ctx.attr_int("sample_ratio", -1), 0),
                      spatial_scale=ctx.attr_float("spatial_scale"), **mode)
    if ctx.attr_bool("position_sensitive", False):
        pooled = _position_sensitive(ctx, pooled, ph, pw)
    ctx.node("Mul", [pooled, mask], ctx.outputs[:1])


def _position_sensitive(ctx: OpContext, pooled: str, ph: int, pw: int) -> str:
    """PSRoIAlign from RoiAlign over every channel: output (c, i, j) is pooled channel
    (c * ph + i) * pw + j at bin (i, j) (measured against MXNet's position_sensitive=True),
    picked by a constant Gather, so each value is copied, not recomputed."""
    out_channels = ctx.out_shape(0)[1]
    bins = ph * pw
    flat = ctx.reshape(pooled, [0, -1], suffix="ps_flat")  # (R, C * bins), C = out_channels * bins
    picks = [(c * bins + k) * bins + k for c in range(out_channels) for k in range(bins)]
    chosen = ctx.node("Gather", [flat, ctx.ints(picks, "ps_picks")], suffix="ps_chosen", axis=1)
    return ctx.reshape(chosen, [0, out_channels, ph, pw], suffix="ps_pooled")


@register("_contrib_ROIAlign", opsets=(13, 15))
def roi_align_13(ctx: OpContext) -> None:
    if ctx.attr_bool("aligned", False):
        raise ctx.error("aligned=True needs ONNX RoiAlign's half_pixel mode: export at opset 16 or later")
    _roi_align(ctx)  # RoiAlign-10 has only the legacy (not aligned) coordinates


@register("_contrib_ROIAlign", opsets=(16, 21))
def roi_align_16(ctx: OpContext) -> None:
    # Opset 16's default is half_pixel (aligned); MXNet's default aligned=False is output_half_pixel.
    aligned = ctx.attr_bool("aligned", False)
    _roi_align(ctx, coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel")


@register("ROIPooling")
def roi_pooling(ctx: OpContext) -> None:
    idx, mask = _roi_batch(ctx)
    rois = ctx.node("Concat", [ctx.node("Cast", [ctx.unsqueeze(idx, [1], suffix="roi_batch_col")],
                                        suffix="roi_batch_float", to=_onnx_float(ctx)),
                               _cols(ctx, ctx.inputs[1], 1, 5, "roi_boxes")], suffix="rois", axis=1)
    pooled = ctx.node("MaxRoiPool", [ctx.inputs[0], rois], suffix="pooled",
                      pooled_shape=list(ctx.attr_ints("pooled_size")), spatial_scale=ctx.attr_float("spatial_scale"))
    ctx.node("Mul", [pooled, mask], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression in MXNet's layout: the input's shape, the kept rows sorted by score
# (descending), every other row -1.


def _column(ctx: OpContext, data: str, col: int, suffix: str) -> str:
    """data[:, :, col] as (B, N)."""
    return ctx.node("Gather", [data, ctx.const(np.int64(col), f"{suffix}_col")], suffix=suffix, axis=2)


def _nms_candidates(ctx: OpContext, data: str, score: str) -> str:
    """Bool (B, N): the boxes NMS looks at (score above valid_thresh, not background, in the topk)."""
    valid = ctx.node("Greater", [score, ctx.scalar_like(ctx.attr_float("valid_thresh", 0.0), 0, "valid_thresh")],
                     suffix="valid")
    id_index, background = ctx.attr_int("id_index", -1), ctx.attr_int("background_id", -1)
    if id_index >= 0 and background >= 0:
        not_bg = ctx.node("Not", [ctx.node("Equal", [_column(ctx, data, id_index, "ids"),
                                                     ctx.scalar_like(float(background), 0, "background")])])
        valid = ctx.node("And", [valid, not_bg], suffix="valid_fg")
    topk, n = ctx.attr_int("topk", -1), ctx.in_shape(0)[-2]
    if 0 < topk < n:
        lowest = ctx.scalar_like(np.finfo(np.dtype(ctx.input_infos[0].dtype)).min, 0, "lowest")
        ranked = ctx.node("Where", [valid, score, lowest], suffix="ranked")
        best = _descending_order(ctx, ranked, topk, "topk")
        valid = ctx.node("And", [valid, _mark(ctx, score, best, "in_topk")], suffix="valid_topk")
    return valid


def _mark(ctx: OpContext, like: str, indices: str, suffix: str) -> str:
    """Bool (B, N), True at ``indices`` (B, k) along axis 1."""
    zeros = ctx.node("ConstantOfShape", [ctx.node("Shape", [like], suffix=f"{suffix}_shape")], suffix=f"{suffix}_zeros",
                     value=_tensor(np.zeros(1, np.float32)))
    ones = ctx.node("ConstantOfShape", [ctx.node("Shape", [indices], suffix=f"{suffix}_k_shape")],
                    suffix=f"{suffix}_ones", value=_tensor(np.ones(1, np.float32)))
    marked = ctx.node("ScatterElements", [zeros, indices, ones], suffix=suffix, axis=1)
    return ctx.node("Greater", [marked, ctx.const(np.float32(0.5), f"{suffix}_half")], suffix=f"{suffix}_bool")


def _tensor(value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value)


def _class_planes(ctx: OpContext, data: str) -> str:
    """Bool (B, C, N): box n has the c-th class id of the run, for NonMaxSuppression's class axis
    (it suppresses within a class only, as MXNet does without force_suppress). C = max id - min id + 1
    is read at run time. Ids are compared as integers (truncated): MXNet's detectors write integer
    class ids (argmax); a fractional id would be grouped with its integer part."""
    ids = ctx.node("Cast", [_column(ctx, data, ctx.attr_int("id_index"), "ids")], suffix="ids_int",
                   to=TensorProto.INT64)
    lo = ctx.reduce("ReduceMin", ids, None, keepdims=False, suffix="id_min")
    count = ctx.node("Add", [ctx.node("Sub", [ctx.reduce("ReduceMax", ids, None, keepdims=False, suffix="id_max"), lo]),
                             ctx.const(np.int64(1), "one")], suffix="num_classes")
    classes = ctx.node("Range", [ctx.const(np.int64(0), "zero"), count, ctx.const(np.int64(1), "step")],
                       suffix="classes")
    relative = ctx.unsqueeze(ctx.node("Sub", [ids, lo], suffix="ids_rel"), [1], suffix="ids_b1n")
    return ctx.node("Equal", [relative, ctx.reshape(classes, [1, -1, 1], suffix="classes_1c1")], suffix="planes")


def _check_nms(ctx: OpContext) -> None:
    # MXNet treats every axis before the last two as batch (measured: ranks 2 and 4 run); the
    # translation flattens them to one, but the boxes axis sizes TopK and NonMaxSuppression statically.
    batch_dims = ctx.input_infos[0].batch_dims
    if ctx.dynamic_batch and len(batch_dims) >= 2 and batch_dims[-2]:
        raise ctx.error(f"the boxes axis of the {ctx.in_shape(0)} input changes with the batch size (rank "
                        f"{ctx.in_rank(0)}: boxes are the second-to-last axis); export with dynamic_batch=False")
    # in_format/out_format: corner or center, all MXNet's parser accepts.


@register("_contrib_box_nms")
def box_nms(ctx: OpContext) -> None:
    _check_nms(ctx)
    data, rank = ctx.inputs[0], ctx.in_rank(0)
    if rank != 3:  # (..., boxes, width) -> (batch, boxes, width), and back at the end
        data = ctx.reshape(data, [-1] + list(ctx.in_shape(0)[-2:]), suffix="as_3d")
    score = _column(ctx, data, ctx.attr_int("score_index", 1), "score")
    neg_inf = ctx.scalar_like(-np.inf, 0, "neg_inf")
    nms_scores = ctx.unsqueeze(ctx.node("Where", [_nms_candidates(ctx, data, score), score, neg_inf],
                                        suffix="nms_scores"), [1], suffix="nms_scores_c")
    if ctx.attr_int("id_index", -1) >= 0 and not ctx.attr_bool("force_suppress", False):
        nms_scores = ctx.node("Where", [_class_planes(ctx, data), nms_scores, neg_inf], suffix="class_scores")
    kept = _kept(ctx, data, score, nms_scores)
    # Kept rows first, by descending score: sort on the score with every dropped row at -inf.
    order = _descending_order(ctx, ctx.node("Where", [kept, score, neg_inf], suffix="sort_key"),
                              ctx.in_shape(0)[-2], "order")
    rows = _out_format(ctx, data, ctx.attr_int("coord_start", 2), ctx.attr_str("in_format", "corner") == "center")
    index = ctx.node("Expand", [ctx.unsqueeze(order, [2], suffix="order_3d"), ctx.node("Shape", [rows])],
                     suffix="row_index")
    sorted_rows = ctx.node("GatherElements", [rows, index], suffix="sorted_rows", axis=1)
    kept_sorted = ctx.unsqueeze(ctx.node("GatherElements", [kept, order], suffix="kept_sorted", axis=1), [2],
                                suffix="kept_sorted_3d")
    result = ctx.node("Where", [kept_sorted, sorted_rows, ctx.scalar_like(-1.0, 0, "minus_one")],
                      ctx.outputs[:1] if rank == 3 else None)
    if rank != 3:
        ctx.reshape(result, ctx.reshape_target(ctx.output_infos[0]), ctx.outputs[:1])


def _kept(ctx: OpContext, data: str, score: str, nms_scores: str) -> str:
    """Bool (B, N): the boxes NonMaxSuppression selects (in any class plane)."""
    start, n = ctx.attr_int("coord_start", 2), ctx.in_shape(0)[-2]
    boxes = ctx.node("Slice", [data, ctx.ints([start], "box_start"), ctx.ints([start + 4], "box_end"),
                               ctx.ints([2], "box_axis")], suffix="boxes")
    # -inf scores are below any threshold, whether a runtime compares with > or >=.
    selected = ctx.node("NonMaxSuppression", [boxes, nms_scores, ctx.ints([n], "max_per_class"),
                                              ctx.const(np.float32([ctx.attr_float("overlap_thresh", 0.5)]), "iou"),
                                              ctx.const(np.float32([np.finfo(np.float32).min]), "score_min")],
                        suffix="selected", center_point_box=int(ctx.attr_str("in_format", "corner") == "center"))
    pairs = ctx.node("Gather", [selected, ctx.ints([0, 2], "batch_box_cols")], suffix="batch_box", axis=1)
    ones = ctx.node("ConstantOfShape", [shape_of(ctx, pairs, 0, 1)], suffix="kept_ones",
                    value=_tensor(np.ones(1, np.float32)))
    zeros = ctx.node("ConstantOfShape", [ctx.node("Shape", [score], suffix="score_shape")], suffix="kept_zeros",
                     value=_tensor(np.zeros(1, np.float32)))
    return ctx.node("Greater", [ctx.node("ScatterND", [zeros, pairs, ones], suffix="kept_f"),
                                ctx.const(np.float32(0.5), "kept_half")], suffix="kept")


def _descending_order(ctx: OpContext, key: str, k: int, suffix: str) -> str:
    """Indices (B, k) of the k largest ``key`` values along axis 1, largest first."""
    values, order = ctx.fresh(f"{suffix}_values"), ctx.fresh(f"{suffix}_indices")
    ctx.node("TopK", [key, ctx.ints([k], f"{suffix}_k")], [values, order], axis=1, largest=1, sorted=1)
    return order


def _out_format(ctx: OpContext, data: str, start: int, in_center: bool) -> str:
    """The rows with their 4 coordinates converted to out_format (unchanged when it is in_format).

    MXNet's conversion kernels skip a row whose first coordinate is negative (meant for its -1
    rows; measured: a kept box with x1 = -0.5 stays in corner form): so does this."""
    out_center = ctx.attr_str("out_format", "corner") == "center"
    if out_center == in_center:
        return data
    width = ctx.in_shape(0)[-1]
    a, b = _cols(ctx, data, start, start + 2, "fmt_a"), _cols(ctx, data, start + 2, start + 4, "fmt_b")
    if in_center:  # (x, y, w, h) -> corners
        half = _half(ctx, b, "fmt_half")
        first, second = ctx.node("Sub", [a, half]), ctx.node("Add", [a, half])
    else:  # corners -> (x, y, w, h), as MXNet computes it: ((l + r) / 2, r - l)
        first = _half(ctx, ctx.node("Add", [a, b], suffix="fmt_sum"), "fmt_xy")
        second = ctx.node("Sub", [b, a], suffix="fmt_wh")
    parts = ([_cols(ctx, data, 0, start, "fmt_head")] if start > 0 else []) + [first, second]
    if start + 4 < width:
        parts.append(_cols(ctx, data, start + 4, width, "fmt_tail"))
    converted = ctx.node("Concat", parts, suffix="rows_converted", axis=-1)
    skipped = ctx.node("Less", [_cols(ctx, data, start, start + 1, "fmt_first"), ctx.scalar_like(0.0, 0, "zero")],
                       suffix="fmt_skipped")
    return ctx.node("Where", [skipped, data, converted], suffix="rows_out")
