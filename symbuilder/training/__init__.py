"""Module.fit orchestration: calibrate the input layer, train with checkpoints, schedules,
early stopping and a divergence guard, evaluate, and check the freeze.

The input BatchNorm's moving statistics start from the exact statistics of the training
split in both modes: `dataset` keeps them (use_global_stats, beta/gamma also in
fixed_param_names so no optimizer can touch them); `running` lets MXNet's moving averages
move from there (a warm start instead of MXNet's 0/1). After training, every promise about
the input layer is checked; a broken one fails the run.

Nothing here syncs MXNet's engine per batch: metrics accumulate on the device
(symbuilder.metrics) and are read once an epoch, or at most a few times a second when a
progress bar is drawn on a terminal.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .builder import InputLayerNames, build_symbol
from .checkpoints import RunState, RunStore
from .data import SplitData, labels_for, make_iter
from .distributed import pin_aux
from .errors import RunError, mxnet_message
from .metrics import TrainingMetrics, evaluate_arrays, higher_is_better, reported_name
from .progress import ProgressReporter
from .spec.model import CONTEXT_RE, Spec
from .spec.semantics import check_schedule

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

    @property
    def final_metrics(self) -> Dict[str, Dict[str, float]]:
        entry = next((h for h in self.history if h["epoch"] == self.epoch),
                     self.history[-1] if self.history else {})
        return {"train": dict(entry.get("train", {})), "val": dict(entry.get("val", {}))}


class _StopEarly(Exception):
    pass


def contexts(spec: Spec) -> List[mx.Context]:
    """mx.Context objects for train.context; gpu(N) needs an MXNet build that sees N+1 GPUs."""
    out = []
    for i, text in enumerate(spec.train.context):
        kind, index = CONTEXT_RE.match(text).groups()
        if kind == "gpu":
            available = mx.context.num_gpus()
            if int(index) >= available:
                raise spec.error(("train", "context", i) if len(spec.train.context) > 1
                                 else ("train", "context"),
                                 f"{text} requested, but this MXNet sees {available} GPU(s); "
                                 "use cpu(0), or a CUDA build of mxnet on a GPU machine")
            out.append(mx.gpu(int(index)))
        else:
            out.append(mx.cpu(int(index)))
    return out


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every RNG from (seed, epoch): an epoch's dropout masks and any numpy use depend
    on nothing before it, so a resumed run repeats the uninterrupted one."""
    value = (seed * 1_000_003 + epoch * 7919) % (2 ** 31)
    mx.random.seed(value)
    np.random.seed(value)
    random.seed(value)


def calibrate(spec: Spec, data: SplitData) -> Dict[str, Any]:
    """Exact per-channel statistics of the training split (never the validation split), for
    every input that has an input layer, by input name."""
    from .normalize import array_stats
    return {item.name: array_stats(data.train.inputs[item.name])
            for item in spec.all_inputs if item.normalize is not None}


def initial_aux_params(stats: Dict[str, Any]) -> Dict[str, mx.nd.NDArray]:
    """The input layers' moving statistics, set to the calibrated ones (float32)."""
    aux = {}
    for input_name, st in stats.items():
        names = InputLayerNames.for_input(input_name)
        aux[names.moving_mean] = mx.nd.array(st.mean, dtype="float32")
        aux[names.moving_var] = mx.nd.array(st.var, dtype="float32")
    return aux


def fixed_param_names(spec: Spec) -> List[str]:
    """beta/gamma are fixed in the Module too in dataset mode: no backward pass is needed
    there, and grad_req='null' keeps them exact under optimizers that ignore lr_mult
    (adadelta, ftml, ftrl, sgld: FIELD-NOTES). Running mode needs the backward pass, which
    is what updates the moving statistics on CPU."""
    fixed = []
    for item in spec.all_inputs:
        norm = item.normalize
        if norm is not None and norm.freeze and norm.stats == "dataset":
            names = InputLayerNames.for_input(item.name)
            fixed += [names.gamma, names.beta]
    return fixed


def fixed_aux_names(spec: Spec) -> List[str]:
    """Aux states that never change: the moving statistics of dataset-mode input layers
    (use_global_stats). A dist job leaves them out of the averaging, which keeps them
    bit-exact."""
    out = []
    for item in spec.all_inputs:
        if item.normalize is not None and item.normalize.stats == "dataset":
            names = InputLayerNames.for_input(item.name)
            out += [names.moving_mean, names.moving_var]
    return out


def evaluate(spec: Spec, module: mx.mod.Module, dataset: Any, batch_size: int) -> Dict[str, float]:
    """Exact metrics on a dataset: the last batch's padding rows are left out (Module.score
    would count them). A plain forward loop with one device copy per batch: Module.predict
    does the same with more bookkeeping (1.1 ms against 0.7 ms per validation of the breast
    cancer MLP, `make bench`)."""
    it = make_iter(spec, dataset, batch_size=batch_size, shuffle=False)
    parts = []
    for batch in it:
        module.forward(batch, is_train=False)
        out = module.get_outputs()[0]  # the executor's buffer, reused by the next forward
        parts.append((out[:out.shape[0] - batch.pad] if batch.pad else out).copy())
    outputs = parts[0] if len(parts) == 1 else mx.nd.concat(*parts, dim=0)
    return evaluate_arrays(spec.metrics, labels_for(spec, dataset), outputs)


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


def _optimizer(spec: Spec, batches_per_epoch: int) -> Tuple[str, Dict[str, Any]]:
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
    updater = getattr(module, "_updater", None)
    optimizer = updater.optimizer if updater is not None else module._optimizer
    try:
        if optimizer.lr_scheduler is not None:
            return float(optimizer.lr_scheduler(optimizer.num_update))
        return float(optimizer.lr)
    except Exception:  # pragma: no cover - an exotic optimizer without lr
        return None


def _global_initializer(spec: Spec) -> mx.init.Initializer:
    init = dict(spec.train.initializer)
    name = init.pop("name")
    return mx.init.create(name, **init)


def _quiet_logger(verbose: bool) -> logging.Logger:
    logger = logging.getLogger("symbuilder.mxnet")
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    return logger


class _BestTracker:
    """Early stopping's bookkeeping; without early stopping the last epoch is 'best'."""

    def __init__(self, spec: Spec, state: RunState) -> None:
        es = spec.train.early_stopping
        self.enabled = es is not None
        self.metric = reported_name(es.metric) if es else None
        mode = es.mode if es else "max"
        self.maximize = higher_is_better(self.metric or "") if mode == "auto" else mode == "max"
        self.patience = es.patience if es else 0
        self.min_delta = es.min_delta if es else 0.0
        self.best_epoch = state.best_epoch
        self.best_value = state.best_value

    def improved(self, val: Dict[str, float]) -> bool:
        if not self.enabled:
            return True
        value = val[self.metric]
        if self.best_value is None:
            return True
        delta = value - self.best_value if self.maximize else self.best_value - value
        return delta > self.min_delta

    def update(self, epoch: int, val: Dict[str, float]) -> bool:
        """Record epoch (1-based); True if it is the new best."""
        if self.improved(val):
            self.best_epoch = epoch
            self.best_value = val[self.metric] if self.enabled else None
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.enabled and epoch - (self.best_epoch or 0) >= self.patience


def train(spec: Spec, data: SplitData, *, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False,
          run_dir: Optional[str] = None, resume: bool = False,
          bar: Optional[bool] = None, worker: Optional[Any] = None) -> TrainResult:
    """Train the spec's network on `data` through mx.mod.Module.fit.

    `worker` (a symbuilder.distributed.WorkerContext) makes this one worker of a dist_*
    job: its shard of the training split, the job's kvstore, averaged aux states, an
    early stop agreed by all, and checkpoints written by rank 0 only.

    `run_dir` holds resumable checkpoints (every train.checkpoint_every epochs, with the
    optimizer state); `resume=True` continues from its last complete checkpoint.
    """
    say = progress or (lambda line: None)
    if epochs is not None:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
        check_schedule(spec)
    num_epoch = spec.train.epochs
    symbol = build_symbol(spec)
    ctx = contexts(spec)
    stats = calibrate(spec, data)
    for item in spec.all_inputs:
        for c in (stats[item.name].zero_variance_channels() if item.name in stats else []):
            say(f"warning: feature '{_channel_name(item, data, c)}' has zero variance in the "
                f"training data; the input layer divides by sqrt(eps={item.normalize.eps})")

    store = RunStore(run_dir, spec) if run_dir else None
    state = store.load() if (store and resume) else RunState()
    if resume and store and state.epoch == 0:
        say(f"nothing to resume in {run_dir}; starting from epoch 1")
    if state.epoch >= num_epoch and not state.finished_early:
        say(f"the interrupted run already completed {state.epoch} epochs")

    rows = worker.rows(len(data.train)) if worker else len(data.train)
    writes = worker is None or worker.checkpoints  # rank 0 of a *_sync job only
    batch_size = min(spec.train.batch_size, rows)
    seed = spec.train.seed
    seed_epoch(seed, state.epoch)
    batches_per_epoch = -(-rows // batch_size)
    reporter = ProgressReporter(say, total_epochs=num_epoch, batches_per_epoch=batches_per_epoch,
                                batch_size=batch_size, bar=bar)

    def on_epoch_start(epoch: int) -> None:
        seed_epoch(seed, epoch)
        reporter.start_epoch()

    train_iter = make_iter(spec, data.train, batch_size=batch_size, shuffle=True,
                           epoch=state.epoch, on_epoch_start=on_epoch_start,
                           shard=worker.shard if worker else None)
    logger = _quiet_logger(verbose)
    module = mx.mod.Module(symbol, data_names=[item.name for item in spec.all_inputs],
                           label_names=[spec.output.label_name], context=ctx,
                           fixed_param_names=fixed_param_names(spec) or None, logger=logger)
    module.bind(data_shapes=train_iter.provide_data, label_shapes=train_iter.provide_label)
    if state.epoch > 0:
        arg_params, aux_params = store.load_params(state.epoch)
        module.init_params(arg_params=arg_params, aux_params=aux_params, allow_missing=False)
    else:
        module.init_params(initializer=_global_initializer(spec),
                           aux_params=initial_aux_params(stats) or None,
                           allow_missing=True)
    opt_name, opt_params = _optimizer(spec, batches_per_epoch)
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

    metric = TrainingMetrics(spec.metrics)
    tracker = _BestTracker(spec, state)
    history: List[Dict[str, Any]] = list(state.history)
    # Early stopping exports the best epoch: its params are kept (and checkpointed).
    best_holder: Dict[str, Dict[str, mx.nd.NDArray]] = (
        store.load_best() if (store and state.best_epoch and tracker.enabled) else {}) or {}
    stopped = {"early": False}
    local_aux: Dict[str, Any] = {}
    fixed_exact = {k: v for k, v in initial_aux_params(stats).items()
                   if k in set(fixed_aux_names(spec))}

    def on_epoch_end(epoch: int, _sym: Any, arg_params: Dict, aux_params: Dict) -> None:
        seconds = reporter.epoch_seconds()
        if len(ctx) > 1:  # several devices: keep the fixed statistics exact (see pin_aux)
            arg_params, aux_params = pin_aux(module, fixed_exact)
        if worker:  # MXNet never syncs aux states: average them before anyone reads them
            if epoch + 1 == num_epoch:
                worker.finish(module)  # dist_async: validate and export the servers' weights
            local_aux["aux"], aux_params = worker.average_aux(module)
        names_, values = metric.get_global()
        bad = metric.first_bad_batch
        if bad is not None:
            last = store.last_epoch() if store else 0
            where = (f"; the last good checkpoint (epoch {last}) is in {store.folder}"
                     if last else "")
            raise RunError(f"training diverged in epoch {epoch + 1}, batch {bad + 1}: the "
                           f"network's outputs are not finite (NaN or inf); lower the "
                           f"learning rate{where}")
        entry = {"epoch": epoch + 1,
                 "train": {n: float(v) for n, v in zip(names_, values)},
                 "val": evaluate(spec, module, data.val, batch_size),
                 "lr": current_lr(module),
                 "seconds": round(seconds, 4),
                 "samples_per_sec": round(len(data.train) / seconds, 1) if seconds > 0 else None}
        history.append(entry)
        _check_finite(entry)
        is_best = tracker.update(epoch + 1, entry["val"])
        if is_best and tracker.enabled:
            _keep_best(best_holder, arg_params, aux_params)
        stop = tracker.should_stop(epoch + 1)
        if worker:
            stop = worker.any(stop)  # a worker left alone would wait forever in a push
        reporter.epoch_done(entry, best=is_best and tracker.enabled)
        if store and writes:
            store.append_log(entry)
            every = spec.train.checkpoint_every
            if every and ((epoch + 1) % every == 0 or epoch + 1 == num_epoch or stop):
                store.save(module, epoch + 1, RunState(
                    epoch=epoch + 1, history=history, best_epoch=tracker.best_epoch,
                    best_value=tracker.best_value, finished_early=stop),
                    best=(best_holder if is_best and tracker.enabled else None))
        if stop:
            stopped["early"] = True
            raise _StopEarly()

    begin = state.epoch
    if begin < num_epoch and not state.finished_early:
        try:
            with warnings.catch_warnings():
                if not verbose:
                    warnings.simplefilter("ignore")
                module.fit(train_iter, eval_metric=metric, epoch_end_callback=on_epoch_end,
                           batch_end_callback=reporter.batch_done, begin_epoch=begin,
                           num_epoch=num_epoch, kvstore=kvstore)
        except _StopEarly:
            pass
        except mx.base.MXNetError as e:
            raise RunError(f"training failed in MXNet: {mxnet_message(e)}") from None
        finally:
            reporter.close()
    if worker:
        worker.finish(module)
    arg_params, aux_params = module.get_params()
    if worker:
        worker.dump(arg_params, aux_params, local_aux.get("aux"))
    export_epoch = len(history) and history[-1]["epoch"]
    if tracker.enabled and best_holder:
        arg_params, aux_params = best_holder["arg"], best_holder["aux"]
        export_epoch = tracker.best_epoch
        say(f"exporting the best epoch, {export_epoch} ({tracker.metric}="
            f"{tracker.best_value:.4f})")
    report = input_layer_report(spec, arg_params, aux_params, stats)
    return TrainResult(symbol, arg_params, aux_params, int(export_epoch), history, report,
                       epochs_trained=len(history), stopped_early=stopped["early"] or
                       state.finished_early)


def _keep_best(holder: Dict[str, Dict[str, mx.nd.NDArray]], arg_params: Dict,
               aux_params: Dict) -> None:
    # Module.get_params() returns the same NDArrays every epoch, synced in place: copy.
    holder["arg"] = {k: v.copy() for k, v in arg_params.items()}
    holder["aux"] = {k: v.copy() for k, v in aux_params.items()}


def _channel_name(item: Any, data: SplitData, channel: int) -> str:
    columns = data.columns.get(item.name, [])
    if len(item.shape) == 1 and channel < len(columns):
        return columns[channel]
    return f"channel {channel} of input '{item.name}'"


def _check_finite(entry: Dict[str, Any]) -> None:
    for split in ("train", "val"):
        for name, value in entry[split].items():
            if not np.isfinite(value):
                raise RunError(f"training diverged: {split} {name} is {value} after epoch "
                               f"{entry['epoch']}; lower the learning rate")


def input_layer_report(spec: Spec, arg_params: Dict[str, mx.nd.NDArray],
                       aux_params: Dict[str, mx.nd.NDArray], stats: Dict[str, Any]
                       ) -> Dict[str, Dict[str, Any]]:
    """Check every promise about every input layer; RunError if one is broken. The report
    is keyed by input name (inputs without an input layer are absent)."""
    return {item.name: _input_layer_report(spec, item, arg_params, aux_params, stats[item.name])
            for item in spec.all_inputs if item.normalize is not None}


def _input_layer_report(spec: Spec, item: Any, arg_params: Dict[str, mx.nd.NDArray],
                        aux_params: Dict[str, mx.nd.NDArray], stats: Any) -> Dict[str, Any]:
    """Frozen: beta exactly 0 and gamma exactly 1, bit for bit. dataset mode: the moving
    statistics are exactly the calibrated ones (as float32). running mode: they moved off
    their start; the report gives their deviation from the exact statistics."""
    norm = item.normalize
    names = InputLayerNames.for_input(item.name)
    gamma = arg_params[names.gamma].asnumpy()
    beta = arg_params[names.beta].asnumpy()
    moving_mean = aux_params[names.moving_mean].asnumpy().astype(np.float64)
    moving_var = aux_params[names.moving_var].asnumpy().astype(np.float64)
    report: Dict[str, Any] = {
        "stats": norm.stats, "eps": norm.eps, "frozen": norm.freeze,
        "exact_mean": stats.mean.tolist(), "exact_var": stats.var.tolist(),
        "count": int(stats.count),
    }
    if norm.freeze:
        if not (np.all(beta == 0.0) and np.all(gamma == 1.0)):
            raise RunError(
                f"the input layer of '{item.name}' was not frozen: max |beta| = {np.abs(beta).max():.3g}, "
                f"max |gamma - 1| = {np.abs(gamma - 1).max():.3g} (optimizer "
                f"'{spec.train.optimizer}' ignores lr_mult=0)")
    else:
        report["gamma"] = gamma.tolist()
        report["beta"] = beta.tolist()
    if norm.stats == "dataset":
        want_mean = stats.mean.astype(np.float32).astype(np.float64)
        want_var = stats.var.astype(np.float32).astype(np.float64)
        if not (np.array_equal(moving_mean, want_mean) and np.array_equal(moving_var, want_var)):
            raise RunError("the input layer's statistics changed during training "
                           f"(max |moving_mean - exact| = {np.abs(moving_mean - want_mean).max():.3g})")
    else:
        start_mean = stats.mean.astype(np.float32).astype(np.float64)
        start_var = stats.var.astype(np.float32).astype(np.float64)
        if np.array_equal(moving_mean, start_mean) and np.array_equal(moving_var, start_var):
            raise RunError("stats: running, but the moving statistics never moved off their "
                           "start: MXNet did not run the input layer's backward pass")
        scale = np.sqrt(stats.var) + 1e-12
        report["moving_mean"] = moving_mean.tolist()
        report["moving_var"] = moving_var.tolist()
        # mean deviation in units of the feature's std; var deviation relative to var.
        report["mean_deviation_in_std"] = (np.abs(moving_mean - stats.mean) / scale).tolist()
        report["var_relative_deviation"] = (np.abs(moving_var - stats.var)
                                            / np.maximum(stats.var, 1e-12)).tolist()
    return report
