"""Spec -> mx.sym graph: the frozen-affine input BatchNorm, the layer DAG, the loss head.

Every node gets an explicit, stable name; parameter keys (fc1_weight), ONNX node names and
error messages all derive from it. Shape inference errors are located at the layer.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import warnings
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .errors import mxnet_message
from .spec.fields import MAX_TENSOR_ELEMENTS
from .spec.model import InputSpec, Spec


@dataclasses.dataclass(frozen=True)
class InputLayerNames:
    """Names of the input BatchNorm's node and its four parameters."""
    node: str
    gamma: str
    beta: str
    moving_mean: str
    moving_var: str

    @classmethod
    def for_input(cls, input_name: str) -> "InputLayerNames":
        node = f"{input_name}_norm"
        return cls(node, f"{node}_gamma", f"{node}_beta", f"{node}_moving_mean",
                   f"{node}_moving_var")


def layer_names(spec: Spec) -> List[str]:
    """The node name of every layer: its own, or a generated `<op><k>` unique in the spec."""
    taken = {layer.name for layer in spec.layers if layer.name}
    taken.update(i.name for i in spec.all_inputs)
    counts: Dict[str, int] = {}
    names = []
    for layer in spec.layers:
        if layer.name:
            names.append(layer.name)
            continue
        base = layer.op.lower().lstrip("_")
        while True:
            k = counts.get(base, 0)
            counts[base] = k + 1
            candidate = f"{base}{k}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names


def _initializer(init: Dict[str, Any], where: Tuple, spec: Spec) -> mx.init.Initializer:
    from .spec.semantics import make_initializer
    return make_initializer(spec, init, where)


def build_input(input_spec: InputSpec) -> mx.sym.Symbol:
    """The data variable followed, unless normalize is none, by the input BatchNorm.

    beta/gamma are explicit Variables with lr_mult=0 and wd_mult=0 and explicit zero/one
    initialisers, so the freeze sits in the symbol JSON and a legacy Module.fit honours it.
    fix_gamma=False: gamma is a real stored parameter that must stay exactly 1, which the
    post-training check can prove bit for bit (fix_gamma=True would hide a drifting gamma
    from MXNet but not from an exporter that reads the stored value: FIELD-NOTES).
    """
    data = mx.sym.Variable(input_spec.name)
    norm = input_spec.normalize
    if norm is None:
        return data
    names = InputLayerNames.for_input(input_spec.name)
    frozen = dict(lr_mult=0, wd_mult=0) if norm.freeze else {}
    gamma = mx.sym.Variable(names.gamma, init=mx.init.One(), **frozen)
    beta = mx.sym.Variable(names.beta, init=mx.init.Zero(), **frozen)
    moving_mean = mx.sym.Variable(names.moving_mean, init=mx.init.Zero())
    moving_var = mx.sym.Variable(names.moving_var, init=mx.init.One())
    return mx.sym.BatchNorm(
        data, gamma=gamma, beta=beta, moving_mean=moving_mean, moving_var=moving_var,
        name=names.node, eps=norm.eps, momentum=norm.momentum, fix_gamma=False,
        use_global_stats=(norm.stats == "dataset"), axis=1)


def _layer_attrs(spec: Spec, index: int) -> Dict[str, str]:
    layer = spec.layers[index]
    try:
        from .spec.catalog import AttrError, check_attrs
    except ImportError:  # pragma: no cover - the catalogue is being written
        return {k: (str(tuple(v)) if isinstance(v, list) else str(v)) for k, v in layer.attrs.items()}
    try:
        return check_attrs(layer.op, layer.attrs)
    except AttrError as e:
        where = ("layers", index) + ((e.key,) if e.key else ("op",))
        raise spec.error(where, e.message) from None


class GraphNames:
    """Every node and variable name the graph has so far, with who made it, so that a name
    made twice (an input called fc1_weight beside layer fc1, a label called like an input)
    is one located error at the second, not MXNet's duplicate-argument shape failure."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.owners: Dict[str, str] = {}

    def claim(self, name: str, owner: str, where: Tuple, what: str = "") -> None:
        if name in self.owners:
            made = f"{what} '{name}', which" if what else f"'{name}', which"
            raise self.spec.error(where, f"{made} is already the name of {self.owners[name]}; "
                                         "rename one of them")
        self.owners[name] = owner

    def claim_inputs(self) -> None:
        for i, item in enumerate(self.spec.all_inputs):
            where = self.spec.input_path(i) + ("name",)
            self.claim(item.name, f"the input '{item.name}'", where)
            if item.normalize is not None:
                names = InputLayerNames.for_input(item.name)
                for name in dataclasses.astuple(names):
                    self.claim(name, f"the input layer of '{item.name}'", where,
                               f"input '{item.name}' makes its input layer's name")

    def claim_layer(self, index: int, name: str, node: mx.sym.Symbol,
                    inputs: List[mx.sym.Symbol]) -> None:
        """The layer's node name and the variables composing it created (its parameters)."""
        layer = self.spec.layers[index]
        where = ("layers", index, "name") if layer.name else ("layers", index)
        self.claim(name, f"layer '{name}' (layers[{index}])", where)
        given = collections.Counter(s.name for s in inputs if s.get_children() is None)
        children = node.get_children()
        for child in (children if children is not None else []):
            if child.get_children() is not None:
                continue
            if given[child.name] > 0:
                given[child.name] -= 1
                continue
            self.claim(child.name, f"the parameter '{child.name}' of layer '{name}' "
                                   f"(layers[{index}])", where,
                       f"layer '{name}' creates the parameter")

    def claim_head(self) -> None:
        out = self.spec.output
        where = ("output", "name")  # located at the output section when the name is the default
        self.claim(out.name, f"the output head '{out.name}'", where)
        self.claim(out.label_name, f"the label of '{out.name}'", where,
                   f"the head '{out.name}' reads its label as")


def build_inputs(spec: Spec) -> Dict[str, mx.sym.Symbol]:
    """Each data input, normalized by its own input layer, by input name."""
    return {item.name: build_input(item) for item in spec.all_inputs}


def build_layers(spec: Spec, starts: Dict[str, mx.sym.Symbol],
                 graph: Optional[GraphNames] = None) -> mx.sym.Symbol:
    """The layer DAG on top of the normalized inputs. Returns the last layer. `graph`, when
    given, has the inputs' names and gets every layer's."""
    names = layer_names(spec)
    produced: Dict[str, mx.sym.Symbol] = dict(starts)
    previous = next(iter(starts.values())) if len(starts) == 1 else None
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        op_fn = getattr(mx.sym, layer.op, None)
        if op_fn is None or layer.op.startswith("__"):
            from .spec.catalog_suggest import suggest_text
            raise spec.error(("layers", i, "op"), f"unknown MXNet operator '{layer.op}'"
                             f"{suggest_text(layer.op, [n for n in dir(mx.sym) if n[:1].isupper()])}")
        if layer.inputs is None:
            if previous is None:
                raise spec.error(("layers", i), f"missing required key 'inputs': with several "
                                 f"inputs ({', '.join(starts)}), the first layer names the ones "
                                 "it reads")
            inputs = [previous]
        else:
            inputs = []
            for j, ref in enumerate(layer.inputs):
                if ref not in produced:
                    later = ref in names[i:]
                    why = ("names this layer or a later one; inputs must come earlier"
                           if later else "is not an earlier layer or input")
                    from .spec.catalog_suggest import suggest_text
                    raise spec.error(("layers", i, "inputs", j),
                                     f"'{ref}' {why}{'' if later else suggest_text(ref, produced)}")
                inputs.append(produced[ref])
        param_vars = {}
        for pname, pspec in layer.params.items():
            kwargs: Dict[str, Any] = {}
            if pspec.lr_mult is not None:
                kwargs["lr_mult"] = pspec.lr_mult
            if pspec.wd_mult is not None:
                kwargs["wd_mult"] = pspec.wd_mult
            if pspec.init is not None:
                kwargs["init"] = _initializer(pspec.init, ("layers", i, "params", pname, "init"), spec)
            param_vars[pname] = mx.sym.Variable(f"{name}_{pname}", **kwargs)
        attrs = _layer_attrs(spec, i)
        try:
            node = op_fn(*inputs, name=name, **param_vars, **attrs)
        except Exception as e:  # MXNetError / TypeError from MXNet's op wrapper
            raise spec.error(("layers", i), f"{layer.op}: {mxnet_message(e)}") from None
        if graph is not None:
            graph.claim_layer(i, name, node, inputs)
        if len(node.list_outputs()) > 1:
            node = node[0]  # multi-output ops (e.g. SliceChannel) feed their first output on
        produced[name] = node
        previous = node
    return previous


def build_head(spec: Spec, body: mx.sym.Symbol) -> mx.sym.Symbol:
    out = spec.output
    label = mx.sym.Variable(out.label_name)
    head_fn = getattr(mx.sym, out.op)
    attrs = {k: (str(v) if not isinstance(v, bool) else str(v)) for k, v in out.attrs.items()}
    try:
        return head_fn(data=body, label=label, name=out.name, **attrs)
    except Exception as e:
        raise spec.error(("output",), f"{out.op}: {mxnet_message(e)}") from None


def build_symbol(spec: Spec, *, check_shapes: bool = True) -> mx.sym.Symbol:
    """The full training symbol: input layer, layers and loss head (with its label variable).

    This is the function a legacy pipeline calls to get the symbol for its own Module code.
    """
    graph = GraphNames(spec)
    graph.claim_inputs()
    body = build_layers(spec, build_inputs(spec), graph)
    graph.claim_head()
    symbol = build_head(spec, body)
    if check_shapes:
        shapes = infer_shapes(spec, symbol)
        check_graph(spec, symbol, shapes)
    return symbol


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


def layer_shapes(spec: Spec, symbol: mx.sym.Symbol) -> List[Dict[str, Any]]:
    """Per node: name, op, output shape (batch 1) and parameter count; for `summary`."""
    internals = symbol.get_internals()
    shapes = data_shapes(spec, 1)
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(**shapes)
    out_by_name = dict(zip(internals.list_outputs(), out_shapes))
    arg_by_name = dict(zip(internals.list_arguments(), arg_shapes))
    aux_by_name = dict(zip(internals.list_auxiliary_states(), aux_shapes))
    nodes = json.loads(symbol.tojson())["nodes"]
    label_names = {spec.output.label_name}
    rows = []
    for node in nodes:
        if node["op"] == "null":
            continue
        name = node["name"]
        params = [nodes[i[0]]["name"] for i in node["inputs"] if nodes[i[0]]["op"] == "null"]
        count = 0
        for p in params:
            if p in label_names or p in shapes:
                continue
            shape = arg_by_name.get(p) or aux_by_name.get(p) or ()
            n = 1
            for d in shape:
                n *= d
            count += n
        out_key = f"{name}_output"
        rows.append({"name": name, "op": node["op"],
                     "shape": tuple(out_by_name.get(out_key, out_by_name.get(f"{name}_output0", ()))),
                     "params": count})
    return rows


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
        if _elements(shape) * batch >= MAX_TENSOR_ELEMENTS:
            raise spec.error(("train", "batch_size"), f"a batch of {batch} samples of input "
                             f"'{name}' has {_elements(shape) * batch:,} elements; MXNet's pip "
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
    arg_owner = _argument_owners(spec, symbol)
    total = 0
    for name in params:
        n = _elements(shapes[name])
        total += n
        if name in arg_owner:
            _check_size(spec, arg_owner[name], f"its parameter '{name}' of shape "
                        f"{tuple(shapes[name])}", shapes[name], 1)
    if total > MAX_TENSOR_ELEMENTS:
        raise spec.error(("layers",), f"the network has {total:,} parameters; symbuilder builds "
                                      f"at most 2^31 ({MAX_TENSOR_ELEMENTS:,})")


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


def _elements(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _check_size(spec: Spec, index: int, what: str, shape: Tuple[int, ...], batch: int) -> None:
    if any(int(d) <= 0 for d in shape):
        raise spec.error(("layers", index), f"{spec.layers[index].op}: {what} has a dimension "
                         "MXNet's 32-bit shape arithmetic overflowed; use smaller attributes")
    n = _elements(shape) * batch
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
        want = ((_elements(in_shape) * repeats,) if axis is None else
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


def _argument_owners(spec: Spec, symbol: mx.sym.Symbol) -> Dict[str, int]:
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
