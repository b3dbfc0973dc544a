"""The one place bench reaches into product internals (nowhere else in bench, or in
tests/benchmarks, imports a private name of another module)."""
from __future__ import annotations

from typing import Any, Dict, Tuple

# TODO(issue 12): these become public in builder/train
from ..builder import _initializer
from ..train import _global_initializer, _optimizer


def param_initializer(init: Dict[str, Any], where: Tuple, spec: Any) -> Any:
    """A layer parameter's `init:` as the mx.init.Initializer a build uses."""
    return _initializer(init, where, spec)


def global_initializer(spec: Any) -> Any:
    """train.initializer as the mx.init.Initializer a build uses."""
    return _global_initializer(spec)


def optimizer_settings(spec: Any, batches_per_epoch: int) -> Tuple[str, Dict[str, Any]]:
    """The optimizer name and parameters (lr scheduler included) a build passes to Module."""
    return _optimizer(spec, batches_per_epoch)
