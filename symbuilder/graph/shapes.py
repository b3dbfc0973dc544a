"""Shape inference over the built graph, a failing layer located by rebuilding layer by
layer, and the checks that shapes and dtypes allow training (32-bit tensor sizes, float32).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from ..errors import mxnet_message
from ..spec.fields import MAX_TENSOR_ELEMENTS
from ..spec.model import Spec
from .layers import build_inputs, build_layers, layer_names


def data_shapes(spec: Spec, batch_size: int = 1) -> Dict[str, Tuple[int, ...]]:
    """Every data input's full shape, batch axis first."""
    return {item.name: (batch_size,) + tuple(item.shape) for item in spec.all_inputs}


def infer_shapes(spec: Spec, symbol: mx.sym.Symbol, batch_size: int = 1) -> Dict[str, Tuple[int, ...]]:
    """Shapes of every argument, aux state and output; a located error at the failing layer."""
    shapes = data_shapes(spec, batch_size)
    try:
        arg_shapes, out_shapes, aux_shapes = _infer_shape(symbol, shapes)
        if arg_shapes is None or any(s is None or 0 in s for s in arg_shapes):
            raise mx.base.MXNetError("shapes could not be fully inferred")
    except mx.base.MXNetError:
        _locate_shape_error(spec, batch_size)
        raise  # pragma: no cover - _locate_shape_error always raises
    result = dict(zip(symbol.list_arguments(), arg_shapes))
    result.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    result.update(zip(symbol.list_outputs(), out_shapes))
    return result


def _infer_shape(symbol: mx.sym.Symbol, shapes: Dict[str, Tuple[int, ...]]) -> Tuple[Any, Any, Any]:
    """symbol.infer_shape, with MXNet's one non-MXNetError failure turned into one."""
    try:
        # MXNet prints its arguments on failure, and warns about a shape it cannot decide;
        # both become the one located error below.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return symbol.infer_shape(**shapes)
    except mx.base.MXNetError:
        raise
    except Exception as e:  # MXNet raises a bare Exception for tensors beyond 2^31 elements
        if "2^31" not in str(e):
            raise
        raise mx.base.MXNetError("a tensor would have 2^31 elements or more, beyond what MXNet's "
                                 "pip builds allow (32-bit tensor sizes)") from None


def _locate_shape_error(spec: Spec, batch_size: int) -> None:
    """Rebuild layer by layer to find the first layer whose shapes fail; raise there.

    Only runs after a failure, so the quadratic cost never touches a valid spec.
    """
    shapes = data_shapes(spec, batch_size)
    starts = build_inputs(spec)
    names = layer_names(spec)
    for i in range(len(spec.layers)):
        partial = dataclasses.replace(spec, layers=spec.layers[: i + 1])
        node = build_layers(partial, starts)
        received = _input_shapes_of(partial, starts, i, shapes)
        try:
            _, out_shapes, _ = _infer_shape(node, shapes)
            if out_shapes is None or any(0 in s for s in out_shapes):
                raise mx.base.MXNetError("output shape could not be inferred")
        except mx.base.MXNetError as e:
            raise spec.error(("layers", i), f"{spec.layers[i].op} '{names[i]}' cannot take input "
                             f"shape {received}: {mxnet_message(e)}") from None
    body = build_layers(spec, starts)
    _, out, _ = _infer_shape(body, shapes)
    label = f" (label shape follows the data: {out[0]})" if out else ""
    raise spec.error(("output",), f"{spec.output.op} cannot take input shape {out[0] if out else '?'}"
                     f"{label}")


def _input_shapes_of(spec: Spec, starts: Dict[str, mx.sym.Symbol], index: int,
                     shapes: Dict[str, Tuple[int, ...]]) -> str:
    """The shapes the layer at `index` receives, as text, for error messages."""
    layer = spec.layers[index]
    names = layer_names(spec)

    def shape_of(ref: str) -> Tuple[int, ...]:
        if ref in starts:
            node = starts[ref]
        else:
            k = names.index(ref)
            node = build_layers(dataclasses.replace(spec, layers=spec.layers[:k + 1]), starts)
        with contextlib.redirect_stdout(io.StringIO()):
            _, out, _ = node.infer_shape_partial(**shapes)
        return tuple(out[0])

    try:
        if layer.inputs is None:
            ref = names[index - 1] if index > 0 else next(iter(starts))
            return str(shape_of(ref))
        return ", ".join(str(shape_of(ref)) for ref in layer.inputs)
    except Exception:  # the message is best effort; the located error is what matters
        return "?"


# MXNet's pip wheels index tensors with 32-bit integers (USE_INT64_TENSOR_SIZE=0); beyond
# 2^31 elements it fails at allocation, after the data is read (fields.MAX_TENSOR_ELEMENTS).
def check_graph(spec: Spec, symbol: mx.sym.Symbol, shapes: Dict[str, Tuple[int, ...]]) -> None:
    """What shape inference accepts but training would not: a tensor that is not float32, a
    tensor of 2^31 elements or more at the training batch size (or a dimension MXNet's
    32-bit shape arithmetic wrapped around), more than 2^31 parameters in all."""
    internals = symbol.get_internals()
    data = data_shapes(spec, 1)
    owner = _output_owners(spec, symbol)
    out_types = _infer_types(spec, internals, data, owner)
    with contextlib.redirect_stdout(io.StringIO()):
        _, out_shapes, _ = internals.infer_shape(**data)
    batch = spec.train.batch_size
    for name, shape in data.items():
        if elements(shape) * batch >= MAX_TENSOR_ELEMENTS:
            raise spec.error(("train", "batch_size"), f"a batch of {batch} samples of input "
                             f"'{name}' has {elements(shape) * batch:,} elements; MXNet's pip "
                             "builds allow fewer than 2^31 per tensor")
    for name, dtype, shape in zip(internals.list_outputs(), out_types or [np.float32] * len(out_shapes),
                                  out_shapes):
        index = owner.get(name)
        if index is None:
            continue
        if np.dtype(dtype) != np.float32:
            layer = spec.layers[index]
            raise spec.error(("layers", index, "dtype" if "dtype" in layer.attrs else "op"),
                             f"{layer.op} outputs {np.dtype(dtype).name}, but the exported graph "
                             "is float32 end to end (the ONNX inputs and outputs, the parity "
                             "check); leave it out, or keep dtype float32")
        _check_size(spec, index, f"its output of shape {tuple(shape)}", shape, batch)
        _check_wrapped(spec, index, symbol, shape)
    params = [n for n in symbol.list_arguments() + symbol.list_auxiliary_states()
              if n not in data and n != spec.output.label_name]
    arg_owner = argument_owners(spec, symbol)
    total = 0
    for name in params:
        n = elements(shapes[name])
        total += n
        if name in arg_owner:
            _check_size(spec, arg_owner[name], f"its parameter '{name}' of shape "
                        f"{tuple(shapes[name])}", shapes[name], 1)
    if total > MAX_TENSOR_ELEMENTS:
        raise spec.error(("layers",), f"the network has {total:,} parameters; symbuilder builds "
                                      f"at most 2^31 ({MAX_TENSOR_ELEMENTS:,})")
    _check_batch_axis(spec, internals, owner, out_shapes)


def _check_batch_axis(spec: Spec, internals: mx.sym.Symbol, owner: Dict[str, int],
                      at_one: List[Tuple[int, ...]]) -> None:
    """Training binds at the batch size, serving at any: every layer must keep the batch as
    axis 0. Shapes inferred at batch 1 alone would let through a layer that only works there
    (a Reshape to a fixed (1, 30)) or that moves the batch axis (stack on axis 0 gives
    (1, N, 30)); both failed only when build bound the Module, with a traceback."""
    infer_shapes(spec, internals, batch_size=2)  # a layer that fails at batch 2, located
    with contextlib.redirect_stdout(io.StringIO()):
        _, at_two, _ = internals.infer_shape(**data_shapes(spec, 2))
    for name, one, two in zip(internals.list_outputs(), at_one, at_two):
        index = owner.get(name)
        if index is None or (one and two and one[0] == 1 and two[0] == 2):
            continue
        layer = spec.layers[index]
        raise spec.error(("layers", index), f"{layer.op} does not keep the batch as axis 0: its "
                         f"output is {tuple(one)} at batch 1 and {tuple(two)} at batch 2; "
                         "symbuilder trains and serves batch-first networks (an axis or a "
                         "shape attribute that names the batch?)")


def _infer_types(spec: Spec, internals: mx.sym.Symbol, data: Dict[str, Tuple[int, ...]],
                 owner: Dict[str, int]) -> Optional[List[Any]]:
    """Every internal output's dtype from float32 inputs; a failure (log_softmax with
    use_length and no length input) is located at the first layer whose type fails."""
    types = {name: "float32" for name in data}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return internals.infer_type(**types)[1]
    except mx.base.MXNetError as e:
        error = e
    for k, name in enumerate(internals.list_outputs()):
        if name not in owner:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                internals[k].infer_type(**{n: t for n, t in types.items()
                                          if n in internals[k].list_arguments()})
        except mx.base.MXNetError as e:
            index = owner[name]
            raise spec.error(("layers", index), f"{spec.layers[index].op}: "
                                                f"{mxnet_message(e)}") from None
    raise spec.error(("output",), f"{spec.output.op}: {mxnet_message(error)}") from None


def elements(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _check_size(spec: Spec, index: int, what: str, shape: Tuple[int, ...], batch: int) -> None:
    if any(int(d) <= 0 for d in shape):
        raise spec.error(("layers", index), f"{spec.layers[index].op}: {what} has a dimension "
                         "MXNet's 32-bit shape arithmetic overflowed; use smaller attributes")
    n = elements(shape) * batch
    if n >= MAX_TENSOR_ELEMENTS:
        at = f" at batch size {batch}" if batch > 1 else ""
        raise spec.error(("layers", index), f"{spec.layers[index].op}: {what} has {n:,} "
                         f"elements{at}; MXNet's pip builds allow fewer than 2^31 per tensor")


def _check_wrapped(spec: Spec, index: int, symbol: mx.sym.Symbol, shape: Tuple[int, ...]) -> None:
    """repeat and tile compute an output dimension as a product in 32 bits, which wraps
    around silently (repeat 143165577 times of 30 values gives 14): recompute it exactly."""
    layer = spec.layers[index]
    if layer.op not in ("repeat", "tile"):
        return
    node = _layer_node(symbol, layer_names(spec)[index])
    with contextlib.redirect_stdout(io.StringIO()):
        _, (in_shape,), _ = node.get_children()[0].infer_shape(**data_shapes(spec, 1))
    if layer.op == "repeat":
        axis = layer.attrs.get("axis")
        repeats = int(layer.attrs["repeats"])
        want = ((elements(in_shape) * repeats,) if axis is None else
                tuple(d * repeats if k == axis % len(in_shape) else d
                      for k, d in enumerate(in_shape)))
    else:
        reps = [int(r) for r in layer.attrs.get("reps", ())]
        ndim = max(len(reps), len(in_shape))
        padded_in = (1,) * (ndim - len(in_shape)) + tuple(in_shape)
        padded_reps = [1] * (ndim - len(reps)) + reps
        want = tuple(d * r for d, r in zip(padded_in, padded_reps))
    if tuple(shape) != want:
        _check_size(spec, index, f"its output of shape {want}", want, spec.train.batch_size)
        raise spec.error(("layers", index), f"{layer.op}: MXNet computes the output shape "
                         f"{tuple(shape)} instead of {want} (32-bit overflow)")


def _layer_node(symbol: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    internals = symbol.get_internals()
    outputs = internals.list_outputs()
    key = f"{name}_output" if f"{name}_output" in outputs else f"{name}_output0"
    return internals[outputs.index(key)]


def _output_owners(spec: Spec, symbol: mx.sym.Symbol) -> Dict[str, int]:
    """Internal output name (fc1_output, split0_output3) -> the index of its layer."""
    index = {name: i for i, name in enumerate(layer_names(spec))}
    out: Dict[str, int] = {}
    for name in symbol.get_internals().list_outputs():
        node, sep, _ = name.rpartition("_output")
        if sep and node in index:
            out[name] = index[node]
    return out


def argument_owners(spec: Spec, symbol: mx.sym.Symbol) -> Dict[str, int]:
    """Parameter name -> the index of the first layer that reads it."""
    index = {name: i for i, name in enumerate(layer_names(spec))}
    nodes = json.loads(symbol.tojson())["nodes"]
    out: Dict[str, int] = {}
    for node in nodes:
        if node["op"] != "null" and node["name"] in index:
            for source in node["inputs"]:
                if nodes[source[0]]["op"] == "null":
                    out.setdefault(nodes[source[0]]["name"], index[node["name"]])
    return out
