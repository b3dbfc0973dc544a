"""MXNet -> ONNX translations of comparison, logical, modulo and ``where`` ops.

MXNet's comparisons and logical ops return 0/1 in the dtype of their input (float32 for float
data), where ONNX's return bool: every result is cast back to the input's dtype.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
from onnx import TensorProto

from symbuilder.onnx.ops_tensor import onnx_dtype
from symbuilder.onnx.registry import OpContext, register

# MXNet op -> (ONNX comparison, negate the result?). Elementwise (_equal: `a == b` on symbols)
# and broadcast forms are the same in ONNX, which always broadcasts.
_COMPARE: Dict[str, Tuple[str, bool]] = {
    "equal": ("Equal", False),
    "not_equal": ("Equal", True),
    "greater": ("Greater", False),
    "greater_equal": ("GreaterOrEqual", False),
    "lesser": ("Less", False),
    "lesser_equal": ("LessOrEqual", False),
}
_LOGICAL = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


def _as_input_dtype(ctx: OpContext, flag: str) -> None:
    ctx.node("Cast", [flag], ctx.outputs[:1], to=onnx_dtype(ctx.input_infos[0].dtype))


def _compare(ctx: OpContext, onnx_op: str, negate: bool, a: str, b: str) -> None:
    flag = ctx.node(onnx_op, [a, b])
    _as_input_dtype(ctx, ctx.node("Not", [flag]) if negate else flag)


def _truth(ctx: OpContext, x: str) -> str:
    # MXNet's logical ops test x != 0 (so NaN is true, as Cast to bool makes it).
    return ctx.node("Cast", [x], suffix="truth", to=TensorProto.BOOL)


def _scalar_operands(ctx: OpContext, reverse: bool = False) -> Tuple[str, str]:
    s = ctx.scalar_like(ctx.attr_float("scalar"), 0, "scalar")
    return (s, ctx.inputs[0]) if reverse else (ctx.inputs[0], s)


def _make_compare(onnx_op: str, negate: bool, scalar: bool) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        a, b = _scalar_operands(ctx) if scalar else ctx.inputs[:2]
        _compare(ctx, onnx_op, negate, a, b)

    return translate


def _make_logical(onnx_op: str, scalar: bool) -> Callable[[OpContext], None]:
    def translate(ctx: OpContext) -> None:
        a, b = _scalar_operands(ctx) if scalar else ctx.inputs[:2]
        _as_input_dtype(ctx, ctx.node(onnx_op, [_truth(ctx, a), _truth(ctx, b)]))

    return translate


def _register_family(names: Dict[str, Callable[[OpContext], None]]) -> None:
    for op_name, fn in names.items():
        fn.__name__ = f"translate_{op_name.lstrip('_')}"
        register(op_name)(fn)


_register_family({
    **{f"{prefix}{name}": _make_compare(onnx_op, negate, False)
       for name, (onnx_op, negate) in _COMPARE.items() for prefix in ("broadcast_", "_")},
    **{f"_{name}_scalar": _make_compare(onnx_op, negate, True) for name, (onnx_op, negate) in _COMPARE.items()},
    **{f"{prefix}{name}": _make_logical(onnx_op, False)
       for name, onnx_op in _LOGICAL.items() for prefix in ("broadcast_", "_")},
    **{f"_{name}_scalar": _make_logical(onnx_op, True) for name, onnx_op in _LOGICAL.items()},
})


@register("logical_not")
def logical_not(ctx: OpContext) -> None:
    _as_input_dtype(ctx, ctx.node("Not", [_truth(ctx, ctx.inputs[0])]))


# ---------------------------------------------------------------------------------------------
# Modulo. MXNet's mod takes the sign of the divisor (Python's %) and gives 0 for a zero divisor;
# ONNX's float Mod is C's fmod (sign of the dividend), so the result is corrected.


def _mod(ctx: OpContext, a: str, b: str) -> None:
    if not np.issubdtype(ctx.input_infos[0].dtype, np.floating):
        ctx.node("Mod", [a, b], ctx.outputs[:1], fmod=0)  # integer Mod is already Python's
        return
    zero = ctx.scalar_like(0.0, 0, "zero")
    r = ctx.node("Mod", [a, b], fmod=1)
    # r != 0 with a sign unlike b's: move it into b's half-open range by adding b.
    differs = ctx.node("Xor", [ctx.node("Less", [r, zero]), ctx.node("Less", [b, zero])])
    fix = ctx.node("And", [differs, ctx.node("Not", [ctx.node("Equal", [r, zero])])])
    r = ctx.node("Where", [fix, ctx.node("Add", [r, b]), r])
    ctx.node("Where", [ctx.node("Equal", [b, zero]), zero, r], ctx.outputs[:1])


@register("broadcast_mod")
def broadcast_mod(ctx: OpContext) -> None:
    _mod(ctx, ctx.inputs[0], ctx.inputs[1])


@register("_mod")
def elemwise_mod(ctx: OpContext) -> None:
    _mod(ctx, ctx.inputs[0], ctx.inputs[1])


@register("_mod_scalar")
def mod_scalar(ctx: OpContext) -> None:
    _mod(ctx, *_scalar_operands(ctx))


@register("_rmod_scalar")
def rmod_scalar(ctx: OpContext) -> None:
    _mod(ctx, *_scalar_operands(ctx, reverse=True))


# ---------------------------------------------------------------------------------------------


@register("where")
def where(ctx: OpContext) -> None:
    cond = ctx.node("Cast", [ctx.inputs[0]], suffix="cond", to=TensorProto.BOOL)
    c_rank, x_rank = ctx.in_rank(0), ctx.in_rank(1)
    if c_rank == 1 and x_rank > 1:
        # A 1-D condition picks whole rows (along axis 0) in MXNet, not trailing elements.
        cond = ctx.unsqueeze(cond, list(range(1, x_rank)))
    elif c_rank != x_rank:
        raise ctx.error(f"a rank-{c_rank} condition for rank-{x_rank} data is not MXNet's where")
    ctx.node("Where", [cond, ctx.inputs[1], ctx.inputs[2]], ctx.outputs[:1])
