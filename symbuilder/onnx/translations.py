"""MXNet -> ONNX translations of the neural-network layers (one registered function per MXNet op).

Elementwise, reduction and shape ops live in ``ops_math``; importing this module registers both.
Every default below is MXNet 1.9.1's (from its operator docs), because an attribute MXNet
left at its default is absent from the symbol JSON.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from symbuilder.onnx.registry import OpContext, normalize_axis, register

# SELU constants as MXNet's mshadow_op::selu writes them (ONNX's defaults are the same values
# rounded to float32; written out so the graph does not depend on a runtime's defaults).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_GAMMA = 1.0507009873554804934193349852946

_CHANNEL_FIRST_LAYOUTS = (None, "NCW", "NCHW", "NCDHW")


def _spatial(ctx: OpContext, key: str, nd: int, fill: int) -> list:
    """A per-spatial-dim attribute (stride, pad, dilate...); MXNet's empty default means ``fill``."""
    values = ctx.attr_ints(key, ())
    if not values:
        return [fill] * nd
    if len(values) != nd:
        raise ctx.error(f"attribute {key}={values} does not match the {nd}-D kernel")
    return list(values)


def _check_layout(ctx: OpContext) -> None:
    # MXNet 1.9.1's CPU (oneDNN) convolution and deconvolution fail on NHWC/NDHWC ("could not
    # create a descriptor", measured) although shape inference passes: no MXNet result to match.
    layout = ctx.attr_str("layout", None)
    if layout not in _CHANNEL_FIRST_LAYOUTS:
        raise ctx.error(f"layout='{layout}': MXNet 1.9.1's CPU kernel fails on channel-last layouts, so "
                        "there is no MXNet result to reproduce (channel-first layouts only)")


# ---------------------------------------------------------------------------------------------
# Dense and convolution layers


@register("FullyConnected")
def fully_connected(ctx: OpContext) -> None:
    no_bias = ctx.attr_bool("no_bias", False)
    flatten = ctx.attr_bool("flatten", True)
    x, w = ctx.inputs[0], ctx.inputs[1]
    bias = [] if no_bias else [ctx.inputs[2]]
    rank = ctx.in_rank(0)
    if flatten or rank == 2:
        if rank != 2:
            x = ctx.node("Flatten", [x], axis=1)
        # MXNet's weight is (num_hidden, in): Gemm with transB, no copy of the weight.
        ctx.node("Gemm", [x, w] + bias, ctx.outputs[:1], transB=1)
        return
    # flatten=False applies the layer to the last axis of an N-D input.
    w_t = ctx.transpose(w, [1, 0], suffix="weight_T")
    if no_bias:
        ctx.node("MatMul", [x, w_t], ctx.outputs[:1])
    else:
        y = ctx.node("MatMul", [x, w_t])
        ctx.node("Add", [y] + bias, ctx.outputs[:1])


@register("Convolution")
def convolution(ctx: OpContext) -> None:
    _check_layout(ctx)
    kernel = list(ctx.attr_ints("kernel"))
    nd = len(kernel)
    pad = _spatial(ctx, "pad", nd, 0)
    inputs = ctx.inputs[:2] if ctx.attr_bool("no_bias", False) else ctx.inputs[:3]
    ctx.node(
        "Conv",
        inputs,
        ctx.outputs[:1],
        kernel_shape=kernel,
        strides=_spatial(ctx, "stride", nd, 1),
        dilations=_spatial(ctx, "dilate", nd, 1),
        pads=pad + pad,
        group=ctx.attr_int("num_group", 1),
    )


@register("Deconvolution")
def deconvolution(ctx: OpContext) -> None:
    _check_layout(ctx)
    kernel = list(ctx.attr_ints("kernel"))
    nd = len(kernel)
    stride = _spatial(ctx, "stride", nd, 1)
    dilate = _spatial(ctx, "dilate", nd, 1)
    in_spatial = ctx.in_shape(0)[2:]
    target = ctx.attr_ints("target_shape", ())
    if target:
        # MXNet ignores pad/adj and picks them so the output has target_shape: total padding is
        # split with the odd unit kept as adj (the ONNX output_padding, added at the end).
        pad, adj = [], []
        for i in range(nd):
            full = stride[i] * (in_spatial[i] - 1) + (kernel[i] - 1) * dilate[i] + 1
            total = full - target[i]
            adj.append(total % 2)
            pad.append((total + 1) // 2)
    else:
        pad = _spatial(ctx, "pad", nd, 0)
        adj = _spatial(ctx, "adj", nd, 0)
    # Deconvolution's no_bias defaults to True (unlike Convolution's).
    inputs = ctx.inputs[:2] if ctx.attr_bool("no_bias", True) else ctx.inputs[:3]
    ctx.node(
        "ConvTranspose",
        inputs,
        ctx.outputs[:1],
        kernel_shape=kernel,
        strides=stride,
        dilations=dilate,
        pads=pad + pad,
        output_padding=adj,
        group=ctx.attr_int("num_group", 1),
    )


_CHANNEL_LAST_LAYOUTS = ("NWC", "NHWC", "NDHWC")
Outputs = Optional[Sequence[str]]  # a translation's output names, or None for fresh ones
Shapes = Tuple[Tuple[int, ...], Tuple[int, ...]]  # channel-first (input, output) shapes


@register("Pooling")
def pooling(ctx: OpContext) -> None:
    pool_type = ctx.attr_str("pool_type", "max")  # MXNet's parser accepts max, avg, sum, lp only
    layout = ctx.attr_str("layout", None)
    if layout in _CHANNEL_LAST_LAYOUTS:
        # MXNet pools channel-last data on CPU (measured); ONNX pools channel-first: transpose around it.
        rank = ctx.in_rank(0)
        first, last = [0, rank - 1] + list(range(1, rank - 1)), [0] + list(range(2, rank)) + [1]
        shapes = tuple(tuple(s[i] for i in first) for s in (ctx.in_shape(0), ctx.out_shape(0)))
        x = ctx.transpose(ctx.inputs[0], first, suffix="channel_first")
        pooled = _pool_any(ctx, pool_type, x, None, shapes)
        ctx.transpose(pooled, last, ctx.outputs[:1])
        return
    _check_layout(ctx)
    _pool_any(ctx, pool_type, ctx.inputs[0], ctx.outputs[:1], (ctx.in_shape(0), ctx.out_shape(0)))


def _pool_any(ctx: OpContext, pool_type: str, x: str, outputs: Outputs, shapes: Shapes) -> str:
    if pool_type == "lp":
        return _lp_pooling(ctx, x, outputs, shapes)
    return _pool(ctx, pool_type, x, outputs, shapes)


# MXNet's Lp pooling is (sum of x**p) ** (1/p) with the SIGN kept (measured: p=1 of (-5, 2) is -3,
# p=3 of (-5, 2) is -cbrt(117)); ONNX LpPool takes |x| ** p, which differs for odd p. MXNet
# runs p in 1, 2, 3 only (p=4 passes shape inference, then its kernel fails: "p value of 4 is not
# supported yet"). So: x**p, then MXNet's own sum pool (same windows and padding), then the signed root.
_LP_P_VALUES = (1, 2, 3)


def _lp_pooling(ctx: OpContext, x: str, outputs: Outputs, shapes: Shapes) -> str:
    p = ctx.attr_int("p_value")
    if p not in _LP_P_VALUES:
        raise ctx.error(f"p_value={p}: MXNet 1.9.1's Lp pooling kernel fails on it (it runs p_value 1, 2, 3), "
                        "so there is no MXNet result to reproduce")
    if p == 1:
        return _pool(ctx, "sum", x, outputs, shapes)
    powered = ctx.node("Mul", [x, x], suffix="x_sq")
    if p == 3:
        powered = ctx.node("Mul", [powered, x], suffix="x_cube")
    summed = _pool(ctx, "sum", powered, None, shapes)
    if p == 2:
        return ctx.node("Sqrt", [summed], outputs)
    # Signed cube root: sign(s) * |s| ** (1/3) (Pow of a negative base by 1/3 is NaN).
    root = ctx.node("Pow", [ctx.node("Abs", [summed]), ctx.scalar_like(1.0 / 3.0, 0, "one_third")], suffix="cbrt_abs")
    return ctx.node("Mul", [ctx.node("Sign", [summed]), root], outputs)


def _pool(ctx: OpContext, pool_type: str, x: str, outputs: Outputs, shapes: Shapes) -> str:
    """Max, avg or sum pooling of ``x`` with the node's kernel/stride/pad/convention; returns the output.
    ``shapes``: the channel-first (input, output) shapes."""
    in_shape, out_shape = shapes
    rank = len(in_shape)
    nd = rank - 2
    if ctx.attr_bool("global_pool", False):
        if pool_type == "max":
            return ctx.node("GlobalMaxPool", [x], outputs)
        if pool_type == "avg":
            return ctx.node("GlobalAveragePool", [x], outputs)
        return ctx.reduce("ReduceSum", x, list(range(2, rank)), keepdims=True, outputs=outputs)

    kernel = list(ctx.attr_ints("kernel"))
    if len(kernel) != nd:
        raise ctx.error(f"kernel {tuple(kernel)} does not match a rank-{rank} input")
    stride = _spatial(ctx, "stride", nd, 1)
    pad = _spatial(ctx, "pad", nd, 0)
    # 'same' (MXNet's third value) fails MXNet's own shape inference, 1-D and 2-D (measured).
    in_spatial = in_shape[2:]
    out_spatial = list(out_shape[2:])
    # 'full' rounds the window count up. Extra end padding that makes MXNet's last windows fit:
    extra = [max(0, (o - 1) * s + k - (i + 2 * p)) for o, s, k, i, p in zip(out_spatial, stride, kernel, in_spatial, pad)]

    if pool_type == "sum":
        return _sum_pool(ctx, x, outputs, kernel, stride, pad + [p + e for p, e in zip(pad, extra)], in_shape[1])

    onnx_op = "MaxPool" if pool_type == "max" else "AveragePool"
    common = {"kernel_shape": kernel, "strides": stride}
    if pool_type == "avg":
        common["count_include_pad"] = int(ctx.attr_bool("count_include_pad", True))
    if not any(extra):
        return ctx.node(onnx_op, [x], outputs, pads=pad + pad, **common)
    # ONNX ceil_mode clips partial windows as MXNet does, but drops a last window that would
    # start inside the right padding; MXNet keeps it.
    if _ceil_mode_sizes(in_spatial, kernel, stride, pad) == out_spatial:
        return ctx.node(onnx_op, [x], outputs, pads=pad + pad, ceil_mode=1, **common)
    if pool_type == "max":
        # MXNet fills a window that lies wholly in padding with the dtype's lowest value (measured
        # -3.4028235e+38); padding with that value reproduces it, and ONNX forbids pads >= kernel.
        dtype = np.dtype(ctx.input_infos[0].dtype)
        lowest = ctx.const(np.asarray(np.finfo(dtype).min, dtype=dtype), "lowest")
        pads = [0, 0] + pad + [0, 0] + [p + e for p, e in zip(pad, extra)]
        padded = ctx.node("Pad", [x, ctx.ints(pads, "pads"), lowest], mode="constant")
        return ctx.node("MaxPool", [padded], outputs, pads=[0] * (2 * nd), **common)
    # An avg window that starts inside the right padding (no ONNX pool keeps it): the sum pool
    # times 1 / MXNet's divisor of each window, a static map since the shapes are static.
    summed = _sum_pool(ctx, x, None, kernel, stride, pad + [p + e for p, e in zip(pad, extra)], in_shape[1])
    return ctx.node("Mul", [summed, ctx.const(_avg_weights(ctx, in_shape), "avg_weights")], outputs)


def _sum_pool(ctx: OpContext, x: str, outputs: Outputs, kernel: list, stride: list, pads: list, channels: int) -> str:
    """A sum pool as a depthwise convolution with a kernel of ones: exact for any padding."""
    ones = ctx.const(np.ones([channels, 1] + kernel, dtype=ctx.input_infos[0].dtype), "ones_kernel")
    return ctx.node("Conv", [x, ones], outputs, kernel_shape=kernel, strides=stride, pads=pads, group=channels)


def _avg_weights(ctx: OpContext, in_shape: Tuple[int, ...]) -> np.ndarray:
    """(1, 1, *out_spatial): 1 / the divisor MXNet's avg pool uses for each window (0 for a window
    with no input element), read from MXNet itself: on ones, avg = count / divisor, sum = count."""
    attrs = {k: v for k, v in ctx.attrs.items() if k in ("kernel", "stride", "pad", "pooling_convention",
                                                           "count_include_pad")}
    probe = mx.nd.ones((1, 1) + tuple(in_shape[2:]))
    avg = mx.nd.Pooling(probe, pool_type="avg", **attrs).asnumpy().astype(np.float64)
    count = mx.nd.Pooling(probe, pool_type="sum", **{k: v for k, v in attrs.items() if k != "count_include_pad"})
    count = count.asnumpy().astype(np.float64)
    weights = np.divide(avg, count, out=np.zeros_like(avg), where=count > 0)
    return weights.astype(ctx.input_infos[0].dtype)


def _ceil_mode_sizes(in_spatial, kernel, stride, pad) -> list:
    """Output sizes of an ONNX pool with ceil_mode=1 (ONNX Runtime's rule)."""
    sizes = []
    for i, k, s, p in zip(in_spatial, kernel, stride, pad):
        out = -(-(i + 2 * p - k) // s) + 1
        if (out - 1) * s >= i + p:
            out -= 1
        sizes.append(out)
    return sizes


# ---------------------------------------------------------------------------------------------
# Activations


# Every act_type MXNet 1.9.1's parser accepts (it rejects any other at symbol creation and load).
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus", "softsign": "Softsign"}


@register("Activation")
def activation(ctx: OpContext) -> None:
    ctx.node(_ACTIVATIONS[ctx.attr_str("act_type")], ctx.inputs[:1], ctx.outputs[:1])


@register("LeakyReLU")
def leaky_relu(ctx: OpContext) -> None:
    act = ctx.attr_str("act_type", "leaky")
    x = ctx.inputs[0]
    out = ctx.outputs[:1]
    if act == "leaky":
        ctx.node("LeakyRelu", [x], out, alpha=ctx.attr_float("slope", 0.25))
    elif act == "rrelu":
        # At inference MXNet's rrelu is a leaky ReLU with the mean of its random slope range.
        lower = ctx.attr_float("lower_bound", 0.125)
        upper = ctx.attr_float("upper_bound", 0.334)
        ctx.node("LeakyRelu", [x], out, alpha=(lower + upper) / 2.0)
    elif act == "elu":
        ctx.node("Elu", [x], out, alpha=ctx.attr_float("slope", 0.25))
    elif act == "selu":
        ctx.node("Selu", [x], out, alpha=SELU_ALPHA, gamma=SELU_GAMMA)
    elif act == "prelu":
        slope = ctx.inputs[1]
        rank = ctx.in_rank(0)
        # MXNet's gamma is per channel (axis 1); ONNX PRelu broadcasts from the right.
        if rank > 2 and ctx.in_shape(1) != (1,):
            slope = ctx.broadcast_param(slope, rank - 1, 0, "gamma_bcast")
        ctx.node("PRelu", [x, slope], out)
    else:  # gelu: the last act_type MXNet's parser accepts
        # MXNet's gelu is the erf form: 0.5 * x * (1 + erf(x / sqrt(2))). ONNX Gelu needs opset 20.
        scaled = ctx.node("Mul", [x, ctx.scalar_like(1.0 / np.sqrt(2.0), 0, "inv_sqrt2")])
        erf = ctx.node("Erf", [scaled])
        one_plus = ctx.node("Add", [erf, ctx.scalar_like(1.0, 0, "one")])
        half_x = ctx.node("Mul", [x, ctx.scalar_like(0.5, 0, "half")])
        ctx.node("Mul", [half_x, one_plus], out)


# ---------------------------------------------------------------------------------------------
# Normalization


@register("BatchNorm")
def batch_norm(ctx: OpContext) -> None:
    # Export is inference: the moving statistics are used whatever use_global_stats says.
    # Emitted as (x - mean) * scale + beta, MXNet's (oneDNN's) order, never as ONNX
    # BatchNormalization: ONNX Runtime computes that as x * scale + (beta - mean * scale), whose
    # two large terms cancel in float32 when |mean| / std is large (4.2e-3 off on a logistic
    # output for a feature with mean 1e4, std 0.1). The Sub comes first, so no ORT fusion of the
    # Mul/Add pair (into BatchNormalization or a Conv) can move the offset after the scaling.
    eps = ctx.attr_float("eps", 1e-3)  # MXNet's default; ONNX's would be 1e-5
    fix_gamma = ctx.attr_bool("fix_gamma", True)  # MXNet's default is True
    rank = ctx.in_rank(0)
    axis = normalize_axis(ctx.attr_int("axis", 1), rank, ctx)
    gamma, beta, mean, var = (_stored(ctx, i) for i in range(1, 5))
    if fix_gamma:
        # MXNet uses gamma = 1 when fix_gamma, whatever the stored gamma (weight decay moves it).
        gamma = np.ones_like(gamma)
    # In float64, rounded once to the input's dtype: the correctly rounded scale.
    scale = gamma / np.sqrt(var + np.float64(np.float32(eps)))
    centered = ctx.node("Sub", [ctx.inputs[0], _per_channel(ctx, mean, rank, axis, "mean")], suffix="centered")
    scaled = ctx.node("Mul", [centered, _per_channel(ctx, scale, rank, axis, "scale")], suffix="scaled")
    ctx.node("Add", [scaled, _per_channel(ctx, beta, rank, axis, "beta")], ctx.outputs[:1])


def _stored(ctx: OpContext, i: int) -> np.ndarray:
    """Input i as a stored parameter in float64 (the folded scale is computed from it at export)."""
    value = ctx.constants.get(ctx.inputs[i])
    if value is None:
        raise ctx.error(f"input '{ctx.inputs[i]}' must be a stored parameter (found no value for it in the params)")
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _per_channel(ctx: OpContext, values: np.ndarray, rank: int, axis: int, suffix: str) -> str:
    """An initializer of shape (1, .., C, .., 1), C at ``axis``, in the input's dtype: it broadcasts
    along every other axis, so any channel axis needs no transposes."""
    shape = [1] * rank
    shape[axis] = -1
    return ctx.const(values.reshape(shape).astype(ctx.input_infos[0].dtype), suffix)


@register("LayerNorm")
def layer_norm(ctx: OpContext) -> None:
    # Written as two-pass arithmetic rather than ONNX LayerNormalization: MXNet normalizes over
    # ONE axis (ONNX over all trailing axes), the op needs opset 17, and a one-pass variance
    # loses precision on inputs with a large mean.
    eps = ctx.attr_float("eps", 1e-5)
    rank = ctx.in_rank(0)
    axis = normalize_axis(ctx.attr_int("axis", -1), rank, ctx)
    x, gamma, beta = ctx.inputs[:3]
    want_stats = ctx.attr_bool("output_mean_var", False) and len(ctx.outputs) >= 3
    mean = ctx.reduce("ReduceMean", x, [axis], keepdims=True, suffix="mean",
                      outputs=ctx.outputs[1:2] if want_stats else None)
    centered = ctx.node("Sub", [x, mean], suffix="centered")
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [centered, centered], suffix="sq"), [axis], keepdims=True,
                     suffix="var")
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar_like(eps, 0, "eps")])],
                   ctx.outputs[2:3] if want_stats else None, suffix="std")
    normed = ctx.node("Div", [centered, std], suffix="normed")
    if axis != rank - 1:
        gamma = ctx.broadcast_param(gamma, rank, axis, "gamma_bcast")
        beta = ctx.broadcast_param(beta, rank, axis, "beta_bcast")
    scaled = ctx.node("Mul", [normed, gamma], suffix="scaled")
    ctx.node("Add", [scaled, beta], ctx.outputs[:1])


@register("InstanceNorm")
def instance_norm(ctx: OpContext) -> None:
    ctx.node("InstanceNormalization", ctx.inputs[:3], ctx.outputs[:1], epsilon=ctx.attr_float("eps", 1e-3))


# ---------------------------------------------------------------------------------------------
# Inference-time identities and loss heads. A loss head's label input is never read, so graph
# assembly prunes the label variable away.


@register("Dropout")
def dropout(ctx: OpContext) -> None:
    if ctx.attr_str("mode", "training") == "always":
        # ONNX could draw the mask (RandomUniformLike), but the parity check tells random outputs by op
        # name (registry.random_ops), and marking Dropout random would weaken every identity Dropout.
        raise ctx.error("mode='always' drops units at inference too: a random mask, which export does not "
                        "draw for Dropout (use a random op, e.g. random.uniform_like, for an inference mask)")
    ctx.node("Identity", ctx.inputs[:1], ctx.outputs[:1])


@register("SoftmaxOutput")
def softmax_output(ctx: OpContext) -> None:
    x = ctx.inputs[0]
    rank = ctx.in_rank(0)
    if ctx.attr_bool("multi_output", False):
        ctx.node("Softmax", [x], ctx.outputs[:1], axis=1)
    elif ctx.attr_bool("preserve_shape", False) or rank == 2:
        ctx.node("Softmax", [x], ctx.outputs[:1], axis=-1)
    elif rank == 4:
        # Measured on MXNet 1.9.1: the oneDNN (MKLDNN) kernel takes the softmax of a 4-D input
        # over the LAST axis, the native kernel over all but the batch axis (max diff 0.66):
        # there is no single MXNet answer to reproduce.
        raise ctx.error(
            "a 4-D input without multi_output or preserve_shape has backend-dependent results in MXNet 1.9.1 "
            "(oneDNN: softmax over the last axis; native: over all non-batch axes); set multi_output=True "
            "(softmax over axis 1), preserve_shape=True (last axis), or flatten before the head"
        )
    else:
        # MXNet flattens to (batch, -1), takes softmax over everything but the batch, restores the shape.
        flat = ctx.node("Flatten", [x], axis=1)
        soft = ctx.node("Softmax", [flat], axis=1)
        shape = ctx.node("Shape", [x])
        ctx.node("Reshape", [soft, shape], ctx.outputs[:1])


@register("LinearRegressionOutput")
def linear_regression_output(ctx: OpContext) -> None:
    ctx.node("Identity", ctx.inputs[:1], ctx.outputs[:1])


@register("MAERegressionOutput")
def mae_regression_output(ctx: OpContext) -> None:
    ctx.node("Identity", ctx.inputs[:1], ctx.outputs[:1])


@register("LogisticRegressionOutput")
def logistic_regression_output(ctx: OpContext) -> None:
    ctx.node("Sigmoid", ctx.inputs[:1], ctx.outputs[:1])


@register("Embedding")
def embedding(ctx: OpContext) -> None:
    input_dim = ctx.attr_int("input_dim")
    # MXNet takes float indices, truncates them and clips them into range; ONNX Gather wants
    # int64 in range.
    idx = ctx.node("Cast", ctx.inputs[:1], to=7, suffix="indices")  # 7 = INT64
    lo = ctx.const(np.asarray(0, dtype=np.int64), "min_index")
    hi = ctx.const(np.asarray(input_dim - 1, dtype=np.int64), "max_index")
    clipped = ctx.node("Clip", [idx, lo, hi], suffix="clip_indices")
    ctx.node("Gather", [ctx.inputs[1], clipped], ctx.outputs[:1], axis=0)


from symbuilder.onnx import ops_math as _ops_math  # noqa: E402,F401  (registers the math/shape ops)
