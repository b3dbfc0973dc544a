"""Gluon builders, one per MXNet op: each returns a HybridBlock computing what the op
computes from the step's arguments, and maps its parameters to the symbol's names."""
from __future__ import annotations

from typing import Any

from mxnet import gluon
from mxnet.gluon import nn

from .registry import ParamMap, TwinStep, map_params, register_twin_op


class _Add(gluon.HybridBlock):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op  # elemwise_add or broadcast_add: the symbol's own op, same shape rules

    def hybrid_forward(self, F: Any, x: Any, y: Any) -> Any:
        return getattr(F, self.op)(x, y)


class _Concat(gluon.HybridBlock):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def hybrid_forward(self, F: Any, *xs: Any) -> Any:
        return F.concat(*xs, dim=self.dim)


def batch_norm(channels: int, eps: float, momentum: float, *, fix_gamma: bool,
               use_global_stats: bool) -> Any:
    """MXNet's BatchNorm over axis 1 (gluon's scale=False is MXNet's fix_gamma)."""
    return nn.BatchNorm(axis=1, momentum=momentum, epsilon=eps, scale=not fix_gamma,
                        use_global_stats=use_global_stats, in_channels=channels)


def map_batch_norm(pmap: ParamMap, prefix: str, bn: Any) -> None:
    map_params(pmap, prefix, {"gamma": bn.gamma, "beta": bn.beta,
                              "moving_mean": bn.running_mean, "moving_var": bn.running_var})


@register_twin_op("FullyConnected", framework="gluon")
def _fully_connected(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    block = nn.Dense(a["units"], use_bias=a["bias"], flatten=a["flatten"], in_units=a["in_units"])
    map_params(pmap, step.name, {"weight": block.weight, "bias": block.bias})
    return block


@register_twin_op("Convolution", framework="gluon")
def _convolution(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    cls = {1: nn.Conv1D, 2: nn.Conv2D, 3: nn.Conv3D}[len(a["kernel"])]
    block = cls(a["channels"], a["kernel"], strides=a["stride"], padding=a["pad"],
                dilation=a["dilate"], groups=a["groups"], use_bias=a["bias"],
                in_channels=a["in_channels"])
    map_params(pmap, step.name, {"weight": block.weight, "bias": block.bias})
    return block


@register_twin_op("BatchNorm", framework="gluon")
def _batch_norm(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    block = batch_norm(a["channels"], a["eps"], a["momentum"], fix_gamma=a["fix_gamma"],
                       use_global_stats=a["use_global_stats"])
    map_batch_norm(pmap, step.name, block)
    return block


@register_twin_op("Activation", framework="gluon")
def _activation(step: TwinStep, pmap: ParamMap) -> Any:
    return nn.Activation(step.args["act_type"])


@register_twin_op("LeakyReLU", framework="gluon")
def _leaky_relu(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    return nn.LeakyReLU(a["slope"]) if a["act_type"] == "leaky" else nn.ELU(a["slope"])


@register_twin_op("Dropout", framework="gluon")
def _dropout(step: TwinStep, pmap: ParamMap) -> Any:
    return nn.Dropout(step.args["p"])


@register_twin_op("Pooling", framework="gluon")
def _pooling(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    kind = "Max" if a["pool_type"] == "max" else "Avg"
    if a["global_pool"]:
        return getattr(nn, f"Global{kind}Pool{a['dims']}D")()
    extra = {} if kind == "Max" else {"count_include_pad": a["count_include_pad"]}
    return getattr(nn, f"{kind}Pool{a['dims']}D")(a["kernel"], a["stride"], a["pad"],
                                                  ceil_mode=a["ceil"], **extra)


@register_twin_op("Flatten", "flatten", framework="gluon")
def _flatten(step: TwinStep, pmap: ParamMap) -> Any:
    return nn.Flatten()


@register_twin_op("elemwise_add", "broadcast_add", framework="gluon")
def _add(step: TwinStep, pmap: ParamMap) -> Any:
    return _Add(step.op)


@register_twin_op("Concat", "concat", framework="gluon")
def _concat(step: TwinStep, pmap: ParamMap) -> Any:
    return _Concat(step.args["dim"])
