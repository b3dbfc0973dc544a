"""The one registry of MXNet-op -> ONNX translations, and the context a translation works with.

A translation is one function decorated with ``@register("MXNetOpName")``. It receives an
:class:`OpContext` (node name, parsed-on-demand attributes, ONNX names of its inputs and
outputs, static shapes, constant parameters, opset) and emits ONNX nodes and constants through
it. All helper plumbing (attribute parsing, naming, opset-dependent operator forms) lives here,
so translations stay short and declarative.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from symbuilder.errors import ExportError
from symbuilder.onnx.opsets import OPSET_RANGE

Translation = Callable[["OpContext"], None]

# One op may have several versions, each for a disjoint inclusive opset range (tf2onnx's pattern):
# op name -> [(lo, hi, translation)], sorted by lo.
_REGISTRY: Dict[str, List[Tuple[int, int, Translation]]] = {}

# Sentinel for "attribute has no default: it must be present".
_REQUIRED = object()


def _describe(fn: Translation) -> str:
    return f"{fn.__module__}.{fn.__name__}"


def register(op_name: str, opsets: Optional[Tuple[int, int]] = None) -> Callable[[Translation], Translation]:
    """Register ``fn`` as the translation of MXNet op ``op_name`` for the inclusive opset range
    ``opsets`` (default: every supported opset). Ranges of one op must not overlap."""
    lo, hi = OPSET_RANGE if opsets is None else opsets

    def deco(fn: Translation) -> Translation:
        if not OPSET_RANGE[0] <= lo <= hi <= OPSET_RANGE[1]:
            raise ExportError(f"translation {_describe(fn)} of '{op_name}': opsets ({lo}, {hi}) are not a range "
                              f"within the supported {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
        versions = _REGISTRY.setdefault(op_name, [])
        for a, b, other in versions:
            if lo <= b and a <= hi:
                raise ExportError(
                    f"duplicate ONNX translation for MXNet op '{op_name}' at opsets {max(a, lo)}..{min(b, hi)}: "
                    f"{_describe(other)} and {_describe(fn)}"
                )
        versions.append((lo, hi, fn))
        versions.sort(key=lambda v: v[0])
        return fn

    return deco


def _loaded() -> Dict[str, List[Tuple[int, int, Translation]]]:
    """The registry with every translation module imported (they register on import; importing
    them here, not at the top, avoids the cycle translation -> registry -> translation)."""
    from symbuilder.onnx import all_ops  # noqa: F401
    return _REGISTRY


def registered_ops(opset: Optional[int] = None) -> List[str]:
    """The MXNet op names that have a translation (at ``opset``, or at any opset), sorted."""
    return sorted(op for op, versions in _loaded().items()
                  if opset is None or any(lo <= opset <= hi for lo, hi, _ in versions))


def opset_ranges(op_name: str) -> List[Tuple[int, int]]:
    """The inclusive opset ranges of the versions of ``op_name``'s translation, lowest first."""
    return [(lo, hi) for lo, hi, _ in _loaded().get(op_name, [])]


def ranges_text(op_name: str) -> str:
    """``13..17, 18..21``: the opset ranges of ``op_name``'s versions, for messages."""
    return ", ".join(f"{lo}..{hi}" for lo, hi in opset_ranges(op_name))


def find(op_name: str, opset: Optional[int] = None) -> Optional[Translation]:
    """The version of ``op_name``'s translation that covers ``opset`` (None: the newest), or None."""
    versions = _loaded().get(op_name, [])
    if opset is None:
        return versions[-1][2] if versions else None
    return next((fn for lo, hi, fn in versions if lo <= opset <= hi), None)


def lookup(op_name: str, node_name: str, opset: Optional[int] = None) -> Translation:
    """The translation of ``op_name`` at ``opset`` (None: at any opset); ExportError naming the op,
    the node and what is known otherwise."""
    fn = find(op_name, opset)
    if fn is not None:
        return fn
    if op_name in _loaded():
        raise ExportError(
            f"no ONNX translation at opset {opset} for MXNet op '{op_name}' (node '{node_name}'); "
            f"it is translated at opsets {ranges_text(op_name)}"
        )
    raise ExportError(
        f"no ONNX translation for MXNet op '{op_name}' (node '{node_name}'); "
        f"symbuilder translates: {', '.join(registered_ops(opset))}"
    )


# --------------------------------------------------------------------------------------------
# Attribute parsing. MXNet writes every attribute as a string ("(3, 3)", "True", "relu", "None").


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_literal(text: str) -> Any:
    """A Python literal from an MXNet attribute string; bare words (e.g. ``relu``) stay strings."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_int_tuple(text: str) -> Tuple[int, ...]:
    value = parse_literal(text)
    if value is None:
        return ()
    if isinstance(value, (int, float)):
        return (int(value),)
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    raise ValueError(f"not a tuple of integers: {text!r}")


# --------------------------------------------------------------------------------------------
# Static shape knowledge of one tensor.


@dataclass(frozen=True)
class TensorInfo:
    """What export knows statically about one MXNet tensor.

    ``shape`` is the shape at the reference batch size (from ``input_shapes``), ``None`` when
    MXNet could not infer it. ``batch_dims[i]`` is True when dim i changes with the batch size
    (found by inferring shapes at two batch sizes); those dims must stay dynamic in the graph.
    """

    shape: Optional[Tuple[int, ...]]
    batch_dims: Tuple[bool, ...] = ()
    dtype: Any = np.float32


@dataclass
class GraphParts:
    """The ONNX pieces emitted so far, shared by every OpContext of one export."""

    nodes: List[onnx.NodeProto] = field(default_factory=list)
    initializers: Dict[str, onnx.TensorProto] = field(default_factory=dict)
    tensor_names: set = field(default_factory=set)
    node_names: set = field(default_factory=set)
    # A graph input whose axis 0 is the batch: where a translation reads the runtime batch size.
    batch_source: Optional[str] = None
    batch_size: Optional[int] = None  # that input's axis 0 at export: the batch shapes were inferred at
    # The value of a tensor computed from stored parameters alone (None if it needs data).
    fold: Callable[[str], Optional[np.ndarray]] = lambda name: None

    def unique(self, base: str, *, node: bool = False) -> str:
        """``base``, or ``base_1``, ``base_2``... when taken (tensors and nodes are separate namespaces)."""
        taken = self.node_names if node else self.tensor_names
        name, k = base, 1
        while name in taken:
            name = f"{base}_{k}"
            k += 1
        taken.add(name)
        return name


# Reduce ops whose ``axes`` moved from an attribute to an input in opset 18 (ReduceSum moved in 13).
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_SINCE_DEFAULT = 18


@dataclass
class OpContext:
    """Everything one translation needs about one MXNet node, and the means to emit ONNX for it."""

    name: str
    op: str
    attrs: Dict[str, str]
    inputs: List[str]
    outputs: List[str]
    input_infos: List[TensorInfo]
    output_infos: List[TensorInfo]
    constants: Mapping[str, np.ndarray]
    opset: int
    dynamic_batch: bool
    parts: GraphParts

    # ---- errors -------------------------------------------------------------------------
    def error(self, message: str) -> ExportError:
        return ExportError(f"cannot export MXNet op '{self.op}' (node '{self.name}'): {message}")

    # ---- attributes ---------------------------------------------------------------------
    def _raw(self, key: str, default: Any) -> Optional[str]:
        text = self.attrs.get(key)
        if text is None or text.strip() == "None":
            if default is _REQUIRED:
                raise self.error(f"attribute '{key}' is required")
            return None
        return text

    def attr_str(self, key: str, default: Any = _REQUIRED) -> Any:
        text = self._raw(key, default)
        return default if text is None else text.strip().strip("'\"")

    def attr_int(self, key: str, default: Any = _REQUIRED) -> Any:
        text = self._raw(key, default)
        if text is None:
            return default
        try:
            return int(float(text))
        except ValueError:
            raise self.error(f"attribute {key}={text!r} is not an integer") from None

    def attr_float(self, key: str, default: Any = _REQUIRED) -> Any:
        text = self._raw(key, default)
        if text is None:
            return default
        try:
            return float(text)
        except ValueError:
            raise self.error(f"attribute {key}={text!r} is not a number") from None

    def attr_bool(self, key: str, default: Any = _REQUIRED) -> Any:
        text = self._raw(key, default)
        if text is None:
            return default
        try:
            return parse_bool(text)
        except ValueError:
            raise self.error(f"attribute {key}={text!r} is not a boolean") from None

    def attr_ints(self, key: str, default: Any = _REQUIRED) -> Any:
        text = self._raw(key, default)
        if text is None:
            return default
        try:
            return parse_int_tuple(text)
        except (ValueError, TypeError):
            raise self.error(f"attribute {key}={text!r} is not a tuple of integers") from None

    def attr_optional_ints(self, key: str, default: Any = _REQUIRED) -> Any:
        """A tuple whose items may be None, e.g. slice's ``begin="(None, 1)"``."""
        text = self._raw(key, default)
        if text is None:
            return default
        value = parse_literal(text)
        if isinstance(value, (int, type(None))):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(v is None or isinstance(v, int) for v in value):
            raise self.error(f"attribute {key}={text!r} is not a tuple of integers or None")
        return tuple(value)

    # ---- shapes -------------------------------------------------------------------------
    def in_shape(self, i: int = 0) -> Tuple[int, ...]:
        shape = self.input_infos[i].shape
        if shape is None:
            raise self.error(f"the shape of input {i} ('{self.inputs[i]}') is unknown; give it in input_shapes")
        return shape

    def constant(self, i: int) -> Optional[np.ndarray]:
        """Input i's value when it is a stored parameter or computed from parameters alone
        (e.g. gluon's packed RNN vector: Reshape + _rnn_param_concat of the stored weights)."""
        value = self.constants.get(self.inputs[i])
        return np.asarray(value) if value is not None else self.parts.fold(self.inputs[i])

    def runtime_batch(self) -> str:
        """A 1-D int64 tensor holding the batch size the model runs at."""
        if self.parts.batch_source is None:
            raise self.error("the graph has no data input to read the batch size from")
        shape = self.node("Shape", [self.parts.batch_source], suffix="batch_shape")
        return self.node("Slice", [shape, self.ints([0], "batch_start"), self.ints([1], "batch_end")],
                         suffix="batch")

    def in_rank(self, i: int = 0) -> int:
        return len(self.in_shape(i))

    def out_shape(self, i: int = 0) -> Tuple[int, ...]:
        shape = self.output_infos[i].shape
        if shape is None:
            raise self.error(f"the shape of output {i} is unknown")
        return shape

    def reshape_target(self, info: TensorInfo) -> List[int]:
        """An ONNX Reshape target for ``info``: static dims written out, the batch-dependent dim as -1.

        Only one dim may depend on the batch size (ONNX Reshape infers at most one).
        """
        if info.shape is None:
            raise self.error("the output shape is unknown")
        target = list(info.shape)
        if self.dynamic_batch:
            dynamic = [i for i, b in enumerate(info.batch_dims) if b]
            if len(dynamic) > 1:
                raise self.error(
                    f"the output shape {info.shape} has {len(dynamic)} dims that change with the batch size; "
                    "export with dynamic_batch=False"
                )
            for i in dynamic:
                target[i] = -1
        return target

    # ---- emitting -----------------------------------------------------------------------
    def fresh(self, suffix: str, *, node: bool = False) -> str:
        """A new tensor (or node) name derived from this MXNet node's name."""
        return self.parts.unique(f"{self.name}/{suffix}", node=node)

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Optional[Sequence[str]] = None,
        *,
        n_outputs: int = 1,
        suffix: Optional[str] = None,
        **attrs: Any,
    ) -> str:
        """Emit one ONNX node; returns the name of its first output.

        Without ``outputs`` the outputs get fresh names ``<mxnet node>/<suffix or op_type>``.
        The node that writes an MXNet output takes the MXNet node's own name, so a reader of the
        ONNX graph finds ``fc1`` where MXNet had ``fc1``.
        """
        if outputs is None:
            outputs = [self.fresh(suffix or op_type) for _ in range(n_outputs)]
        if any(o in self.outputs for o in outputs):
            node_name = self.parts.unique(self.name, node=True)
        else:
            node_name = self.fresh(suffix or op_type, node=True)
        clean = {k: v for k, v in attrs.items() if v is not None}
        self.parts.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=node_name, **clean))
        return outputs[0]

    def const(self, value: Any, suffix: str, dtype: Any = None) -> str:
        """Emit a constant (initializer) named ``<mxnet node>/<suffix>``; returns its name."""
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(suffix)
        self.parts.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def ints(self, values: Sequence[int], suffix: str) -> str:
        """An int64 1-D constant (shapes, axes, starts/ends)."""
        return self.const(np.asarray(list(values), dtype=np.int64), suffix)

    def scalar_like(self, value: float, i: int, suffix: str) -> str:
        """A 0-d constant with the dtype of input i, for scalar arithmetic that must not upcast."""
        return self.const(np.asarray(value, dtype=self.input_infos[i].dtype), suffix)

    # ---- opset-dependent forms, in one place --------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Optional[Sequence[int]], *, keepdims: bool,
               outputs: Optional[Sequence[str]] = None, suffix: Optional[str] = None) -> str:
        """ReduceXxx over ``axes`` (None = all): axes is an input from opset 18 (ReduceSum: 13)."""
        since = _AXES_INPUT_SINCE.get(op_type, _AXES_INPUT_SINCE_DEFAULT)
        if axes is None:
            return self.node(op_type, [x], outputs, suffix=suffix, keepdims=int(keepdims))
        if self.opset >= since:
            return self.node(op_type, [x, self.ints(axes, f"{suffix or op_type}_axes")], outputs,
                             suffix=suffix, keepdims=int(keepdims))
        return self.node(op_type, [x], outputs, suffix=suffix, axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: Sequence[int], outputs: Optional[Sequence[str]] = None,
                  suffix: Optional[str] = None) -> str:
        """Unsqueeze: axes is an input since opset 13 (our minimum)."""
        return self.node("Unsqueeze", [x, self.ints(axes, f"{suffix or 'Unsqueeze'}_axes")], outputs, suffix=suffix)

    def squeeze(self, x: str, axes: Sequence[int], outputs: Optional[Sequence[str]] = None,
                suffix: Optional[str] = None) -> str:
        return self.node("Squeeze", [x, self.ints(axes, f"{suffix or 'Squeeze'}_axes")], outputs, suffix=suffix)

    def transpose(self, x: str, perm: Sequence[int], outputs: Optional[Sequence[str]] = None,
                  suffix: Optional[str] = None) -> str:
        return self.node("Transpose", [x], outputs, suffix=suffix, perm=list(perm))

    def reshape(self, x: str, target: Sequence[int], outputs: Optional[Sequence[str]] = None,
                suffix: Optional[str] = None) -> str:
        return self.node("Reshape", [x, self.ints(target, f"{suffix or 'Reshape'}_shape")], outputs, suffix=suffix)

    def broadcast_param(self, p: str, rank: int, axis: int, suffix: str) -> str:
        """Reshape a per-channel vector (C,) so it broadcasts along ``axis`` of a rank-``rank`` tensor."""
        target = [1] * rank
        target[axis] = -1
        return self.reshape(p, target, suffix=suffix)


def normalize_axis(axis: int, rank: int, ctx: OpContext) -> int:
    if not -rank <= axis < rank:
        raise ctx.error(f"axis {axis} is out of range for a rank-{rank} input")
    return axis % rank
