"""`train`: the Model trained through mx.mod.Module.fit, from the statistics stage's exact
input statistics, with checkpoints, schedules, early stopping and a divergence guard
(training.loop), then every promise about the input layer checked (inputlayer).

`train` sets up the Module (bind, parameters, optimizer, resumed state) and hands the
epochs to an EpochLoop; it neither builds the graph (it receives the Model) nor calibrates
(it receives the statistics) when pipeline.build calls it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx

from ..data import SplitData
from ..data.iterators import make_iter
from ..graph import Model, build_model
from ..inputlayer import (calibrate, fixed_aux_names, fixed_param_names, initial_aux_params,
                          input_layer_report, pinned_aux)
from ..errors import RunError, mxnet_message
from ..spec.model import Spec
from ..spec.semantics import check_schedule
from .loop import EpochLoop, seed_epoch
from .metrics import TrainingMetrics
from .optim import contexts, global_initializer, optimizer_settings
from .progress import ProgressReporter
from .runstore import RunState, RunStore

Progress = Callable[[str], None]


@dataclasses.dataclass
class TrainResult:
    symbol: mx.sym.Symbol
    arg_params: Dict[str, mx.nd.NDArray]
    aux_params: Dict[str, mx.nd.NDArray]
    epoch: int                       # the exported epoch (1-based): the checkpoint's number
    history: List[Dict[str, Any]]    # one entry per epoch: train and val metrics, lr, seconds
    input_stats: Dict[str, Dict[str, Any]]  # per input: the input layer report
    epochs_trained: int = 0
    stopped_early: bool = False
    model: Optional[Model] = None    # the graph trained (symbol, shapes): export reads it

    @property
    def final_metrics(self) -> Dict[str, Dict[str, float]]:
        entry = next((h for h in self.history if h["epoch"] == self.epoch),
                     self.history[-1] if self.history else {})
        return {"train": dict(entry.get("train", {})), "val": dict(entry.get("val", {}))}


def with_epochs(spec: Spec, epochs: int) -> Spec:
    """The spec with train.epochs replaced (an --epochs override), checked against the lr
    schedule (a warm-up as long as the run is a located mistake)."""
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
    check_schedule(spec)
    return spec


def train(spec: Spec, data: SplitData, *, model: Optional[Model] = None,
          stats: Optional[Dict[str, Any]] = None, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False,
          run_dir: Optional[str] = None, resume: bool = False,
          bar: Optional[bool] = None, worker: Optional[Any] = None) -> TrainResult:
    """Train the spec's network on `data` through mx.mod.Module.fit.

    `model` (graph.build_model(spec)) and `stats` (inputlayer.calibrate(model, data)) are
    what pipeline.build passes; a library caller may leave them out, and may give `epochs`
    to override train.epochs (build applies --epochs itself, before anything is read).

    `worker` (a symbuilder.training.distributed.WorkerContext) makes this one worker of a
    dist_* job: its shard of the training split, the job's kvstore, averaged aux states, an
    early stop agreed by all, and checkpoints written by rank 0 only.

    `run_dir` holds resumable checkpoints (every train.checkpoint_every epochs, with the
    optimizer state); `resume=True` continues from its last complete checkpoint.
    """
    say = progress or (lambda line: None)
    if epochs is not None:
        spec = with_epochs(spec, epochs)
    if model is None:
        model = build_model(spec)
    elif model.spec is not spec:
        raise ValueError("train: `model` was built from another spec")
    ctx = contexts(spec)
    if stats is None:
        stats = calibrate(model, data, say)
    store, state = _run_state(spec, run_dir, resume, say)
    rows = worker.rows(len(data.train)) if worker else len(data.train)
    batch_size = min(spec.train.batch_size, rows)
    seed_epoch(spec.train.seed, state.epoch)
    batches_per_epoch = -(-rows // batch_size)
    reporter = ProgressReporter(say, total_epochs=spec.train.epochs,
                                batches_per_epoch=batches_per_epoch, batch_size=batch_size,
                                bar=bar)

    def on_epoch_start(epoch: int) -> None:
        seed_epoch(spec.train.seed, epoch)
        reporter.start_epoch()

    train_iter = make_iter(spec, data.train, batch_size=batch_size, shuffle=True,
                           epoch=state.epoch, on_epoch_start=on_epoch_start,
                           shard=worker.shard if worker else None)
    module = _bound_module(model, train_iter, ctx, verbose)
    _init_params(module, spec, stats, state, store)
    kvstore = _init_optimizer(module, spec, batches_per_epoch, state, store, worker, run_dir)
    loop = EpochLoop(spec, data, module, metric=TrainingMetrics(spec.metrics),
                     reporter=reporter, store=store, state=state, batch_size=batch_size,
                     pinned=pinned_aux(spec, stats) if len(ctx) > 1 else None, worker=worker)
    loop.run(train_iter, kvstore, verbose)
    arg_params, aux_params, export_epoch = loop.finish(say)
    report = input_layer_report(spec, arg_params, aux_params, stats)
    return TrainResult(model.symbol, arg_params, aux_params, export_epoch, loop.history,
                       report, epochs_trained=len(loop.history),
                       stopped_early=loop.ended_early, model=model)


def _run_state(spec: Spec, run_dir: Optional[str], resume: bool, say: Progress
               ) -> Tuple[Optional[RunStore], RunState]:
    """The run folder and the state to start from (the resumed one, or a fresh one)."""
    store = RunStore(run_dir, spec) if run_dir else None
    state = store.load() if (store and resume) else RunState()
    if resume and store and state.epoch == 0:
        say(f"nothing to resume in {run_dir}; starting from epoch 1")
    if state.epoch >= spec.train.epochs and not state.finished_early:
        say(f"the interrupted run already completed {state.epoch} epochs")
    return store, state


def _quiet_logger(verbose: bool) -> logging.Logger:
    logger = logging.getLogger("symbuilder.mxnet")
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    return logger


def _bound_module(model: Model, train_iter: Any, ctx: List[mx.Context], verbose: bool
                  ) -> mx.mod.Module:
    module = mx.mod.Module(model.symbol, data_names=list(model.data_names),
                           label_names=[model.label_name], context=ctx,
                           fixed_param_names=fixed_param_names(model.spec) or None,
                           logger=_quiet_logger(verbose))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MXNet prints its argument table
            module.bind(data_shapes=train_iter.provide_data,
                        label_shapes=train_iter.provide_label)
    except (mx.base.MXNetError, RuntimeError) as e:  # the static checks should catch it first
        raise RunError(f"MXNet could not bind the network at batch "
                       f"{train_iter.batch_size}: {mxnet_message(e)}") from None
    return module


def _init_params(module: mx.mod.Module, spec: Spec, stats: Dict[str, Any], state: RunState,
                 store: Optional[RunStore]) -> None:
    """The resumed epoch's params, or fresh ones with the input layers at the exact stats."""
    if state.epoch > 0:
        arg_params, aux_params = store.load_params(state.epoch)
        module.init_params(arg_params=arg_params, aux_params=aux_params, allow_missing=False)
    else:
        module.init_params(initializer=global_initializer(spec),
                           aux_params=initial_aux_params(stats) or None, allow_missing=True)


def _init_optimizer(module: mx.mod.Module, spec: Spec, batches_per_epoch: int,
                    state: RunState, store: Optional[RunStore], worker: Optional[Any],
                    run_dir: Optional[str]) -> Any:
    """The optimizer (by name: see optimizer_settings) on the job's kvstore, with the
    resumed optimizer state; returns the kvstore Module.fit is given."""
    opt_name, opt_params = optimizer_settings(spec, batches_per_epoch)
    kvstore = worker.kvstore if worker else spec.train.kvstore
    if worker:
        with worker.optimizer_env():
            module.init_optimizer(kvstore=kvstore, optimizer=opt_name,
                                  optimizer_params=opt_params)
        worker.init_keys(module, fixed=fixed_aux_names(spec), start_epoch=state.epoch,
                         run_dir=run_dir)
    else:
        module.init_optimizer(kvstore=spec.train.kvstore, optimizer=opt_name,
                              optimizer_params=opt_params)
    if state.epoch > 0:
        store.load_optimizer(module, state.epoch)
    return kvstore
