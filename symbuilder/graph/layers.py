"""Spec -> mx.sym graph: the input layers, the layer DAG, the loss head (no shapes yet).

Every node gets an explicit, stable name; parameter keys (fc1_weight), ONNX node names and
error messages all derive from it. graph.shapes infers and checks the shapes.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from ..errors import mxnet_message
from ..inputlayer import InputLayerNames, build_input, cast_name
from ..spec.names import layer_names  # re-exported: the graph's node names are the spec's
from ..spec.catalog import AttrError, check_attrs
from ..spec.catalog_suggest import suggest_text
from ..spec.model import Spec
from ..spec.semantics import make_initializer


def param_initializer(init: Dict[str, Any], where: Tuple, spec: Spec) -> mx.init.Initializer:
    """A layer parameter's `init:` as the mx.init.Initializer a build uses."""
    return make_initializer(spec, init, where)


def _layer_attrs(spec: Spec, index: int) -> Dict[str, str]:
    layer = spec.layers[index]
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
            if item.dtype != "float32":
                self.claim(cast_name(item.name), f"the float32 cast of input '{item.name}'",
                           where, f"input '{item.name}' makes its cast node")
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
                kwargs["init"] = param_initializer(pspec.init, ("layers", i, "params", pname, "init"), spec)
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


def build_graph(spec: Spec) -> mx.sym.Symbol:
    """The full training symbol, every name claimed once; shapes are not inferred here."""
    graph = GraphNames(spec)
    graph.claim_inputs()
    body = build_layers(spec, build_inputs(spec), graph)
    graph.claim_head()
    return build_head(spec, body)
