"""The one place bench reaches into how a build trains: the same initializers and optimizer
settings a build uses, from their public homes (graph.layers, training.optim). Nowhere in
bench, or in tests/benchmarks, imports a private name of another module."""
from __future__ import annotations

from ..graph.layers import param_initializer  # a layer parameter's `init:`
from ..training.optim import global_initializer, optimizer_settings

__all__ = ["param_initializer", "global_initializer", "optimizer_settings"]
