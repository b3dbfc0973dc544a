"""The harness: contenders, interleaved rounds, medians and paired ratios, the epoch clock,
and what several contenders compute alike (input statistics, effective lr/wd multipliers)."""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..inputlayer import InputLayerNames
from ..training.optim import lr_scheduler

Say = Callable[[str], None]

HAND_WRITTEN = "hand-written Module.fit"
HAND_WRITTEN_VAL = "hand-written Module.fit + val"
HAND_WRITTEN_EXTRAS = "hand-written Module.fit + val + checkpoint"
SB_TRAINING = "symbuilder train() training only"
SB_AS_BUILT = "symbuilder train() as built"
GLUON = "Gluon twin (hybridized)"
TORCH = "PyTorch twin (CPU, eager)"


@dataclasses.dataclass
class TrainingRun:
    """One timed training run."""
    wall: float                 # seconds for the whole call: setup, epochs and extras
    epoch_seconds: List[float]  # per epoch: the epoch's batches only (engine-synced)
    samples_per_epoch: int

    @property
    def samples(self) -> int:
        return self.samples_per_epoch * len(self.epoch_seconds)


@dataclasses.dataclass
class Contender:
    """A way to train: `run(epochs)` trains from scratch and returns its timings. `twin`
    names the hand-written contender that does the same work (the fair comparison);
    `last` holds what the latest run left (its parameters, for the fairness checks)."""
    name: str
    run: Callable[[int], TrainingRun]
    note: str = ""
    twin: str = ""
    last: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _not_yet(epochs: int) -> TrainingRun:
    raise RuntimeError("a contender's run is set once its closure exists")


def contender(name: str, note: str, twin: str = "") -> Contender:
    """A Contender whose `run` the caller sets next (the run closes over the contender, to
    leave what it trained in `last`)."""
    return Contender(name, _not_yet, note, twin)


@dataclasses.dataclass
class TrainingFigures:
    name: str
    whole_run: float          # samples/s over the whole call, median over repeats
    epoch_loop: float         # samples/s of one epoch's batches, median epoch (first excluded)
    whole_runs: List[float]   # every repeat's whole-run samples/s (for the spread)
    note: str = ""
    twin: str = ""
    ms_per_epoch: float = 0.0  # whole-run seconds / epochs, median over repeats, in ms
    epoch_loops: List[float] = dataclasses.field(default_factory=list)  # per repeat

    def paired(self, other: "TrainingFigures", *, epoch_loop: bool = False) -> float:
        """Median over rounds of this contender's samples/s over `other`'s in the same
        round: a slow phase of a shared machine hits both sides of each ratio alike."""
        mine = self.epoch_loops if epoch_loop else self.whole_runs
        theirs = other.epoch_loops if epoch_loop else other.whole_runs
        return statistics.median(a / b for a, b in zip(mine, theirs))


class EpochClock:
    """Times each epoch's batches: start() when the iterator is reset, stop() in the
    epoch-end callback, after the engine has finished."""

    def __init__(self) -> None:
        self.seconds: List[float] = []
        self._start = time.perf_counter()

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self, *_: Any) -> None:
        mx.nd.waitall()
        self.seconds.append(time.perf_counter() - self._start)


def _median_epoch(runs: Sequence[TrainingRun]) -> float:
    # Epoch 1 carries binding and first-touch costs in some contenders: left out where
    # there is more than one epoch.
    times = [t for r in runs for t in (r.epoch_seconds[1:] or r.epoch_seconds)]
    return statistics.median(times)


def compare_training(contenders: Sequence[Contender], *, epochs: int, repeats: int,
                     warmup_epochs: int = 1, say: Optional[Say] = None) -> List[TrainingFigures]:
    """Run every contender `repeats` times, interleaved (the order rotates each round, so a
    slow phase of a shared machine hits all alike), after one warm-up run each."""
    say = say or (lambda line: None)
    for c in contenders:
        say(f"warm-up: {c.name}")
        c.run(warmup_epochs)
    runs: Dict[str, List[TrainingRun]] = {c.name: [] for c in contenders}
    for r in range(repeats):
        k = r % len(contenders)
        for c in list(contenders[k:]) + list(contenders[:k]):
            gc.collect()
            runs[c.name].append(c.run(epochs))
        say(f"training round {r + 1}/{repeats} done")
    figures = []
    for c in contenders:
        rs = runs[c.name]
        whole = [run.samples / run.wall for run in rs]
        figures.append(TrainingFigures(
            c.name, statistics.median(whole), rs[0].samples_per_epoch / _median_epoch(rs),
            whole, c.note, c.twin,
            1e3 * statistics.median(run.wall / len(run.epoch_seconds) for run in rs),
            [run.samples_per_epoch / _median_epoch([run]) for run in rs]))
    return figures


def input_names(spec: Any) -> List[str]:
    return [item.name for item in spec.all_inputs]


def input_statistics(features: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-channel mean and population variance the way a hand-written script computes them."""
    axes = (0,) + tuple(range(2, features.ndim))
    return {"mean": features.mean(axis=axes, dtype=np.float64),
            "var": features.var(axis=axes, dtype=np.float64)}


def input_layer_moments(spec: Any, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every normalized input layer's moving_mean and moving_var by parameter name, computed
    from the training features as a hand-written script does (input_statistics)."""
    moments = {}
    for item in spec.all_inputs:
        if item.normalize is not None:
            stats = input_statistics(inputs[item.name])
            layer = InputLayerNames.for_input(item.name)
            moments[layer.moving_mean], moments[layer.moving_var] = stats["mean"], stats["var"]
    return moments


def spec_initializer(spec: Any) -> Any:
    """The spec's train.initializer as an mx.init initializer."""
    init = dict(spec.train.initializer)
    return mx.init.create(init.pop("name"), **init)


def optimizer_params(spec: Any, samples: int, batch_size: int) -> Dict[str, Any]:
    """The spec's optimizer_params plus its lr scheduler, stepped per batch of an epoch of
    `samples` samples."""
    params = dict(spec.train.optimizer_params)
    sched = lr_scheduler(spec, -(-samples // batch_size))
    if sched is not None:
        params["lr_scheduler"] = sched
    return params


def effective_multipliers(spec: Any, symbol: Any) -> Dict[str, Tuple[float, float]]:
    """(lr_mult, wd_mult) of every parameter as Module's optimizer applies them: created
    by name with sym= and param_idx2name, so the symbol's __lr_mult__/__wd_mult__ and
    MXNet's no-weight-decay-on-names-not-ending-in-_weight/_gamma default both count."""
    skip = set(input_names(spec)) | {spec.output.label_name}
    params = [n for n in symbol.list_arguments() if n not in skip]
    opt = mx.optimizer.create(spec.train.optimizer.lower(), sym=symbol,
                              param_idx2name=dict(enumerate(params)),
                              **dict(spec.train.optimizer_params))
    return {n: (float(opt.lr_mult.get(n, 1.0)), float(opt.wd_mult.get(n, 1.0)))
            for n in params}
