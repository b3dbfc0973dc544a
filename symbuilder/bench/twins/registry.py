"""The one registry of twin ops: per MXNet op, how a spec layer reads (its plan), and the
Gluon block and the torch module that compute what the MXNet op computes.

A plan is one function decorated with ``@register_twin_plan("Op", known=(...))``: it gets a
:class:`LayerView` and returns the step's arguments. A builder is one function decorated with
``@register_twin_op("Op", framework="gluon")`` (or ``"torch"``): it gets the
:class:`TwinStep` and the parameter map to fill, and returns the block. A second
registration of the same (framework, op) is an error; an op without one is
:class:`TwinUnsupported`, naming the op.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

FRAMEWORKS = ("gluon", "torch")
PLAN = "plan"  # the framework-free stage: a spec layer's attributes as step arguments

ParamMap = Dict[str, Any]  # the symbol's parameter name -> the twin's parameter or tensor


class TwinUnsupported(Exception):
    """This spec has something a twin does not reproduce; the message says what."""


@dataclasses.dataclass
class TwinStep:
    op: str                       # the layer's MXNet op, as the spec writes it
    name: str                     # the layer's node name (its parameters are <name>_weight, ...)
    refs: Optional[List[str]]     # what it reads: earlier layers or inputs; None = previous
    args: Dict[str, Any]


@dataclasses.dataclass
class LayerView:
    """What a plan function reads of one spec layer: parsed attributes and the symbol's
    shapes (batch 1) by name."""
    index: int
    op: str
    name: str
    attrs: Dict[str, Any]
    shapes: Dict[str, Tuple[int, ...]]

    def unsupported(self, what: str) -> TwinUnsupported:
        return TwinUnsupported(f"layer {self.index} ({self.op}): {what}")

    def out_ndim(self) -> int:
        shape = self.shapes.get(f"{self.name}_output", self.shapes.get(f"{self.name}_output0", ()))
        return len(shape)


@dataclasses.dataclass(frozen=True)
class Plan:
    fn: Callable[[LayerView], Dict[str, Any]]
    known: Tuple[str, ...]  # the attributes the twins reproduce; any other is refused


Builder = Callable[[TwinStep, ParamMap], Any]

_PLANS: Dict[str, Plan] = {}
_BUILDERS: Dict[Tuple[str, str], Builder] = {}


def _refuse_duplicate(table: Dict[Any, Any], key: Any, op: str, fn: Callable[..., Any],
                      what: str) -> None:
    # Two functions for one op would make the winner depend on import order.
    if key in table:
        old = getattr(table[key], "fn", table[key])
        raise ValueError(f"duplicate twin {what} for MXNet op '{op}': "
                         f"{old.__module__}.{old.__name__} and {fn.__module__}.{fn.__name__}")


def register_twin_plan(*ops: str, known: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """Register the plan of MXNet op(s) `ops` (aliases share one function)."""
    def deco(fn: Callable[[LayerView], Dict[str, Any]]) -> Callable[[LayerView], Dict[str, Any]]:
        for op in ops:
            _refuse_duplicate(_PLANS, op, op, fn, "plan")
            _PLANS[op] = Plan(fn, tuple(known))
        return fn
    return deco


def register_twin_op(*ops: str, framework: str) -> Callable[[Builder], Builder]:
    """Register `fn` as the `framework` builder of MXNet op(s) `ops`."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown twin framework {framework!r} (one of {', '.join(FRAMEWORKS)})")

    def deco(fn: Builder) -> Builder:
        for op in ops:
            _refuse_duplicate(_BUILDERS, (framework, op), op, fn, f"{framework} builder")
            _BUILDERS[(framework, op)] = fn
        return fn
    return deco


def _known_ops(framework: str) -> str:
    ops = _PLANS if framework == PLAN else {op for fw, op in _BUILDERS if fw == framework}
    return ", ".join(sorted(ops))


def lookup_plan(op: str, index: int) -> Plan:
    try:
        return _PLANS[op]
    except KeyError:
        raise TwinUnsupported(f"layer {index} is {op}, which the twins do not write "
                              f"(they write: {_known_ops(PLAN)})") from None


def lookup_builder(framework: str, op: str) -> Builder:
    try:
        return _BUILDERS[(framework, op)]
    except KeyError:
        raise TwinUnsupported(f"the {framework} twin does not write {op} "
                              f"(it writes: {_known_ops(framework)})") from None


def registered_twin_ops(framework: Optional[str] = None) -> List[Tuple[str, str]]:
    """(framework, op) of every registered builder, sorted; `framework="plan"` lists plans."""
    if framework == PLAN:
        return [(PLAN, op) for op in sorted(_PLANS)]
    return sorted(key for key in _BUILDERS if framework in (None, key[0]))


# ---------------------------------------------------------------------------------------------
# Attribute parsing: YAML values pass; MXNet-style strings ("(3, 3)", "True") are parsed.


def parse_attr(value: Any) -> Any:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def int_tuple(value: Any, n: int, default: int) -> Tuple[int, ...]:
    """`value` as n ints (a scalar repeats; None or empty is `default` n times)."""
    if value is None:
        return (default,) * n
    value = parse_attr(value)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if value else (default,) * n
    return (int(value),) * n


def map_params(pmap: ParamMap, layer: str, pairs: Dict[str, Any]) -> None:
    """Record the twin's parameters under the symbol's names <layer>_<suffix>; a None value
    (no bias) is left out."""
    pmap.update({f"{layer}_{suffix}": p for suffix, p in pairs.items() if p is not None})
