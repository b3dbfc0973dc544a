"""A spec's layers as twin steps: one registered plan per MXNet op reads the layer's
attributes (and the symbol's shapes) into the arguments both frameworks' builders use."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...graph.layers import layer_names
from ...graph.shapes import infer_shapes
from .registry import (LayerView, TwinStep, TwinUnsupported, int_tuple, lookup_builder,
                       lookup_plan, parse_attr, register_twin_plan)

_CHANNEL_FIRST = (None, "NCW", "NCHW", "NCDHW")
_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softrelu", "softsign")


@register_twin_plan("FullyConnected", known=("num_hidden", "no_bias", "flatten"))
def _fully_connected(layer: LayerView) -> Dict[str, Any]:
    a = layer.attrs
    return dict(units=int(a["num_hidden"]), in_units=int(layer.shapes[f"{layer.name}_weight"][1]),
                bias=not a.get("no_bias", False), flatten=bool(a.get("flatten", True)))


@register_twin_plan("Convolution", known=(
        "kernel", "num_filter", "stride", "pad", "dilate", "num_group", "no_bias", "layout",
        "workspace", "cudnn_tune", "cudnn_off"))
def _convolution(layer: LayerView) -> Dict[str, Any]:
    a = layer.attrs
    kernel = int_tuple(a["kernel"], 0, 1)
    n = len(kernel)
    if a.get("layout") not in _CHANNEL_FIRST:
        raise layer.unsupported(f"layout {a['layout']}")
    groups = int(a.get("num_group", 1))
    return dict(channels=int(a["num_filter"]),
                in_channels=int(layer.shapes[f"{layer.name}_weight"][1]) * groups,
                kernel=kernel, stride=int_tuple(a.get("stride"), n, 1),
                pad=int_tuple(a.get("pad"), n, 0), dilate=int_tuple(a.get("dilate"), n, 1),
                groups=groups, bias=not a.get("no_bias", False))


@register_twin_plan("BatchNorm", known=("eps", "momentum", "fix_gamma", "use_global_stats",
                                        "axis", "cudnn_off"))
def _batch_norm(layer: LayerView) -> Dict[str, Any]:
    a = layer.attrs
    if int(a.get("axis", 1)) != 1:
        raise layer.unsupported(f"axis {a['axis']}")
    return dict(channels=int(layer.shapes[f"{layer.name}_gamma"][0]),
                eps=float(a.get("eps", 1e-3)), momentum=float(a.get("momentum", 0.9)),
                fix_gamma=bool(a.get("fix_gamma", True)),
                use_global_stats=bool(a.get("use_global_stats", False)))


@register_twin_plan("Activation", known=("act_type",))
def _activation(layer: LayerView) -> Dict[str, Any]:
    act_type = layer.attrs["act_type"]
    if act_type not in _ACTIVATIONS:
        raise layer.unsupported(f"act_type {act_type}")
    return dict(act_type=act_type)


@register_twin_plan("LeakyReLU", known=("act_type", "slope"))
def _leaky_relu(layer: LayerView) -> Dict[str, Any]:
    act_type = layer.attrs.get("act_type", "leaky")
    if act_type not in ("leaky", "elu"):
        raise layer.unsupported(f"act_type {act_type}")
    return dict(act_type=act_type, slope=float(layer.attrs.get("slope", 0.25)))


@register_twin_plan("Dropout", known=("p",))
def _dropout(layer: LayerView) -> Dict[str, Any]:
    return dict(p=float(layer.attrs.get("p", 0.5)))


@register_twin_plan("Pooling", known=("pool_type", "kernel", "stride", "pad", "global_pool",
                                      "pooling_convention", "count_include_pad", "layout",
                                      "cudnn_off"))
def _pooling(layer: LayerView) -> Dict[str, Any]:
    a = layer.attrs
    pool_type = a.get("pool_type", "max")
    if pool_type not in ("max", "avg"):
        raise layer.unsupported(f"pool_type {pool_type}")
    n = layer.out_ndim() - 2
    return dict(pool_type=pool_type, dims=n, global_pool=bool(a.get("global_pool", False)),
                kernel=int_tuple(a.get("kernel"), n, 1), stride=int_tuple(a.get("stride"), n, 1),
                pad=int_tuple(a.get("pad"), n, 0),
                ceil=a.get("pooling_convention", "valid") == "full",
                count_include_pad=bool(a.get("count_include_pad", True)))


@register_twin_plan("Flatten", "flatten")
def _flatten(layer: LayerView) -> Dict[str, Any]:
    return {}


@register_twin_plan("elemwise_add", "broadcast_add")
def _add(layer: LayerView) -> Dict[str, Any]:
    return {}


@register_twin_plan("Concat", "concat", known=("dim", "num_args"))
def _concat(layer: LayerView) -> Dict[str, Any]:
    return dict(dim=int(layer.attrs.get("dim", 1)))


def _symbol_shapes(spec: Any, symbol: Any) -> Dict[str, Tuple[int, ...]]:
    """Every parameter's and every internal output's shape at batch 1, by name."""
    shapes = dict(infer_shapes(spec, symbol))
    internals = symbol.get_internals()
    _, outs, _ = internals.infer_shape(**{item.name: (1,) + tuple(item.shape)
                                          for item in spec.all_inputs})
    shapes.update(zip(internals.list_outputs(), outs))
    return shapes


def _plan_layer(i: int, layer: Any, name: str, shapes: Dict[str, Tuple[int, ...]]) -> TwinStep:
    plan = lookup_plan(layer.op, i)
    view = LayerView(i, layer.op, name, {k: parse_attr(v) for k, v in layer.attrs.items()},
                     shapes)
    args = plan.fn(view)
    extra = sorted(set(view.attrs) - set(plan.known))
    if extra:
        raise view.unsupported(f"attribute(s) {', '.join(extra)}")
    if layer.params and any(k not in ("weight", "bias", "gamma", "beta") for k in layer.params):
        raise view.unsupported(f"params {', '.join(layer.params)}")
    return TwinStep(layer.op, name, layer.inputs, args)


def twin_plan(spec: Any, symbol: Any, framework: Optional[str] = None
              ) -> Tuple[List[TwinStep], Dict[str, Tuple[int, ...]]]:
    """The spec's layers as twin steps, and the symbol's shapes (batch 1) by name;
    TwinUnsupported for an op, attribute or head the twins do not reproduce (and, with
    `framework`, for an op that framework's twin has no builder for)."""
    if spec.output.attrs:
        raise TwinUnsupported(f"the head has attributes ({', '.join(spec.output.attrs)})")
    if len(spec.train.context) > 1:
        raise TwinUnsupported("several contexts")
    shapes = _symbol_shapes(spec, symbol)
    steps = [_plan_layer(i, layer, name, shapes)
             for i, (layer, name) in enumerate(zip(spec.layers, layer_names(spec)))]
    if framework is not None:
        for step in steps:
            lookup_builder(framework, step.op)
    return steps, shapes


def loss_kind(spec: Any) -> str:
    """The head as a loss: softmax, l2, logistic or l1."""
    return {"SoftmaxOutput": "softmax", "LinearRegressionOutput": "l2",
            "LogisticRegressionOutput": "logistic", "MAERegressionOutput": "l1"}[spec.output.op]
