"""The MXNet Module contenders: symbuilder's train(), and the Module.fit a user writes by
hand; and the list of contenders a bench runs."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import warnings
from typing import Any, List, Tuple

import mxnet as mx
import numpy as np

from ..data.iterators import labels_for
from ..graph import build_symbol
from ..spec.metrics import create_metric
from ..inputlayer import fixed_param_names
from ..training import train
from ..training.optim import contexts
from ..training.runstore import RunStore
from .harness import (GLUON, HAND_WRITTEN, HAND_WRITTEN_EXTRAS, HAND_WRITTEN_VAL, SB_AS_BUILT,
                      SB_TRAINING, TORCH, Contender, EpochClock, TrainingRun, contender,
                      input_layer_moments, input_names, optimizer_params, spec_initializer)
from .twins import TwinUnsupported, gluon_contender, torch_available, torch_contender


def symbuilder_contender(spec: Any, data: Any, *, as_built: bool) -> Contender:
    """train() as `symbuilder build` runs it (as_built: resumable checkpoints in a run folder
    every train.checkpoint_every epochs, early stopping if the spec has it), or with training
    only (no run folder, no early stopping). Both validate after every epoch: train() always
    does, and that time is outside the epoch-loop figure."""
    if not as_built:
        spec = dataclasses.replace(spec, train=dataclasses.replace(
            spec.train, checkpoint_every=0, early_stopping=None))
    if as_built:
        every = spec.train.checkpoint_every
        note = (f"per-epoch validation; checkpoint every {every} epoch(s): params, optimizer "
                "state, state.json, 2 fsyncs" if every else
                "per-epoch validation, no checkpoints (checkpoint_every: 0)")
    else:
        note = "per-epoch validation, no checkpoints"
    c = contender(SB_AS_BUILT if as_built else SB_TRAINING, note,
                  twin=HAND_WRITTEN_EXTRAS if as_built else HAND_WRITTEN_VAL)

    def run(epochs: int) -> TrainingRun:
        with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
            start = time.perf_counter()
            run_dir = None
            if as_built:  # as pipeline.build does: a fresh run folder
                run_dir = os.path.join(tmp, "run")
                RunStore(run_dir, spec).start_fresh()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = train(spec, data, epochs=epochs, bar=False, run_dir=run_dir)
            mx.nd.waitall()
            wall = time.perf_counter() - start
        c.last["result"] = result
        c.last["arg_params"], c.last["aux_params"] = result.arg_params, result.aux_params
        # train() times each epoch itself, exactly as EpochClock does (iterator reset to
        # epoch end, after waitall).
        return TrainingRun(wall, [h["seconds"] for h in result.history], len(data.train))

    c.run = run
    return c


def _hand_written_kind(validation: bool, checkpoint: bool) -> Tuple[str, str]:
    if checkpoint:
        return HAND_WRITTEN_EXTRAS, "eval_data and do_checkpoint every epoch"
    if validation:
        return HAND_WRITTEN_VAL, "eval_data every epoch"
    return HAND_WRITTEN, "NDArrayIter, mx.metric, no validation"


def hand_written_contender(spec: Any, data: Any, *, validation: bool = False,
                           checkpoint: bool = False) -> Contender:
    """Module.fit as a user writes it without symbuilder: the same symbol (built once,
    outside the clock), NDArrayIter, mx.metric.create(...) metrics (which sync the engine
    per batch), the input layers' statistics from numpy, the same initializer, optimizer
    and fixed parameters, seeded once with mx.random.seed(train.seed). `validation` adds
    eval_data (Module.score every epoch), `checkpoint` mx.callback.do_checkpoint every
    epoch: what `symbuilder build` also does."""
    symbol = build_symbol(spec)
    names = input_names(spec)
    label_name = spec.output.label_name
    batch_size = min(spec.train.batch_size, len(data.train))
    c = contender(*_hand_written_kind(validation, checkpoint))

    def run(epochs: int) -> TrainingRun:
        seed = spec.train.seed
        mx.random.seed(seed)
        np.random.seed(seed)
        with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
            start = time.perf_counter()
            clock = EpochClock()
            x = {n: data.train.inputs[n] for n in names}
            y = labels_for(spec, data.train)
            aux = {k: mx.nd.array(v) for k, v in input_layer_moments(spec, x).items()}
            it = _clocked(mx.io.NDArrayIter(x, {label_name: y}, batch_size, shuffle=True,
                                            last_batch_handle="pad"), clock)
            callbacks: List[Any] = [clock.stop]
            val = None
            if validation or checkpoint:
                val = mx.io.NDArrayIter({n: data.val.inputs[n] for n in names},
                                        {label_name: labels_for(spec, data.val)}, batch_size,
                                        shuffle=False, last_batch_handle="pad")
            if checkpoint:
                callbacks.append(mx.callback.do_checkpoint(os.path.join(tmp, spec.name)))
            initializer, params = spec_initializer(spec), optimizer_params(spec, len(y), batch_size)
            module = mx.mod.Module(symbol, data_names=names, label_names=[label_name],
                                   context=contexts(spec),
                                   fixed_param_names=fixed_param_names(spec) or None)
            clock.start()
            module.fit(it, eval_data=val, eval_metric=mx.metric.CompositeEvalMetric([create_metric(m) for m in spec.metrics]),
                       epoch_end_callback=callbacks, initializer=initializer,
                       aux_params=aux or None, allow_missing=True,
                       optimizer=spec.train.optimizer.lower(), optimizer_params=params,
                       kvstore=spec.train.kvstore, num_epoch=epochs)
            mx.nd.waitall()
            wall = time.perf_counter() - start
        c.last["arg_params"], c.last["aux_params"] = module.get_params()
        return TrainingRun(wall, clock.seconds, len(y))

    c.run = run
    return c


def _clocked(it: Any, clock: EpochClock) -> Any:
    """`it`, whose reset() also starts the epoch clock: Module.fit resets the iterator at
    the end of each epoch, after the epoch-end callbacks (which stop the clock)."""
    reset = it.reset

    def timed_reset() -> None:
        reset()
        clock.start()
    it.reset = timed_reset  # type: ignore[assignment]
    return it


def training_contenders(spec: Any, data: Any) -> List[Contender]:
    """The five MXNet Module contenders, the bare hand-written baseline first."""
    return [hand_written_contender(spec, data),
            symbuilder_contender(spec, data, as_built=False),
            hand_written_contender(spec, data, validation=True),
            hand_written_contender(spec, data, validation=True, checkpoint=True),
            symbuilder_contender(spec, data, as_built=True)]


def twin_contenders(spec: Any, data: Any, *, gluon: bool = True, torch: bool = True
                    ) -> Tuple[List[Contender], List[str]]:
    """The Gluon and PyTorch twins this spec and this machine allow, and why any is missing."""
    out: List[Contender] = []
    skipped: List[str] = []
    if gluon:
        try:
            out.append(gluon_contender(spec, data))
        except TwinUnsupported as e:
            skipped.append(f"{GLUON}: {e}")
    if torch:
        if torch_available() is None:
            skipped.append(f"{TORCH}: torch is not installed")
        else:
            try:
                out.append(torch_contender(spec, data))
            except TwinUnsupported as e:
                skipped.append(f"{TORCH}: {e}")
    return out, skipped
