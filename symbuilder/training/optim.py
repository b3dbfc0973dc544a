"""How a build trains, as public names: the devices, the optimizer by name with its
parameters and lr schedule, the global initializer, and the current learning rate.
bench/ reads the same names, so a benchmark trains exactly as a build does."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import mxnet as mx

from ..graph.checks import check_devices
from ..spec.model import Spec


def contexts(spec: Spec) -> List[mx.Context]:
    """The devices of train.context (graph.checks refused any the machine lacks)."""
    return check_devices(spec)


def lr_scheduler(spec: Spec, batches_per_epoch: int) -> Optional[mx.lr_scheduler.LRScheduler]:
    """The spec's schedule in MXNet's update counts (epochs x batches per epoch)."""
    sched = spec.train.lr_scheduler
    if sched is None:
        return None
    base_lr = float(spec.train.optimizer_params.get("learning_rate", 0.01))
    total = max(1, spec.train.epochs * batches_per_epoch)
    warmup = dict(warmup_steps=sched.warmup_epochs * batches_per_epoch,
                  warmup_begin_lr=sched.warmup_begin_lr, warmup_mode="linear")
    if sched.name == "factor":
        return mx.lr_scheduler.FactorScheduler(step=sched.step_epochs * batches_per_epoch,
                                               factor=sched.factor, base_lr=base_lr, **warmup)
    if sched.name == "multifactor":
        return mx.lr_scheduler.MultiFactorScheduler(
            step=[e * batches_per_epoch for e in sched.epochs], factor=sched.factor,
            base_lr=base_lr, **warmup)
    if sched.name == "poly":
        return mx.lr_scheduler.PolyScheduler(max_update=total, base_lr=base_lr, pwr=sched.power,
                                             final_lr=sched.final_lr, **warmup)
    return mx.lr_scheduler.CosineScheduler(max_update=total, base_lr=base_lr,
                                           final_lr=sched.final_lr, **warmup)


def optimizer_settings(spec: Spec, batches_per_epoch: int) -> Tuple[str, Dict[str, Any]]:
    """The optimizer as a name and parameters, for Module.init_optimizer.

    Passed by name on purpose: Module then creates it with `sym=` and `param_idx2name=`,
    which is how the symbol's __lr_mult__/__wd_mult__ (the input layer's freeze, and any
    layer's params: lr_mult) and MXNet's no-weight-decay-on-biases default reach it, and it
    sets rescale_grad = 1/(bound batch size x dist workers). An Optimizer object created
    here without `sym` silently ignores every multiplier (measured: lr_mult=0 beta/gamma
    moved under sgd in stats: running)."""
    params = dict(spec.train.optimizer_params)
    scheduler = lr_scheduler(spec, batches_per_epoch)
    if scheduler is not None:
        params["lr_scheduler"] = scheduler
    return spec.train.optimizer.lower(), params


def current_lr(module: mx.mod.Module) -> Optional[float]:
    """The learning rate of the next update (the scheduler's, when there is one)."""
    updater = getattr(module, "_updater", None)
    optimizer = updater.optimizer if updater is not None else module._optimizer
    try:
        if optimizer.lr_scheduler is not None:
            return float(optimizer.lr_scheduler(optimizer.num_update))
        return float(optimizer.lr)
    except Exception:  # pragma: no cover - an exotic optimizer without lr
        return None


def global_initializer(spec: Spec) -> mx.init.Initializer:
    """train.initializer as the mx.init.Initializer a build uses."""
    init = dict(spec.train.initializer)
    name = init.pop("name")
    return mx.init.create(name, **init)
