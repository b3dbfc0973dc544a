"""Module.fit orchestration: calibrate the input layer, train, evaluate, check the freeze.

The input BatchNorm's moving statistics start from the exact statistics of the training
split in both modes: `dataset` keeps them (use_global_stats, beta/gamma also in
fixed_param_names so no optimizer can touch them); `running` lets MXNet's moving averages
move from there (a warm start instead of MXNet's 0/1). After training, every promise about
the input layer is checked; a broken one fails the run.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional

import mxnet as mx
import numpy as np

from .builder import InputLayerNames, build_symbol
from .data import SplitData, is_classification, make_iter
from .errors import RunError, mxnet_message
from .spec.model import CONTEXT_RE, Spec

Progress = Callable[[str], None]


@dataclasses.dataclass
class TrainResult:
    symbol: mx.sym.Symbol
    arg_params: Dict[str, mx.nd.NDArray]
    aux_params: Dict[str, mx.nd.NDArray]
    epoch: int                       # epochs trained; the checkpoint's number
    history: List[Dict[str, Any]]    # one entry per epoch: train and val metrics, seconds
    input_stats: Optional[Dict[str, Any]]  # the input layer report (see input_layer_report)

    @property
    def final_metrics(self) -> Dict[str, Dict[str, float]]:
        last = self.history[-1] if self.history else {}
        return {"train": dict(last.get("train", {})), "val": dict(last.get("val", {}))}


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


def seed_everything(seed: int) -> None:
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def calibrate(spec: Spec, data: SplitData) -> Optional[Any]:
    """Exact per-channel statistics of the training split (never the validation split)."""
    if spec.input.normalize is None:
        return None
    from .normalize import array_stats
    return array_stats(data.train.features)


def _metric(spec: Spec) -> mx.metric.EvalMetric:
    return mx.metric.create(spec.metrics)


def _quiet_logger(verbose: bool) -> logging.Logger:
    logger = logging.getLogger("symbuilder.mxnet")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    return logger


def evaluate(spec: Spec, module: mx.mod.Module, dataset: Any, batch_size: int) -> Dict[str, float]:
    """Metrics on a dataset from Module.predict, which strips the last batch's padding."""
    it = make_iter(spec, dataset, batch_size=batch_size, shuffle=False)
    outputs = module.predict(it, always_output_list=True)
    metric = _metric(spec)
    labels = dataset.labels if is_classification(spec) else dataset.labels.reshape(len(dataset), -1)
    metric.update([mx.nd.array(labels)], [outputs[0]])
    return {name: float(value) for name, value in metric.get_name_value()}


def fixed_param_names(spec: Spec) -> List[str]:
    """beta/gamma are fixed in the Module too in dataset mode: no backward pass is needed
    there, and grad_req='null' keeps them exact under optimizers that ignore lr_mult
    (adadelta, ftml, ftrl, sgld: FIELD-NOTES). Running mode needs the backward pass, which
    is what updates the moving statistics on CPU."""
    norm = spec.input.normalize
    if norm is None or not norm.freeze or norm.stats != "dataset":
        return []
    names = InputLayerNames.for_input(spec.input.name)
    return [names.gamma, names.beta]


def train(spec: Spec, data: SplitData, *, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False) -> TrainResult:
    """Train the spec's network on `data` through mx.mod.Module.fit."""
    say = progress or (lambda line: None)
    seed_everything(spec.train.seed)
    symbol = build_symbol(spec)
    ctx = contexts(spec)
    num_epoch = epochs or spec.train.epochs
    stats = calibrate(spec, data)
    aux_params = None
    names = InputLayerNames.for_input(spec.input.name)
    if stats is not None:
        aux_params = {names.moving_mean: mx.nd.array(stats.mean, dtype="float32"),
                      names.moving_var: mx.nd.array(stats.var, dtype="float32")}
        for c in stats.zero_variance_channels():
            say(f"warning: feature '{_channel_name(spec, data, c)}' has zero variance in the "
                f"training data; the input layer divides by sqrt(eps={spec.input.normalize.eps})")

    batch_size = min(spec.train.batch_size, len(data.train))
    train_iter = make_iter(spec, data.train, batch_size=batch_size, shuffle=True)
    module = mx.mod.Module(symbol, data_names=[spec.input.name],
                           label_names=[spec.output.label_name], context=ctx,
                           fixed_param_names=fixed_param_names(spec) or None,
                           logger=_quiet_logger(verbose))
    metric = _metric(spec)
    history: List[Dict[str, Any]] = []
    clock = {"start": time.perf_counter()}

    def on_epoch_end(epoch: int, *_: Any) -> None:
        mx.nd.waitall()
        seconds = time.perf_counter() - clock["start"]
        train_metrics = {n: float(v) for n, v in metric.get_name_value()}
        val_metrics = evaluate(spec, module, data.val, batch_size)
        entry = {"epoch": epoch + 1, "train": train_metrics, "val": val_metrics,
                 "seconds": round(seconds, 4),
                 "samples_per_sec": round(len(data.train) / seconds, 1) if seconds > 0 else None}
        history.append(entry)
        _check_finite(entry, epoch)
        say(_epoch_line(entry, num_epoch))
        clock["start"] = time.perf_counter()

    try:
        module.fit(train_iter, eval_metric=metric, epoch_end_callback=on_epoch_end,
                   kvstore=spec.train.kvstore, optimizer=spec.train.optimizer,
                   optimizer_params=_optimizer_params(spec),
                   initializer=_global_initializer(spec), aux_params=aux_params,
                   allow_missing=True, num_epoch=num_epoch)
    except mx.base.MXNetError as e:
        raise RunError(f"training failed in MXNet: {mxnet_message(e)}") from None
    arg_params, aux = module.get_params()
    report = input_layer_report(spec, arg_params, aux, stats)
    return TrainResult(symbol, arg_params, aux, num_epoch, history, report)


def _channel_name(spec: Spec, data: SplitData, channel: int) -> str:
    if len(spec.input.shape) == 1 and channel < len(data.feature_names):
        return data.feature_names[channel]
    return f"channel {channel}"


def _optimizer_params(spec: Spec) -> Dict[str, Any]:
    params = dict(spec.train.optimizer_params)
    return params


def _global_initializer(spec: Spec) -> mx.init.Initializer:
    init = dict(spec.train.initializer)
    name = init.pop("name")
    return mx.init.create(name, **init)


def _check_finite(entry: Dict[str, Any], epoch: int) -> None:
    for split in ("train", "val"):
        for name, value in entry[split].items():
            if not np.isfinite(value):
                raise RunError(f"training diverged: {split} {name} is {value} after epoch "
                               f"{epoch + 1}; lower the learning rate")


def _epoch_line(entry: Dict[str, Any], total: int) -> str:
    def fmt(metrics: Dict[str, float]) -> str:
        return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    rate = entry.get("samples_per_sec")
    return (f"epoch {entry['epoch']:>{len(str(total))}}/{total}  train {fmt(entry['train'])}  "
            f"val {fmt(entry['val'])}  {entry['seconds']:.2f}s"
            + (f"  {rate:.0f} samples/s" if rate else ""))


def input_layer_report(spec: Spec, arg_params: Dict[str, mx.nd.NDArray],
                       aux_params: Dict[str, mx.nd.NDArray], stats: Optional[Any]
                       ) -> Optional[Dict[str, Any]]:
    """Check every promise about the input layer; RunError if one is broken.

    Frozen: beta exactly 0 and gamma exactly 1, bit for bit. dataset mode: the moving
    statistics are exactly the calibrated ones (as float32). running mode: they moved off
    their start; the report gives their relative deviation from the exact statistics.
    """
    norm = spec.input.normalize
    if norm is None:
        return None
    names = InputLayerNames.for_input(spec.input.name)
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
                f"the input layer was not frozen: max |beta| = {np.abs(beta).max():.3g}, "
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
