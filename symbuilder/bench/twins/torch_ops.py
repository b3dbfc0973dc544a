"""torch builders, one per MXNet op: each returns a torch.nn.Module computing what the op
computes from the step's arguments, and maps its parameters to the symbol's names.

torch is optional: it is imported when a builder runs, not when this module registers them,
so the registry lists the torch builders where torch is not installed too.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from .registry import ParamMap, TwinStep, map_params, register_twin_op


@functools.lru_cache(maxsize=None)
def _classes() -> Any:
    """The module classes the builders need, defined once torch is importable."""
    import torch
    import torch.nn.functional as F

    class MXBatchNorm(torch.nn.Module):
        """MXNet's BatchNorm over axis 1 of any rank: fix_gamma, use_global_stats, and
        MXNet's momentum (the weight of the old running value)."""

        def __init__(self, channels: int, eps: float, momentum: float, fix_gamma: bool,
                     use_global_stats: bool, frozen: bool = False) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(channels),
                                             requires_grad=not (fix_gamma or frozen))
            self.bias = torch.nn.Parameter(torch.zeros(channels), requires_grad=not frozen)
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
            self.eps, self.momentum = eps, 1.0 - momentum
            self.use_global_stats = use_global_stats

        def forward(self, x: Any) -> Any:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training and not self.use_global_stats, self.momentum,
                                self.eps)

    class Fn(torch.nn.Module):
        def __init__(self, fn: Callable[..., Any]) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, *xs: Any) -> Any:
            return self.fn(*xs)

    return MXBatchNorm, Fn


def mx_batch_norm(channels: int, eps: float, momentum: float, *, fix_gamma: bool,
                  use_global_stats: bool, frozen: bool = False) -> Any:
    return _classes()[0](channels, eps, momentum, fix_gamma, use_global_stats, frozen)


def fn_module(fn: Callable[..., Any]) -> Any:
    """A parameter-free module that calls `fn`."""
    return _classes()[1](fn)


def map_batch_norm(pmap: ParamMap, prefix: str, bn: Any) -> None:
    map_params(pmap, prefix, {"gamma": bn.weight, "beta": bn.bias,
                              "moving_mean": bn.running_mean, "moving_var": bn.running_var})


@register_twin_op("FullyConnected", framework="torch")
def _fully_connected(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    a = step.args
    linear = torch.nn.Linear(a["in_units"], a["units"], bias=a["bias"])
    map_params(pmap, step.name, {"weight": linear.weight, "bias": linear.bias})
    return torch.nn.Sequential(torch.nn.Flatten(1), linear) if a["flatten"] else linear


@register_twin_op("Convolution", framework="torch")
def _convolution(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    a = step.args
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(a["kernel"])]
    conv = cls(a["in_channels"], a["channels"], a["kernel"], stride=a["stride"],
               padding=a["pad"], dilation=a["dilate"], groups=a["groups"], bias=a["bias"])
    map_params(pmap, step.name, {"weight": conv.weight, "bias": conv.bias})
    return conv


@register_twin_op("BatchNorm", framework="torch")
def _batch_norm(step: TwinStep, pmap: ParamMap) -> Any:
    a = step.args
    bn = mx_batch_norm(a["channels"], a["eps"], a["momentum"], fix_gamma=a["fix_gamma"],
                       use_global_stats=a["use_global_stats"])
    map_batch_norm(pmap, step.name, bn)
    return bn


@register_twin_op("Activation", framework="torch")
def _activation(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    return {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
            "softrelu": torch.nn.Softplus, "softsign": torch.nn.Softsign}[step.args["act_type"]]()


@register_twin_op("LeakyReLU", framework="torch")
def _leaky_relu(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    a = step.args
    return torch.nn.LeakyReLU(a["slope"]) if a["act_type"] == "leaky" else torch.nn.ELU(a["slope"])


@register_twin_op("Dropout", framework="torch")
def _dropout(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    return torch.nn.Dropout(step.args["p"])


@register_twin_op("Pooling", framework="torch")
def _pooling(step: TwinStep, pmap: ParamMap) -> Any:
    import torch.nn.functional as F
    a = step.args
    n = a["dims"]
    if a["global_pool"]:
        pool = getattr(F, f"adaptive_{a['pool_type']}_pool{n}d")
        return fn_module(lambda x: pool(x, 1))
    if a["pool_type"] == "max":
        pool = getattr(F, f"max_pool{n}d")
        return fn_module(lambda x: pool(x, a["kernel"], a["stride"], a["pad"],
                                        ceil_mode=a["ceil"]))
    pool = getattr(F, f"avg_pool{n}d")
    return fn_module(lambda x: pool(x, a["kernel"], a["stride"], a["pad"], ceil_mode=a["ceil"],
                                    count_include_pad=a["count_include_pad"]))


@register_twin_op("Flatten", "flatten", framework="torch")
def _flatten(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    return torch.nn.Flatten(1)


@register_twin_op("elemwise_add", "broadcast_add", framework="torch")
def _add(step: TwinStep, pmap: ParamMap) -> Any:
    return fn_module(lambda x, y: x + y)


@register_twin_op("Concat", "concat", framework="torch")
def _concat(step: TwinStep, pmap: ParamMap) -> Any:
    import torch
    dim = step.args["dim"]
    return fn_module(lambda *xs: torch.cat(xs, dim=dim))
