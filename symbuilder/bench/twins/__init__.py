"""Twins: the spec's architecture written in Gluon and in PyTorch, one registered function
per MXNet op and framework (registry.py), for a supported subset of ops."""
from . import gluon_ops, torch_ops  # noqa: F401  (importing them registers their builders)
from .gluon_twin import gluon_contender, gluon_head, gluon_loss, gluon_twin
from .plan import loss_kind, twin_plan
from .registry import (FRAMEWORKS, TwinStep, TwinUnsupported, register_twin_op,
                       register_twin_plan, registered_twin_ops)
from .torch_twin import TORCH_OPTIMIZERS, torch_available, torch_contender, torch_head, torch_twin

__all__ = ["FRAMEWORKS", "TORCH_OPTIMIZERS", "TwinStep", "TwinUnsupported", "gluon_contender",
           "gluon_head", "gluon_loss", "gluon_twin", "loss_kind", "register_twin_op",
           "register_twin_plan", "registered_twin_ops", "torch_available", "torch_contender",
           "torch_head", "torch_twin", "twin_plan"]
