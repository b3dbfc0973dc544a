"""The spec's architecture as a Gluon HybridBlock, and the Gluon contender that trains it."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Set, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ...data.iterators import labels_for
from ...graph import build_symbol
from ...spec.metrics import create_metric
from ...graph.layers import layer_names
from ...inputlayer import InputLayerNames, fixed_param_names
from ...training.optim import contexts
from .._product import param_initializer
from ..harness import (GLUON, HAND_WRITTEN, Contender, EpochClock, TrainingRun, contender,
                       effective_multipliers, input_layer_moments, input_names, optimizer_params,
                       spec_initializer)
from . import gluon_ops
from .plan import loss_kind, twin_plan
from .registry import ParamMap, lookup_builder


def _input_norm(item: Any, pmap: ParamMap) -> Any:
    """The frozen-affine input layer: a BatchNorm (beta/gamma stay 0/1), global stats in
    dataset mode."""
    norm = item.normalize
    bn = gluon_ops.batch_norm(int(item.shape[0]), norm.eps, norm.momentum, fix_gamma=False,
                              use_global_stats=norm.stats == "dataset")
    names = InputLayerNames.for_input(item.name)
    pmap.update({names.gamma: bn.gamma, names.beta: bn.beta,
                 names.moving_mean: bn.running_mean, names.moving_var: bn.running_var})
    return bn


def gluon_twin(spec: Any, symbol: Any = None) -> Tuple[Any, Dict[str, Any]]:
    """A HybridBlock with the spec's architecture (input BatchNorms with beta/gamma at 0/1,
    use_global_stats in dataset mode; then the layers), not hybridized or initialized, and
    a map from the symbol's parameter names to its Parameters. The block returns what the
    layers return (the head's input: logits for SoftmaxOutput)."""
    symbol = symbol if symbol is not None else build_symbol(spec)
    steps, _ = twin_plan(spec, symbol, "gluon")
    pmap: ParamMap = {}

    class Twin(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__(prefix="twin_")
            self.input_names = input_names(spec)
            self.steps = steps
            self.norm_keys: List[Optional[str]] = []
            with self.name_scope():
                for k, item in enumerate(spec.all_inputs):
                    key = None if item.normalize is None else f"norm{k}"
                    if key:
                        setattr(self, key, _input_norm(item, pmap))
                    self.norm_keys.append(key)
                for k, step in enumerate(steps):
                    setattr(self, f"layer{k}", lookup_builder("gluon", step.op)(step, pmap))

        def hybrid_forward(self, F: Any, *xs: Any) -> Any:
            produced = {}
            for name, key, x in zip(self.input_names, self.norm_keys, xs):
                produced[name] = getattr(self, key)(x) if key else x
            previous = produced[self.input_names[0]] if len(xs) == 1 else None
            for k, step in enumerate(self.steps):
                ins = [produced[r] for r in step.refs] if step.refs else [previous]
                previous = produced[step.name] = getattr(self, f"layer{k}")(*ins)
            return previous

    return Twin(), pmap


def gluon_head(spec: Any, F: Any, out: Any) -> Any:
    """What the spec's head outputs for the layers' output `out` (softmax probabilities...)."""
    kind = loss_kind(spec)
    if kind == "softmax":
        return F.softmax(out, axis=-1)
    if kind == "logistic":
        return F.sigmoid(out)
    return out


def gluon_loss(spec: Any) -> Any:
    """Per-sample loss, a HybridBlock, whose gradient is the head's (SoftmaxOutput:
    p - onehot; the regression heads sum over outputs, as MXNet's do)."""
    kind = loss_kind(spec)
    if kind == "softmax":
        return gluon.loss.SoftmaxCrossEntropyLoss()

    class HeadLoss(gluon.HybridBlock):
        def hybrid_forward(self, F: Any, out: Any, label: Any) -> Any:
            label = F.reshape_like(label, out)
            if kind == "l2":
                return 0.5 * F.sum(F.square(out - label), axis=1)
            if kind == "l1":
                return F.sum(F.abs(out - label), axis=1)
            return F.sum(F.relu(out) - out * label + F.Activation(-F.abs(out), "softrelu"),
                         axis=1)
    return HeadLoss()


def _per_param_initializers(spec: Any) -> Dict[str, Any]:
    """The initializer of every layer parameter whose spec gives one (`params: {w: {init}}`)."""
    out = {}
    for i, (layer, lname) in enumerate(zip(spec.layers, layer_names(spec))):
        for pname, pspec in layer.params.items():
            if pspec.init is not None:
                out[f"{lname}_{pname}"] = param_initializer(
                    pspec.init, ("layers", i, "params", pname, "init"), spec)
    return out


def gluon_contender(spec: Any, data: Any) -> Contender:
    """The spec's network as a hybridized Gluon HybridBlock (static_alloc, static_shape),
    trained the Gluon way: autograd.record, backward, gluon.Trainer.step, mx.metric
    updated per batch; the same NDArrayIter batches, input statistics, initializer,
    optimizer and effective lr/wd multipliers as the Module contenders; no validation."""
    symbol = build_symbol(spec)
    twin_plan(spec, symbol, "gluon")  # TwinUnsupported now, not inside the timed runs
    names = input_names(spec)
    label_name = spec.output.label_name
    batch_size = min(spec.train.batch_size, len(data.train))
    # Once, outside the timed runs (and a bad per-parameter init fails here, not in a run).
    tuning = dict(multipliers=effective_multipliers(spec, symbol),
                  fixed=set(fixed_param_names(spec)), per_param_init=_per_param_initializers(spec))
    c = contender(GLUON, "HybridBlock and loss hybridized, autograd + gluon.Trainer, mx.metric "
                         "per batch, no validation", twin=HAND_WRITTEN)

    def run(epochs: int) -> TrainingRun:
        seed = spec.train.seed
        mx.random.seed(seed)
        np.random.seed(seed)
        start = time.perf_counter()
        x = {n: data.train.inputs[n] for n in names}
        y = labels_for(spec, data.train)
        net, pmap = _prepared_twin(spec, symbol, x, **tuning)
        trainer = gluon.Trainer(net.collect_params(), spec.train.optimizer.lower(),
                                optimizer_params(spec, len(y), batch_size),
                                kvstore=spec.train.kvstore)
        it = mx.io.NDArrayIter(x, {label_name: y}, batch_size, shuffle=True,
                               last_batch_handle="pad")
        seconds = _gluon_epochs(spec, net, trainer, it, epochs, batch_size)
        mx.nd.waitall()
        wall = time.perf_counter() - start
        c.last["net"], c.last["pmap"] = net, pmap
        return TrainingRun(wall, seconds, len(y))

    c.run = run
    return c


def _prepared_twin(spec: Any, symbol: Any, x: Dict[str, np.ndarray], *,
                   multipliers: Dict[str, Tuple[float, float]], fixed: Set[str],
                   per_param_init: Dict[str, Any]) -> Tuple[Any, ParamMap]:
    """The twin initialized as the Module contenders are (the spec's initializer, its
    per-parameter ones, the input statistics), with the effective lr/wd multipliers and
    fixed parameters, hybridized."""
    ctx = contexts(spec)[0]
    net, pmap = gluon_twin(spec, symbol)
    net.initialize(spec_initializer(spec), ctx=ctx)
    for key, initializer in per_param_init.items():
        pmap[key].initialize(init=initializer, ctx=ctx, force_reinit=True)
    for key, value in input_layer_moments(spec, x).items():
        pmap[key].set_data(mx.nd.array(value))
    for key, param in pmap.items():
        if key in multipliers:
            param.lr_mult, param.wd_mult = multipliers[key]
        if key in fixed:
            param.grad_req = "null"
    net.hybridize(static_alloc=True, static_shape=True)
    return net, pmap


def _gluon_epochs(spec: Any, net: Any, trainer: Any, it: Any, epochs: int,
                  batch_size: int) -> List[float]:
    """Train `epochs` epochs the Gluon way; each epoch's seconds (its batches only)."""
    loss_fn = gluon_loss(spec)
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    metric = mx.metric.CompositeEvalMetric([create_metric(m) for m in spec.metrics])
    clock = EpochClock()
    for epoch in range(epochs):
        if epoch:
            it.reset()
        metric.reset()
        clock.start()
        for batch in it:
            label = batch.label[0]
            with autograd.record():
                out = net(*batch.data)
                loss = loss_fn(out, label)
            loss.backward()
            trainer.step(batch_size)
            metric.update([label], [gluon_head(spec, mx.nd, out)])
        clock.stop()
    return clock.seconds
