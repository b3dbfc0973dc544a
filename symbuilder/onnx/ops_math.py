"""MXNet -> ONNX translations of elementwise arithmetic, reductions and shape ops.

One registered function per MXNet op. The families (binary, scalar, unary) are table-driven,
but each MXNet op still gets its own registry entry, so tests parametrized over the registry
see every one of them.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from onnx import TensorProto, helper

from symbuilder.onnx.ops_tensor import attr_dtype
from symbuilder.onnx.registry import OpContext, normalize_axis, register

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def _register_table(table: Dict[str, object], make: Callable[[str, object], Callable[[OpContext], None]]) -> None:
    for op_name, spec in table.items():
        fn = make(op_name, spec)
        fn.__name__ = f"translate_{op_name.lstrip('_')}"
        register(op_name)(fn)


# ---------------------------------------------------------------------------------------------
# Binary arithmetic. MXNet's broadcast_* follow numpy broadcasting, as ONNX's ops do.

_BINARY = {
    "elemwise_add": "Add",
    "elemwise_sub": "Sub",
    "elemwise_mul": "Mul",
    "elemwise_div": "Div",
    "broadcast_add": "Add",
    "broadcast_sub": "Sub",
    "broadcast_mul": "Mul",
    "broadcast_div": "Div",
    "broadcast_maximum": "Max",
    "broadcast_minimum": "Min",
    "broadcast_power": "Pow",
    "_maximum": "Max",
    "_minimum": "Min",
    "_power": "Pow",
}


def _make_binary(op_name: str, onnx_op: object) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        ctx.node(str(onnx_op), ctx.inputs[:2], ctx.outputs[:1])

    return translate


_register_table(_BINARY, _make_binary)


# ---------------------------------------------------------------------------------------------
# Arithmetic with a scalar attribute: (ONNX op, scalar on the left?)

_SCALAR: Dict[str, Tuple[str, bool]] = {
    "_plus_scalar": ("Add", False),
    "_minus_scalar": ("Sub", False),
    "_rminus_scalar": ("Sub", True),
    "_mul_scalar": ("Mul", False),
    "_div_scalar": ("Div", False),
    "_rdiv_scalar": ("Div", True),
    "_power_scalar": ("Pow", False),
    "_rpower_scalar": ("Pow", True),
    "_maximum_scalar": ("Max", False),
    "_minimum_scalar": ("Min", False),
}


def _make_scalar(op_name: str, spec: object) -> Callable[[OpContext], None]:
    onnx_op, scalar_first = spec  # type: ignore[misc]

    def translate(ctx: OpContext) -> None:
        # The constant takes the input's dtype: a float64 scalar would make ONNX reject the graph.
        s = ctx.scalar_like(ctx.attr_float("scalar"), 0, "scalar")
        x = ctx.inputs[0]
        ctx.node(onnx_op, [s, x] if scalar_first else [x, s], ctx.outputs[:1])

    return translate


_register_table(_SCALAR, _make_scalar)


# ---------------------------------------------------------------------------------------------
# Unary elementwise.

_UNARY = {
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "abs": "Abs",
    "negative": "Neg",
    "reciprocal": "Reciprocal",
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "floor": "Floor",
    "ceil": "Ceil",
    "erf": "Erf",
    "_copy": "Identity",  # mx.sym.identity
    "BlockGrad": "Identity",  # mx.sym.stop_gradient
    "MakeLoss": "Identity",  # its forward pass is its input; grad_scale acts only backward
    "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "arcsin": "Asin", "arccos": "Acos", "arctan": "Atan",
    "sinh": "Sinh", "cosh": "Cosh",
    "arcsinh": "Asinh", "arccosh": "Acosh", "arctanh": "Atanh",
    "sign": "Sign", "softsign": "Softsign",
}


def _make_unary(op_name: str, onnx_op: object) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        ctx.node(str(onnx_op), ctx.inputs[:1], ctx.outputs[:1])

    return translate


# Keys are MXNet's canonical op names: aliases (identity, stop_gradient) never reach the JSON.
_register_table(_UNARY, _make_unary)


@register("trunc")
@register("fix")
def toward_zero(ctx: OpContext) -> None:
    """trunc and fix both round toward zero: sign(x) * floor(|x|) (ONNX has no Trunc)."""
    x = ctx.inputs[0]
    floored = ctx.node("Floor", [ctx.node("Abs", [x])])
    ctx.node("Mul", [ctx.node("Sign", [x]), floored], ctx.outputs[:1])


@register("cbrt")
def cbrt(ctx: OpContext) -> None:
    """sign(x) * |x|^(1/3): Pow of a negative base with a fractional exponent is NaN."""
    x = ctx.inputs[0]
    third = ctx.scalar_like(1.0 / 3.0, 0, "third")
    root = ctx.node("Pow", [ctx.node("Abs", [x]), third])
    ctx.node("Mul", [ctx.node("Sign", [x]), root], ctx.outputs[:1])


def _scale_by(factor: float) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        ctx.node("Mul", [ctx.inputs[0], ctx.scalar_like(factor, 0, "factor")], ctx.outputs[:1])
    return translate


register("degrees")(_scale_by(180.0 / np.pi))
register("radians")(_scale_by(np.pi / 180.0))


@register("square")
def square(ctx: OpContext) -> None:
    ctx.node("Mul", [ctx.inputs[0], ctx.inputs[0]], ctx.outputs[:1])


@register("rsqrt")
def rsqrt(ctx: OpContext) -> None:
    root = ctx.node("Sqrt", ctx.inputs[:1])
    ctx.node("Reciprocal", [root], ctx.outputs[:1])


@register("clip")
def clip(ctx: OpContext) -> None:
    lo = ctx.scalar_like(ctx.attr_float("a_min"), 0, "a_min")
    hi = ctx.scalar_like(ctx.attr_float("a_max"), 0, "a_max")
    ctx.node("Clip", [ctx.inputs[0], lo, hi], ctx.outputs[:1])


# ---------------------------------------------------------------------------------------------
# Softmax family (the loss head SoftmaxOutput is with the layers).


def _softmax(ctx: OpContext, onnx_op: str) -> None:
    x = ctx.inputs[0]
    axis = normalize_axis(ctx.attr_int("axis", -1), ctx.in_rank(0), ctx)
    mask = None
    if ctx.attr_bool("use_length", False):
        if len(ctx.inputs) < 2:
            raise ctx.error("use_length=True needs the length input")
        mask = _length_mask(ctx, axis)
        # Masked entries get the lowest finite value, not -inf: a row of length 0 then stays finite
        # (uniform) until the final Where writes MXNet's zeros.
        lowest = ctx.scalar_like(np.finfo(np.dtype(ctx.input_infos[0].dtype)).min, 0, "lowest")
        x = ctx.node("Where", [mask, x, lowest], suffix="masked")
    temperature: Optional[float] = ctx.attr_float("temperature", None)
    if temperature is not None and temperature != 1.0:
        # MXNet divides (x - max) by the temperature, not x: dividing first rounds a large logit
        # (1e4 / 2.5) in float32 before the max is taken out, which moved probabilities by
        # 5.6e-5 of their scale. ORT's own max subtraction then finds 0 and changes nothing.
        peak = ctx.reduce("ReduceMax", x, [axis], keepdims=True, suffix="max")
        centered = ctx.node("Sub", [x, peak], suffix="centered")
        x = ctx.node("Div", [centered, ctx.scalar_like(temperature, 0, "temperature")])
    # dtype asks for another output type (float64 from float32: measured); computed in the
    # input's type and cast, within 1e-7 of MXNet's wider arithmetic.
    dtype = ctx.attr_str("dtype", None)
    cast = dtype is not None and np.dtype(dtype) != np.dtype(ctx.input_infos[0].dtype)
    final = None if cast else ctx.outputs[:1]
    out = ctx.node(onnx_op, [x], None if mask is not None else final, axis=axis)
    if mask is not None:
        out = ctx.node("Where", [mask, out, ctx.scalar_like(0.0, 0, "zero")], final)
    if cast:
        ctx.node("Cast", [out], ctx.outputs[:1], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _length_mask(ctx: OpContext, axis: int) -> str:
    """Bool mask, True where the position along ``axis`` is below the length (MXNet's softmax
    ``length`` has the data's shape without ``axis``)."""
    n = ctx.in_shape(0)[axis]
    rank = ctx.in_rank(0)
    positions = np.arange(n, dtype=np.int64).reshape([n if i == axis else 1 for i in range(rank)])
    length = ctx.unsqueeze(ctx.node("Cast", [ctx.inputs[1]], suffix="length_int64", to=TensorProto.INT64), [axis],
                           suffix="length_axis")
    return ctx.node("Less", [ctx.const(positions, "positions"), length], suffix="mask")


@register("softmax")
def softmax(ctx: OpContext) -> None:
    _softmax(ctx, "Softmax")


@register("log_softmax")
def log_softmax(ctx: OpContext) -> None:
    _softmax(ctx, "LogSoftmax")


# ---------------------------------------------------------------------------------------------
# Reductions. MXNet reduces everything to shape (1,) (not a 0-d scalar) when no axis is given.

_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}


def _make_reduce(op_name: str, onnx_op: object) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        rank = ctx.in_rank(0)
        axes = ctx.attr_ints("axis", ())
        keepdims = ctx.attr_bool("keepdims", False)
        axes = sorted({normalize_axis(a, rank, ctx) for a in axes})
        if ctx.attr_bool("exclude", False):
            axes = [a for a in range(rank) if a not in axes]
        if not axes:
            axes = list(range(rank))
        if len(axes) == rank and not keepdims:
            flat = ctx.reduce(str(onnx_op), ctx.inputs[0], axes, keepdims=False)
            ctx.reshape(flat, [1], ctx.outputs[:1])
            return
        ctx.reduce(str(onnx_op), ctx.inputs[0], axes, keepdims=keepdims, outputs=ctx.outputs[:1])

    return translate


_register_table(_REDUCE, _make_reduce)


# ---------------------------------------------------------------------------------------------
# Shape ops


@register("Flatten")
def flatten(ctx: OpContext) -> None:
    ctx.node("Flatten", ctx.inputs[:1], ctx.outputs[:1], axis=1)


@register("Concat")
def concat(ctx: OpContext) -> None:
    ctx.node("Concat", ctx.inputs, ctx.outputs[:1], axis=ctx.attr_int("dim", 1))


@register("Reshape")
def reshape(ctx: OpContext) -> None:
    # MXNet's codes (0, -1, -2, -3, -4, reverse) are resolved by MXNet's own shape inference;
    # the target is written out statically, with -1 for the one dim that follows the batch.
    if ctx.dynamic_batch and any(ctx.input_infos[0].batch_dims) and not any(ctx.output_infos[0].batch_dims):
        # MXNet does not check this at shape inference; it would fail at run time at another batch.
        raise ctx.error(f"shape {ctx.out_shape(0)} is fixed, so the graph only works at one batch size; "
                        "export with dynamic_batch=False")
    ctx.reshape(ctx.inputs[0], ctx.reshape_target(ctx.output_infos[0]), ctx.outputs[:1])


@register("transpose")
def transpose(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    axes = ctx.attr_ints("axes", ())
    perm = [normalize_axis(a, rank, ctx) for a in axes] if axes else list(reversed(range(rank)))
    ctx.transpose(ctx.inputs[0], perm, ctx.outputs[:1])


@register("expand_dims")
def expand_dims(ctx: OpContext) -> None:
    rank = ctx.in_rank(0)
    axis = normalize_axis(ctx.attr_int("axis"), rank + 1, ctx)
    ctx.unsqueeze(ctx.inputs[0], [axis], ctx.outputs[:1])


@register("squeeze")
def squeeze(ctx: OpContext) -> None:
    shape = ctx.in_shape(0)
    axes = ctx.attr_ints("axis", ())
    if axes:
        axes = [normalize_axis(a, len(shape), ctx) for a in axes]
    else:
        # Static size-1 dims only: a dynamic batch of 1 must not be squeezed away.
        batch_dims = ctx.input_infos[0].batch_dims or (False,) * len(shape)
        axes = [i for i, d in enumerate(shape) if d == 1 and not (ctx.dynamic_batch and batch_dims[i])]
    if not axes:
        # ONNX Squeeze with an empty axes list removes EVERY size-1 dim (a runtime batch of 1 too).
        ctx.node("Identity", ctx.inputs[:1], ctx.outputs[:1])
    elif len(axes) == len(shape):
        # MXNet keeps one dim: squeezing (1, 1) gives (1,), not a 0-d scalar.
        ctx.reshape(ctx.inputs[0], [1], ctx.outputs[:1])
    else:
        ctx.squeeze(ctx.inputs[0], axes, ctx.outputs[:1])


@register("slice_axis")
def slice_axis(ctx: OpContext) -> None:
    axis = normalize_axis(ctx.attr_int("axis"), ctx.in_rank(0), ctx)
    begin = ctx.attr_int("begin")
    end = ctx.attr_int("end", None)
    ctx.node(
        "Slice",
        [ctx.inputs[0], ctx.ints([begin], "starts"), ctx.ints([_INT64_MAX if end is None else end], "ends"),
         ctx.ints([axis], "axes")],
        ctx.outputs[:1],
    )


@register("slice")
def slice_(ctx: OpContext) -> None:
    begin = ctx.attr_optional_ints("begin")
    end = ctx.attr_optional_ints("end")
    step = ctx.attr_optional_ints("step", ())
    if len(begin) != len(end) or (step and len(step) != len(begin)):
        raise ctx.error(f"begin {begin}, end {end} and step {step} differ in length")
    starts, ends, steps = [], [], []
    for i, (b, e) in enumerate(zip(begin, end)):
        s = step[i] if step and step[i] is not None else 1
        # None means "from the first (last, for a negative step) element to the far end".
        starts.append(b if b is not None else (0 if s > 0 else _INT64_MAX))
        ends.append(e if e is not None else (_INT64_MAX if s > 0 else _INT64_MIN))
        steps.append(s)
    ctx.node(
        "Slice",
        [ctx.inputs[0], ctx.ints(starts, "starts"), ctx.ints(ends, "ends"), ctx.ints(range(len(starts)), "axes"),
         ctx.ints(steps, "steps")],
        ctx.outputs[:1],
    )


@register("Cast")
def cast(ctx: OpContext) -> None:
    ctx.node("Cast", ctx.inputs[:1], ctx.outputs[:1], to=helper.np_dtype_to_tensor_dtype(attr_dtype(ctx, default=None)))
