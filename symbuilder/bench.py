"""`symbuilder bench`: what symbuilder costs on a user's own spec, as figures.

Training: symbuilder's train() against the code a user writes without it, on the identical
symbol, data, input statistics, initializer and optimizer: a hand-written Module.fit loop
(NDArrayIter, MXNet's own metrics), bare and with the extras a build also does every epoch
(validation; validation and a checkpoint), a hybridized Gluon twin of the same architecture
(gluon.Trainer), and PyTorch on the CPU with the same architecture where torch is installed.
Inference: ONNX Runtime on the export against MXNet Module forward, at batch 1 (latency)
and batch 256 (throughput). One process, contenders interleaved after a warm-up, medians
over repeats; every clock stops after mx.nd.waitall() (reading a metric or an output waits
for MXNet's engine, so a clock stopped earlier measures Python, not training).
"""
from __future__ import annotations

import ast
import dataclasses
import gc
import os
import platform
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

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


@dataclasses.dataclass
class InferenceFigures:
    name: str
    p50_ms: float             # batch 1 latency
    p99_ms: float
    batch: int
    throughput: float         # samples/s at `batch`, median call


class EpochClock:
    """Times each epoch's batches: start() when the iterator is reset, stop() in the
    epoch-end callback, after the engine has finished."""

    def __init__(self) -> None:
        self.seconds: List[float] = []
        self._start = time.perf_counter()

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self, *_: Any) -> None:
        import mxnet as mx
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


def check_benchable(spec: Any) -> None:
    """Refuse, as a located spec error, what one local process cannot benchmark."""
    from .distributed import is_dist
    if is_dist(spec.train.kvstore):
        raise spec.error(("train", "kvstore"), f"bench trains in one process, but "
                         f"train.kvstore is '{spec.train.kvstore}' (a parameter-server job); "
                         "bench it with --set train.kvstore=local")


def _input_names(spec: Any) -> List[str]:
    return [item.name for item in spec.all_inputs]


# ---------------------------------------------------------------------------------------------
# The MXNet Module contenders: symbuilder's train(), and the Module.fit a user writes by hand.


def symbuilder_contender(spec: Any, data: Any, *, as_built: bool) -> Contender:
    """train() as `symbuilder build` runs it (as_built: resumable checkpoints in a run folder
    every train.checkpoint_every epochs, early stopping if the spec has it), or with training
    only (no run folder, no early stopping). Both validate after every epoch: train() always
    does, and that time is outside the epoch-loop figure."""
    from .checkpoints import RunStore
    from .train import train
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
    c = Contender(SB_AS_BUILT if as_built else SB_TRAINING, lambda epochs: None, note,  # type: ignore
                  twin=HAND_WRITTEN_EXTRAS if as_built else HAND_WRITTEN_VAL)

    def run(epochs: int) -> TrainingRun:
        import mxnet as mx
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


def input_statistics(features: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-channel mean and population variance the way a hand-written script computes them."""
    axes = (0,) + tuple(range(2, features.ndim))
    return {"mean": features.mean(axis=axes, dtype=np.float64),
            "var": features.var(axis=axes, dtype=np.float64)}


def hand_written_contender(spec: Any, data: Any, *, validation: bool = False,
                           checkpoint: bool = False) -> Contender:
    """Module.fit as a user writes it without symbuilder: the same symbol (built once,
    outside the clock), NDArrayIter, mx.metric.create(...) metrics (which sync the engine
    per batch), the input layers' statistics from numpy, the same initializer, optimizer
    and fixed parameters, seeded once with mx.random.seed(train.seed). `validation` adds
    eval_data (Module.score every epoch), `checkpoint` mx.callback.do_checkpoint every
    epoch: what `symbuilder build` also does."""
    import mxnet as mx
    from .builder import InputLayerNames, build_symbol
    from .data import labels_for
    from .train import contexts, fixed_param_names, lr_scheduler
    symbol = build_symbol(spec)
    names = _input_names(spec)
    label_name = spec.output.label_name
    batch_size = min(spec.train.batch_size, len(data.train))
    if checkpoint:
        name, note, twin = HAND_WRITTEN_EXTRAS, "eval_data and do_checkpoint every epoch", ""
    elif validation:
        name, note, twin = HAND_WRITTEN_VAL, "eval_data every epoch", ""
    else:
        name, note, twin = HAND_WRITTEN, "NDArrayIter, mx.metric, no validation", ""
    c = Contender(name, lambda epochs: None, note, twin)  # type: ignore[arg-type]

    def run(epochs: int) -> TrainingRun:
        seed = spec.train.seed
        mx.random.seed(seed)
        np.random.seed(seed)
        with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
            start = time.perf_counter()
            clock = EpochClock()
            x = {n: data.train.inputs[n] for n in names}
            y = labels_for(spec, data.train)
            aux = {}
            for item in spec.all_inputs:
                if item.normalize is not None:
                    stats = input_statistics(x[item.name])
                    layer = InputLayerNames.for_input(item.name)
                    aux[layer.moving_mean] = mx.nd.array(stats["mean"])
                    aux[layer.moving_var] = mx.nd.array(stats["var"])
            it = mx.io.NDArrayIter(x, {label_name: y}, batch_size, shuffle=True,
                                   last_batch_handle="pad")
            reset = it.reset

            def timed_reset() -> None:
                reset()
                clock.start()
            it.reset = timed_reset  # type: ignore[assignment]
            callbacks: List[Any] = [clock.stop]
            val = None
            if validation or checkpoint:
                val = mx.io.NDArrayIter({n: data.val.inputs[n] for n in names},
                                        {label_name: labels_for(spec, data.val)}, batch_size,
                                        shuffle=False, last_batch_handle="pad")
            if checkpoint:
                callbacks.append(mx.callback.do_checkpoint(os.path.join(tmp, spec.name)))
            init = dict(spec.train.initializer)
            initializer = mx.init.create(init.pop("name"), **init)
            params = dict(spec.train.optimizer_params)
            sched = lr_scheduler(spec, -(-len(y) // batch_size))
            if sched is not None:
                params["lr_scheduler"] = sched
            module = mx.mod.Module(symbol, data_names=names, label_names=[label_name],
                                   context=contexts(spec),
                                   fixed_param_names=fixed_param_names(spec) or None)
            clock.start()
            module.fit(it, eval_data=val, eval_metric=mx.metric.create(list(spec.metrics)),
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


def _effective_multipliers(spec: Any, symbol: Any) -> Dict[str, Tuple[float, float]]:
    """(lr_mult, wd_mult) of every parameter as Module's optimizer applies them: created
    by name with sym= and param_idx2name, so the symbol's __lr_mult__/__wd_mult__ and
    MXNet's no-weight-decay-on-names-not-ending-in-_weight/_gamma default both count."""
    import mxnet as mx
    skip = set(_input_names(spec)) | {spec.output.label_name}
    params = [n for n in symbol.list_arguments() if n not in skip]
    opt = mx.optimizer.create(spec.train.optimizer.lower(), sym=symbol,
                              param_idx2name=dict(enumerate(params)),
                              **dict(spec.train.optimizer_params))
    return {n: (float(opt.lr_mult.get(n, 1.0)), float(opt.wd_mult.get(n, 1.0)))
            for n in params}


# ---------------------------------------------------------------------------------------------
# Twins: the spec's architecture written in Gluon and in PyTorch (a supported subset of ops).


class TwinUnsupported(Exception):
    """This spec has something a twin does not reproduce; the message says what."""


@dataclasses.dataclass
class TwinStep:
    kind: str                     # dense conv bn act leaky elu dropout pool flatten add concat
    name: str                     # the layer's node name (its parameters are <name>_weight, ...)
    refs: Optional[List[str]]     # what it reads: earlier layers or inputs; None = previous
    args: Dict[str, Any]


def _attr(value: Any) -> Any:
    """A layer attribute as Python: YAML values pass; MXNet-style strings are parsed."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _tuple(value: Any, n: int, default: int) -> Tuple[int, ...]:
    if value is None:
        return (default,) * n
    value = _attr(value)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if value else (default,) * n
    return (int(value),) * n


def twin_plan(spec: Any, symbol: Any) -> Tuple[List[TwinStep], Dict[str, Tuple[int, ...]]]:
    """The spec's layers as twin steps, and the symbol's shapes (batch 1) by name;
    TwinUnsupported for an op, attribute or head the twins do not reproduce."""
    from .builder import infer_shapes, layer_names
    shapes = dict(infer_shapes(spec, symbol))
    internals = symbol.get_internals()
    _, outs, _ = internals.infer_shape(**{item.name: (1,) + tuple(item.shape)
                                          for item in spec.all_inputs})
    shapes.update(zip(internals.list_outputs(), outs))
    if spec.output.attrs:
        raise TwinUnsupported(f"the head has attributes ({', '.join(spec.output.attrs)})")
    if len(spec.train.context) > 1:
        raise TwinUnsupported("several contexts")
    steps = []
    for i, (layer, name) in enumerate(zip(spec.layers, layer_names(spec))):
        a = {k: _attr(v) for k, v in layer.attrs.items()}
        op = layer.op
        known: Tuple[str, ...] = ()

        def out_ndim() -> int:
            return len(shapes.get(f"{name}_output", shapes.get(f"{name}_output0", ())))
        if op == "FullyConnected":
            known = ("num_hidden", "no_bias", "flatten")
            w = shapes[f"{name}_weight"]
            step = TwinStep("dense", name, layer.inputs, dict(
                units=int(a["num_hidden"]), in_units=int(w[1]), bias=not a.get("no_bias", False),
                flatten=bool(a.get("flatten", True))))
        elif op == "Convolution":
            known = ("kernel", "num_filter", "stride", "pad", "dilate", "num_group", "no_bias",
                     "layout", "workspace", "cudnn_tune", "cudnn_off")
            kernel = _tuple(a["kernel"], 0, 1)
            n = len(kernel)
            if a.get("layout") not in (None, "NCW", "NCHW", "NCDHW"):
                raise TwinUnsupported(f"layer {i} ({op}): layout {a['layout']}")
            w = shapes[f"{name}_weight"]
            groups = int(a.get("num_group", 1))
            step = TwinStep("conv", name, layer.inputs, dict(
                channels=int(a["num_filter"]), in_channels=int(w[1]) * groups, kernel=kernel,
                stride=_tuple(a.get("stride"), n, 1), pad=_tuple(a.get("pad"), n, 0),
                dilate=_tuple(a.get("dilate"), n, 1), groups=groups,
                bias=not a.get("no_bias", False)))
        elif op == "BatchNorm":
            known = ("eps", "momentum", "fix_gamma", "use_global_stats", "axis", "cudnn_off")
            if int(a.get("axis", 1)) != 1:
                raise TwinUnsupported(f"layer {i} ({op}): axis {a['axis']}")
            step = TwinStep("bn", name, layer.inputs, dict(
                channels=int(shapes[f"{name}_gamma"][0]), eps=float(a.get("eps", 1e-3)),
                momentum=float(a.get("momentum", 0.9)), fix_gamma=bool(a.get("fix_gamma", True)),
                use_global_stats=bool(a.get("use_global_stats", False))))
        elif op == "Activation":
            known = ("act_type",)
            if a["act_type"] not in ("relu", "sigmoid", "tanh", "softrelu", "softsign"):
                raise TwinUnsupported(f"layer {i} ({op}): act_type {a['act_type']}")
            step = TwinStep("act", name, layer.inputs, dict(act_type=a["act_type"]))
        elif op == "LeakyReLU":
            known = ("act_type", "slope")
            kind = a.get("act_type", "leaky")
            if kind not in ("leaky", "elu"):
                raise TwinUnsupported(f"layer {i} ({op}): act_type {kind}")
            step = TwinStep("leaky" if kind == "leaky" else "elu", name, layer.inputs,
                            dict(slope=float(a.get("slope", 0.25))))
        elif op == "Dropout":
            known = ("p",)
            step = TwinStep("dropout", name, layer.inputs, dict(p=float(a.get("p", 0.5))))
        elif op == "Pooling":
            known = ("pool_type", "kernel", "stride", "pad", "global_pool",
                     "pooling_convention", "count_include_pad", "layout", "cudnn_off")
            pool_type = a.get("pool_type", "max")
            if pool_type not in ("max", "avg"):
                raise TwinUnsupported(f"layer {i} ({op}): pool_type {pool_type}")
            n = out_ndim() - 2
            step = TwinStep("pool", name, layer.inputs, dict(
                pool_type=pool_type, dims=n, global_pool=bool(a.get("global_pool", False)),
                kernel=_tuple(a.get("kernel"), n, 1), stride=_tuple(a.get("stride"), n, 1),
                pad=_tuple(a.get("pad"), n, 0),
                ceil=a.get("pooling_convention", "valid") == "full",
                count_include_pad=bool(a.get("count_include_pad", True))))
        elif op in ("Flatten", "flatten"):
            step = TwinStep("flatten", name, layer.inputs, {})
        elif op in ("elemwise_add", "broadcast_add", "_plus", "_Plus"):
            step = TwinStep("add", name, layer.inputs, {})
        elif op in ("Concat", "concat"):
            known = ("dim", "num_args")
            step = TwinStep("concat", name, layer.inputs, dict(dim=int(a.get("dim", 1))))
        else:
            raise TwinUnsupported(f"layer {i} is {op}, which the twins do not write")
        extra = sorted(set(a) - set(known) - {"num_hidden", "num_filter"})
        if extra:
            raise TwinUnsupported(f"layer {i} ({op}): attribute(s) {', '.join(extra)}")
        if layer.params and any(k not in ("weight", "bias", "gamma", "beta")
                                for k in layer.params):
            raise TwinUnsupported(f"layer {i} ({op}): params {', '.join(layer.params)}")
        steps.append(step)
    return steps, shapes


def _loss_kind(spec: Any) -> str:
    return {"SoftmaxOutput": "softmax", "LinearRegressionOutput": "l2",
            "LogisticRegressionOutput": "logistic", "MAERegressionOutput": "l1"}[spec.output.op]


def gluon_twin(spec: Any, symbol: Any = None) -> Tuple[Any, Dict[str, Any]]:
    """A HybridBlock with the spec's architecture (input BatchNorms with beta/gamma at 0/1,
    use_global_stats in dataset mode; then the layers), not hybridized or initialized, and
    a map from the symbol's parameter names to its Parameters. The block returns what the
    layers return (the head's input: logits for SoftmaxOutput)."""
    from mxnet import gluon
    from mxnet.gluon import nn
    from .builder import InputLayerNames, build_symbol
    symbol = symbol if symbol is not None else build_symbol(spec)
    steps, shapes = twin_plan(spec, symbol)
    pmap: Dict[str, Any] = {}

    def make(step: TwinStep) -> Any:
        a = step.args
        if step.kind == "dense":
            return nn.Dense(a["units"], use_bias=a["bias"], flatten=a["flatten"],
                            in_units=a["in_units"])
        if step.kind == "conv":
            cls = {1: nn.Conv1D, 2: nn.Conv2D, 3: nn.Conv3D}[len(a["kernel"])]
            return cls(a["channels"], a["kernel"], strides=a["stride"], padding=a["pad"],
                       dilation=a["dilate"], groups=a["groups"], use_bias=a["bias"],
                       in_channels=a["in_channels"])
        if step.kind == "bn":
            return nn.BatchNorm(axis=1, momentum=a["momentum"], epsilon=a["eps"],
                                scale=not a["fix_gamma"], use_global_stats=a["use_global_stats"],
                                in_channels=a["channels"])
        if step.kind == "act":
            return nn.Activation(a["act_type"])
        if step.kind == "leaky":
            return nn.LeakyReLU(a["slope"])
        if step.kind == "elu":
            return nn.ELU(a["slope"])
        if step.kind == "dropout":
            return nn.Dropout(a["p"])
        if step.kind == "pool":
            n = a["dims"]
            if a["global_pool"]:
                return getattr(nn, f"Global{'Max' if a['pool_type'] == 'max' else 'Avg'}Pool{n}D")()
            if a["pool_type"] == "max":
                return getattr(nn, f"MaxPool{n}D")(a["kernel"], a["stride"], a["pad"],
                                                   ceil_mode=a["ceil"])
            return getattr(nn, f"AvgPool{n}D")(a["kernel"], a["stride"], a["pad"],
                                               ceil_mode=a["ceil"],
                                               count_include_pad=a["count_include_pad"])
        if step.kind == "flatten":
            return nn.Flatten()
        return None  # add, concat: F ops in hybrid_forward

    class Twin(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__(prefix="twin_")
            self.input_names = _input_names(spec)
            self.steps = steps
            self.norm_keys: List[Optional[str]] = []
            self.layer_keys: List[Optional[str]] = []
            with self.name_scope():
                for k, item in enumerate(spec.all_inputs):
                    norm = item.normalize
                    if norm is None:
                        self.norm_keys.append(None)
                        continue
                    bn = nn.BatchNorm(axis=1, momentum=norm.momentum, epsilon=norm.eps,
                                      use_global_stats=norm.stats == "dataset",
                                      in_channels=int(item.shape[0]))
                    setattr(self, f"norm{k}", bn)
                    self.norm_keys.append(f"norm{k}")
                    names = InputLayerNames.for_input(item.name)
                    pmap.update({names.gamma: bn.gamma, names.beta: bn.beta,
                                 names.moving_mean: bn.running_mean,
                                 names.moving_var: bn.running_var})
                for k, step in enumerate(steps):
                    block = make(step)
                    if block is None:
                        self.layer_keys.append(None)
                        continue
                    setattr(self, f"layer{k}", block)
                    self.layer_keys.append(f"layer{k}")
                    if step.kind in ("dense", "conv"):
                        pmap[f"{step.name}_weight"] = block.weight
                        if block.bias is not None:
                            pmap[f"{step.name}_bias"] = block.bias
                    elif step.kind == "bn":
                        pmap.update({f"{step.name}_gamma": block.gamma,
                                     f"{step.name}_beta": block.beta,
                                     f"{step.name}_moving_mean": block.running_mean,
                                     f"{step.name}_moving_var": block.running_var})

        def hybrid_forward(self, F: Any, *xs: Any) -> Any:
            produced = {}
            for name, key, x in zip(self.input_names, self.norm_keys, xs):
                produced[name] = getattr(self, key)(x) if key else x
            previous = produced[self.input_names[0]] if len(xs) == 1 else None
            for step, key in zip(self.steps, self.layer_keys):
                ins = [produced[r] for r in step.refs] if step.refs else [previous]
                if step.kind == "add":
                    out = F.elemwise_add(ins[0], ins[1])
                elif step.kind == "concat":
                    out = F.concat(*ins, dim=step.args["dim"])
                else:
                    out = getattr(self, key)(ins[0])
                produced[step.name] = out
                previous = out
            return previous

    return Twin(), pmap


def gluon_head(spec: Any, F: Any, out: Any) -> Any:
    """What the spec's head outputs for the layers' output `out` (softmax probabilities...)."""
    kind = _loss_kind(spec)
    if kind == "softmax":
        return F.softmax(out, axis=-1)
    if kind == "logistic":
        return F.sigmoid(out)
    return out


def gluon_loss(spec: Any) -> Any:
    """Per-sample loss, a HybridBlock, whose gradient is the head's (SoftmaxOutput:
    p - onehot; the regression heads sum over outputs, as MXNet's do)."""
    from mxnet import gluon
    kind = _loss_kind(spec)
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


def gluon_contender(spec: Any, data: Any) -> Contender:
    """The spec's network as a hybridized Gluon HybridBlock (static_alloc, static_shape),
    trained the Gluon way: autograd.record, backward, gluon.Trainer.step, mx.metric
    updated per batch; the same NDArrayIter batches, input statistics, initializer,
    optimizer and effective lr/wd multipliers as the Module contenders; no validation."""
    import mxnet as mx
    from mxnet import autograd, gluon
    from .builder import _initializer, build_symbol, layer_names
    from .data import labels_for
    from .train import contexts, fixed_param_names, lr_scheduler
    symbol = build_symbol(spec)
    twin_plan(spec, symbol)  # TwinUnsupported now, not inside the timed runs
    names = _input_names(spec)
    label_name = spec.output.label_name
    batch_size = min(spec.train.batch_size, len(data.train))
    multipliers = _effective_multipliers(spec, symbol)
    fixed = set(fixed_param_names(spec))
    per_param_init = {}
    for i, (layer, lname) in enumerate(zip(spec.layers, layer_names(spec))):
        for pname, pspec in layer.params.items():
            if pspec.init is not None:
                per_param_init[f"{lname}_{pname}"] = _initializer(
                    pspec.init, ("layers", i, "params", pname, "init"), spec)
    c = Contender(GLUON, lambda epochs: None,  # type: ignore[arg-type]
                  "HybridBlock and loss hybridized, autograd + gluon.Trainer, mx.metric per batch, "
                  "no validation",
                  twin=HAND_WRITTEN)

    def run(epochs: int) -> TrainingRun:
        seed = spec.train.seed
        mx.random.seed(seed)
        np.random.seed(seed)
        ctx = contexts(spec)[0]
        start = time.perf_counter()
        net, pmap = gluon_twin(spec, symbol)
        init = dict(spec.train.initializer)
        net.initialize(mx.init.create(init.pop("name"), **init), ctx=ctx)
        for key, initializer in per_param_init.items():
            pmap[key].initialize(init=initializer, ctx=ctx, force_reinit=True)
        x = {n: data.train.inputs[n] for n in names}
        y = labels_for(spec, data.train)
        for item in spec.all_inputs:
            if item.normalize is not None:
                from .builder import InputLayerNames
                stats = input_statistics(x[item.name])
                layer = InputLayerNames.for_input(item.name)
                pmap[layer.moving_mean].set_data(mx.nd.array(stats["mean"]))
                pmap[layer.moving_var].set_data(mx.nd.array(stats["var"]))
        for key, param in pmap.items():
            if key in multipliers:
                param.lr_mult, param.wd_mult = multipliers[key]
            if key in fixed:
                param.grad_req = "null"
        net.hybridize(static_alloc=True, static_shape=True)
        params = dict(spec.train.optimizer_params)
        sched = lr_scheduler(spec, -(-len(y) // batch_size))
        if sched is not None:
            params["lr_scheduler"] = sched
        trainer = gluon.Trainer(net.collect_params(), spec.train.optimizer.lower(), params,
                                kvstore=spec.train.kvstore)
        loss_fn = gluon_loss(spec)
        loss_fn.hybridize(static_alloc=True, static_shape=True)
        metric = mx.metric.create(list(spec.metrics))
        it = mx.io.NDArrayIter(x, {label_name: y}, batch_size, shuffle=True,
                               last_batch_handle="pad")
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
        mx.nd.waitall()
        wall = time.perf_counter() - start
        c.last["net"], c.last["pmap"] = net, pmap
        return TrainingRun(wall, clock.seconds, len(y))

    c.run = run
    return c


def torch_available() -> Optional[str]:
    """torch's version, or None where it is not installed."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install
        return None
    return str(torch.__version__)


def mxnet_threads() -> int:
    """The OpenMP threads MXNet's CPU operators use (OMP_NUM_THREADS, else every core)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


def torch_twin(spec: Any, symbol: Any = None) -> Tuple[Any, Dict[str, Any]]:
    """The spec's architecture as a torch.nn.Module (input BatchNorms with weight/bias
    frozen at 1/0 and, in dataset mode, always the stored statistics), and a map from the
    symbol's parameter names to its tensors. Returns the head's input (logits)."""
    import torch
    import torch.nn.functional as F
    from .builder import InputLayerNames, build_symbol
    symbol = symbol if symbol is not None else build_symbol(spec)
    steps, shapes = twin_plan(spec, symbol)
    pmap: Dict[str, Any] = {}

    class MXBatchNorm(torch.nn.Module):
        """MXNet's BatchNorm over axis 1 of any rank: fix_gamma, use_global_stats, and
        MXNet's momentum (the weight of the old running value)."""

        def __init__(self, channels: int, eps: float, momentum: float, fix_gamma: bool,
                     use_global_stats: bool, frozen: bool = False) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(channels),
                                             requires_grad=not (fix_gamma or frozen))
            self.bias = torch.nn.Parameter(torch.zeros(channels), requires_grad=not frozen)
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
            self.eps, self.momentum = eps, 1.0 - momentum
            self.use_global_stats = use_global_stats

        def forward(self, x: Any) -> Any:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training and not self.use_global_stats, self.momentum,
                                self.eps)

    class Fn(torch.nn.Module):
        def __init__(self, fn: Callable[..., Any]) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, *xs: Any) -> Any:
            return self.fn(*xs)

    def make(step: TwinStep) -> Any:
        a = step.args
        if step.kind == "dense":
            linear = torch.nn.Linear(a["in_units"], a["units"], bias=a["bias"])
            pmap[f"{step.name}_weight"] = linear.weight
            if a["bias"]:
                pmap[f"{step.name}_bias"] = linear.bias
            if not a["flatten"]:
                return linear
            return torch.nn.Sequential(torch.nn.Flatten(1), linear)
        if step.kind == "conv":
            cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(a["kernel"])]
            conv = cls(a["in_channels"], a["channels"], a["kernel"], stride=a["stride"],
                       padding=a["pad"], dilation=a["dilate"], groups=a["groups"],
                       bias=a["bias"])
            pmap[f"{step.name}_weight"] = conv.weight
            if a["bias"]:
                pmap[f"{step.name}_bias"] = conv.bias
            return conv
        if step.kind == "bn":
            bn = MXBatchNorm(a["channels"], a["eps"], a["momentum"], a["fix_gamma"],
                             a["use_global_stats"])
            pmap.update({f"{step.name}_gamma": bn.weight, f"{step.name}_beta": bn.bias,
                         f"{step.name}_moving_mean": bn.running_mean,
                         f"{step.name}_moving_var": bn.running_var})
            return bn
        if step.kind == "act":
            return {"relu": torch.nn.ReLU(), "sigmoid": torch.nn.Sigmoid(),
                    "tanh": torch.nn.Tanh(), "softrelu": torch.nn.Softplus(),
                    "softsign": torch.nn.Softsign()}[a["act_type"]]
        if step.kind == "leaky":
            return torch.nn.LeakyReLU(a["slope"])
        if step.kind == "elu":
            return torch.nn.ELU(a["slope"])
        if step.kind == "dropout":
            return torch.nn.Dropout(a["p"])
        if step.kind == "pool":
            n = a["dims"]
            if a["global_pool"]:
                pool = getattr(F, f"adaptive_{a['pool_type']}_pool{n}d")
                return Fn(lambda x: pool(x, 1))
            if a["pool_type"] == "max":
                pool = getattr(F, f"max_pool{n}d")
                return Fn(lambda x: pool(x, a["kernel"], a["stride"], a["pad"],
                                         ceil_mode=a["ceil"]))
            pool = getattr(F, f"avg_pool{n}d")
            return Fn(lambda x: pool(x, a["kernel"], a["stride"], a["pad"], ceil_mode=a["ceil"],
                                     count_include_pad=a["count_include_pad"]))
        if step.kind == "flatten":
            return torch.nn.Flatten(1)
        if step.kind == "add":
            return Fn(lambda x, y: x + y)
        return Fn(lambda *xs: torch.cat(xs, dim=a["dim"]))

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_names = _input_names(spec)
            norms = []
            for item in spec.all_inputs:
                norm = item.normalize
                if norm is None:
                    norms.append(torch.nn.Identity())
                    continue
                bn = MXBatchNorm(int(item.shape[0]), norm.eps, norm.momentum, False,
                                 norm.stats == "dataset", frozen=norm.freeze)
                names = InputLayerNames.for_input(item.name)
                pmap.update({names.gamma: bn.weight, names.beta: bn.bias,
                             names.moving_mean: bn.running_mean,
                             names.moving_var: bn.running_var})
                norms.append(bn)
            self.norms = torch.nn.ModuleList(norms)
            self.steps = steps
            self.layers = torch.nn.ModuleList([make(step) for step in steps])

        def forward(self, *xs: Any) -> Any:
            produced = {n: norm(x) for n, norm, x in zip(self.input_names, self.norms, xs)}
            previous = produced[self.input_names[0]] if len(xs) == 1 else None
            for step, layer in zip(self.steps, self.layers):
                ins = [produced[r] for r in step.refs] if step.refs else [previous]
                previous = produced[step.name] = layer(*ins)
            return previous

    return Twin(), pmap


def torch_head(spec: Any, out: Any) -> Any:
    import torch
    kind = _loss_kind(spec)
    if kind == "softmax":
        return torch.softmax(out, dim=-1)
    if kind == "logistic":
        return torch.sigmoid(out)
    return out


TORCH_OPTIMIZERS = ("sgd", "nag", "adam")


def torch_contender(spec: Any, data: Any, *, threads: int = 1) -> Contender:
    """The spec's network in PyTorch on the CPU, trained as a PyTorch user does: eager
    forward, loss, backward, optimizer.step, accuracy/loss read per batch (.item()); the
    same batch size, input statistics, optimizer (sgd, nag or adam) and per-parameter
    lr/wd multipliers; torch's default initialisation; the last batch is short, not
    padded; no validation. One thread by default: torch's OpenMP at 2 threads collapsed on
    a shared 2-core machine whose cores were busy (an epoch of the digits CNN took 3.8 s
    instead of 0.2 s, torch alone, measured), while MXNet's small operators are
    single-threaded below OpenMP's threshold anyway."""
    import torch
    import torch.nn.functional as F
    from .builder import InputLayerNames, build_symbol
    from .data import labels_for
    opt_name = spec.train.optimizer.lower()
    if opt_name not in TORCH_OPTIMIZERS:
        raise TwinUnsupported(f"optimizer {spec.train.optimizer} (the PyTorch twin knows "
                              f"{', '.join(TORCH_OPTIMIZERS)})")
    if any(c.startswith("gpu") for c in spec.train.context):
        raise TwinUnsupported("the PyTorch twin runs on the CPU only")
    symbol = build_symbol(spec)
    twin_plan(spec, symbol)
    multipliers = _effective_multipliers(spec, symbol)
    names = _input_names(spec)
    batch_size = min(spec.train.batch_size, len(data.train))
    kind = _loss_kind(spec)
    c = Contender(TORCH, lambda epochs: None,  # type: ignore[arg-type]
                  f"torch {torch_available()}, {threads} thread(s), .item() per batch, "
                  "short last batch, no validation", twin=HAND_WRITTEN)

    def loss_fn(out: Any, label: Any) -> Any:
        if kind == "softmax":
            return F.cross_entropy(out, label)
        label = label.reshape(out.shape)
        if kind == "l2":
            return 0.5 * (out - label).pow(2).sum(1).mean()
        if kind == "l1":
            return (out - label).abs().sum(1).mean()
        return F.binary_cross_entropy_with_logits(out, label, reduction="none").sum(1).mean()

    def run(epochs: int) -> TrainingRun:
        torch.set_num_threads(threads)
        seed = spec.train.seed
        torch.manual_seed(seed)
        start = time.perf_counter()
        net, pmap = torch_twin(spec, symbol)
        xs = [torch.from_numpy(np.ascontiguousarray(data.train.inputs[n], dtype=np.float32))
              for n in names]
        y_np = labels_for(spec, data.train)
        y = torch.from_numpy(y_np.astype(np.int64 if kind == "softmax" else np.float32))
        with torch.no_grad():
            for item in spec.all_inputs:
                if item.normalize is not None:
                    stats = input_statistics(data.train.inputs[item.name])
                    layer = InputLayerNames.for_input(item.name)
                    pmap[layer.moving_mean].copy_(torch.from_numpy(stats["mean"]))
                    pmap[layer.moving_var].copy_(torch.from_numpy(stats["var"]))
        params = dict(spec.train.optimizer_params)
        lr = float(params.get("learning_rate", 0.01))
        wd = float(params.get("wd", 0.0))
        groups = []
        for key, tensor in pmap.items():
            if isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad:
                lr_mult, wd_mult = multipliers.get(key, (1.0, 1.0))
                groups.append({"params": [tensor], "lr": lr * lr_mult,
                               "weight_decay": wd * wd_mult})
        if opt_name == "adam":
            opt = torch.optim.Adam(groups, lr=lr, betas=(float(params.get("beta1", 0.9)),
                                                         float(params.get("beta2", 0.999))),
                                   eps=float(params.get("epsilon", 1e-8)))
        else:
            opt = torch.optim.SGD(groups, lr=lr, momentum=float(params.get("momentum", 0.0)),
                                  nesterov=opt_name == "nag")
        net.train()
        n = len(y)
        generator = torch.Generator().manual_seed(seed)
        seconds = []
        for _ in range(epochs):
            t = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            correct, total_loss = 0, 0.0
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                label = y[idx]
                out = net(*[x[idx] for x in xs])
                loss = loss_fn(out, label)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(idx)
                if kind == "softmax":
                    correct += int((out.argmax(1) == label).sum().item())
            seconds.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        c.last["net"], c.last["pmap"] = net, pmap
        c.last["train"] = {"loss": total_loss / n, "accuracy": correct / n}
        return TrainingRun(wall, seconds, n)

    c.run = run
    return c


# ---------------------------------------------------------------------------------------------
# Inference


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def compare_inference(spec: Any, symbol: Any, arg_params: Dict, aux_params: Dict,
                      samples: Any, *, repeats: int, calls: int = 200,
                      batch: int = 256, batch_calls: int = 10,
                      say: Optional[Say] = None) -> List[InferenceFigures]:
    """ONNX Runtime (the export, all graph optimisations, default threads) against MXNet
    Module forward (bound for inference), both from numpy batches to a numpy result.
    `samples`: an array (one input) or arrays by input name. Batch 1: `calls`
    single-sample calls per round; batch `batch`: `batch_calls` calls per round; rounds
    interleaved, after a warm-up."""
    import mxnet as mx
    import onnxruntime as ort
    from .exporting import to_numpy_params
    from .onnx import to_onnx
    say = say or (lambda line: None)
    names = _input_names(spec)
    if not isinstance(samples, dict):
        if len(names) != 1:
            raise ValueError(f"several inputs ({', '.join(names)}): pass samples by name")
        samples = {names[0]: samples}
    shapes = {item.name: tuple(item.shape) for item in spec.all_inputs}
    model = to_onnx(symbol, to_numpy_params(arg_params, aux_params),
                    {n: (1,) + shapes[n] for n in names},
                    opset=spec.export.onnx.opset, dynamic_batch=True, model_name=spec.name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    def mxnet_module(b: int) -> Any:
        mod = mx.mod.Module(symbol, data_names=names, label_names=[spec.output.label_name],
                            context=mx.cpu())
        with warnings.catch_warnings():  # no label shapes: bound for inference
            warnings.simplefilter("ignore")
            mod.bind(data_shapes=[(n, (b,) + shapes[n]) for n in names], for_training=False)
        mod.set_params(arg_params, aux_params, allow_missing=False)
        return mod

    modules = {1: mxnet_module(1), batch: mxnet_module(batch)}
    count = min(len(v) for v in samples.values())
    picks = np.resize(np.arange(count), batch)
    big = {n: np.ascontiguousarray(samples[n][picks], dtype=np.float32) for n in names}
    one = [{n: np.ascontiguousarray(samples[n][i % count][None], dtype=np.float32)
            for n in names} for i in range(calls)]

    def run_ort(x: Dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, x)[0]

    def run_mx(x: Dict[str, np.ndarray]) -> np.ndarray:
        mod = modules[len(next(iter(x.values())))]
        mod.forward(mx.io.DataBatch([mx.nd.array(x[n]) for n in names]), is_train=False)
        out = mod.get_outputs()[0].asnumpy()
        mx.nd.waitall()
        return out

    backends = {"ONNX Runtime (export)": run_ort, "MXNet Module forward": run_mx}
    worst = float(np.abs(run_ort(big) - run_mx(big)).max())
    if not worst <= 1e-3:
        raise RuntimeError(f"ONNX Runtime and MXNet disagree by {worst:.3g}: not benchmarking")
    for fn in backends.values():  # warm-up
        for x in one[:20]:
            fn(x)
        for _ in range(2):
            fn(big)
    single: Dict[str, List[float]] = {n: [] for n in backends}
    many: Dict[str, List[float]] = {n: [] for n in backends}
    order = list(backends)
    for r in range(repeats):
        for name in order[r % 2:] + order[:r % 2]:
            fn = backends[name]
            for x in one:
                t = time.perf_counter()
                fn(x)
                single[name].append(time.perf_counter() - t)
            for _ in range(batch_calls):
                t = time.perf_counter()
                fn(big)
                many[name].append(time.perf_counter() - t)
        say(f"inference round {r + 1}/{repeats} done")
    return [InferenceFigures(n, 1e3 * _percentile(single[n], 50), 1e3 * _percentile(single[n], 99),
                             batch, batch / statistics.median(many[n])) for n in order]


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> Dict[str, Any]:
    """Cores, CPU model, RAM and load of this machine, and the versions, for the record."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    import mxnet as mx
    import onnxruntime
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - no load average on this platform
        load = None
    return {"cpus": os.cpu_count(), "cpu": model, "ram_gib": round(ram / 2**30, 1) if ram else None,
            "python": platform.python_version(), "mxnet": mx.__version__,
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "torch": torch_available(), "load_1min": load}


def machine_line(info: Dict[str, Any]) -> str:
    ram = f", {info['ram_gib']} GiB RAM" if info.get("ram_gib") else ""
    torch_text = f", torch {info['torch']}" if info.get("torch") else ""
    load = (f"; 1-minute load average {info['load_1min']} at the start"
            if info.get("load_1min") is not None else "")
    return (f"{info['cpus']} cores ({info['cpu']}){ram}; Python {info['python']}, "
            f"mxnet {info['mxnet']}, numpy {info['numpy']}, onnxruntime "
            f"{info.get('onnxruntime', '?')}{torch_text}{load}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def _paired(f: TrainingFigures, other: TrainingFigures, *, epoch_loop: bool = False) -> str:
    if len(f.whole_runs) != len(other.whole_runs) or not f.epoch_loops or not other.epoch_loops:
        return _ratio(f.epoch_loop if epoch_loop else f.whole_run,
                      other.epoch_loop if epoch_loop else other.whole_run)
    return f"{f.paired(other, epoch_loop=epoch_loop):.2f}x"


def training_table(figures: Sequence[TrainingFigures], *, baseline: str = HAND_WRITTEN,
                   label: str = "") -> str:
    """Markdown: samples/s over the whole run and over the epoch loop (medians over
    repeats), with ratios to the bare hand-written Module.fit and to the hand-written run
    that does the same work; ratios are paired: the median over rounds of the two
    contenders' ratio within a round."""
    base = next((f for f in figures if f.name == baseline), figures[0])
    by_name = {f.name: f for f in figures}
    lead = "| spec " if label else ""
    lines = [lead + "| training | whole run samples/s | ms/epoch | vs hand-written | "
             "vs same work | epoch loop samples/s | vs hand-written | vs same work "
             "| what the run includes |",
             ("|---" if label else "") + "|---|---|---|---|---|---|---|---|---|"]
    for f in figures:
        twin = by_name.get(f.twin)
        cells = [f.name, f"{f.whole_run:,.0f}", f"{f.ms_per_epoch:.1f}",
                 _paired(f, base), _paired(f, twin) if twin else "-",
                 f"{f.epoch_loop:,.0f}", _paired(f, base, epoch_loop=True),
                 _paired(f, twin, epoch_loop=True) if twin else "-",
                 (f.note or "-") + (f"; same work as: {twin.name}" if twin else "")]
        lines.append(("| " + label + " " if label else "") + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inference_table(figures: Sequence[InferenceFigures], *, label: str = "") -> str:
    base = figures[-1]
    lead = "| spec " if label else ""
    lines = [lead + f"| inference | batch 1 p50 ms | batch 1 p99 ms | batch {base.batch} samples/s "
             "| batch 1 speed vs MXNet | throughput vs MXNet |",
             ("|---" if label else "") + "|---|---|---|---|---|---|"]
    for f in figures:
        cells = [f.name, f"{f.p50_ms:.3f}", f"{f.p99_ms:.3f}", f"{f.throughput:,.0f}",
                 _ratio(base.p50_ms, f.p50_ms),
                 _ratio(f.throughput, base.throughput)]
        lines.append(("| " + label + " " if label else "") + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


FOOTNOTE = ("whole run: the whole call (setup, statistics, bind, every epoch and what the row "
            "includes) with mx.nd.waitall() before the clock stops; ms/epoch: the whole run "
            "over its epochs; epoch loop: one epoch's batches (engine-synced), median epoch, "
            "the first left out. Ratios are paired: the median over rounds of the two "
            "contenders' ratio within one round. vs same work: against the hand-written run "
            "that does what the row does (training only validates every epoch, as train() "
            "always does; as built also checkpoints).")


@dataclasses.dataclass
class BenchReport:
    spec_name: str
    train_samples: int
    epochs: int
    repeats: int
    training: List[TrainingFigures]
    inference: List[InferenceFigures]
    machine: Dict[str, Any]
    skipped: List[str] = dataclasses.field(default_factory=list)

    def markdown(self, *, with_machine: bool = True) -> str:
        head = (f"{self.spec_name}: {self.train_samples} training samples, {self.epochs} epochs "
                f"per run, median of {self.repeats} interleaved runs after a warm-up")
        if with_machine:
            head += f"; {machine_line(self.machine)}"
        parts = [head, "", training_table(self.training), ""]
        if self.skipped:
            parts += ["not measured: " + "; ".join(self.skipped), ""]
        parts += [inference_table(self.inference), "", FOOTNOTE]
        return "\n".join(parts)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


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


def run_bench(spec: Any, *, repeats: int = 3, epochs: int = 3, inference_repeats: int = 5,
              say: Optional[Say] = None, data: Any = None, gluon: bool = True,
              torch: bool = True, extra_contenders: Sequence[Contender] = ()) -> BenchReport:
    """The whole comparison for one spec; `extra_contenders` join the interleaved rounds."""
    from .data import load_data
    check_benchable(spec)
    info = machine()
    data = data if data is not None else load_data(spec)
    contenders = training_contenders(spec, data)
    twins, skipped = twin_contenders(spec, data, gluon=gluon, torch=torch)
    contenders += twins + list(extra_contenders)
    training = compare_training(contenders, epochs=epochs, repeats=repeats, say=say)
    result = contenders[1].last["result"]
    source = data.val if len(data.val) else data.train
    samples = {n: v[:256] for n, v in source.inputs.items()}
    inference = compare_inference(spec, result.symbol, result.arg_params, result.aux_params,
                                  samples, repeats=inference_repeats, say=say)
    return BenchReport(spec.name, len(data.train), epochs, repeats, training, inference,
                       info, skipped)


# ---------------------------------------------------------------------------------------------
# Scaling: build and export time against the layer count


def scaling_spec_text(layers: int, data_path: str, *, hidden: int = 16, classes: int = 2,
                      features: int = 30) -> str:
    """YAML of an MLP of exactly `layers` layers on a csv with a 'benign' label column:
    FullyConnected(hidden) and Activation(relu) alternating, then FullyConnected(classes)."""
    if layers < 1:
        raise ValueError("layers must be >= 1")
    rows = []
    for i in range(layers - 1):
        rows.append(f"  - {{op: FullyConnected, name: fc{i}, num_hidden: {hidden}}}" if i % 2 == 0
                    else f"  - {{op: Activation, name: act{i}, act_type: relu}}")
    rows.append(f"  - {{op: FullyConnected, name: out, num_hidden: {classes}}}")
    return "\n".join([
        f"name: mlp{layers}",
        "input:",
        "  name: data",
        f"  shape: [{features}]",
        "  normalize: {stats: dataset, eps: 0.001}",
        "layers:",
        *rows,
        "output: {op: SoftmaxOutput, name: softmax}",
        "data:",
        f"  train: {{path: {data_path}, format: csv, label: benign}}",
        "  val_fraction: 0.2",
        "train: {epochs: 1, batch_size: 32, optimizer: sgd, "
        "optimizer_params: {learning_rate: 0.05}, seed: 7}",
        "export: {formats: [checkpoint, onnx], onnx: {opset: 17}, verify: {atol: 1.0e-5}}",
        "",
    ])


@dataclasses.dataclass
class ScalingFigures:
    layers: int
    phases: Dict[str, float]   # median seconds per phase
    build: float               # median seconds: load + validate, symbol, ONNX, parity

    @property
    def per_layer_ms(self) -> float:
        return 1e3 * self.build / self.layers


SCALING_PHASES = ("load + validate", "build_symbol", "ONNX translation", "ORT parity")


def time_build(text: str, held_out: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Seconds of each phase of a build without training: the spec loaded and validated
    from text (symbuilder.loads_spec), build_symbol, the ONNX file written and checked
    (exporting.export_onnx, as a build does), and the ONNX Runtime parity suite the build
    runs (serving.parity_or_fail). Parameters come from the initializer (Module.init_params;
    timed as 'init params', not part of the build)."""
    import mxnet as mx
    from . import exporting, serving
    from .builder import build_symbol, data_shapes
    from .spec.model import loads_spec
    from .train import _global_initializer
    times: Dict[str, float] = {}
    t = time.perf_counter()
    spec = loads_spec(text)
    times["load + validate"] = time.perf_counter() - t
    t = time.perf_counter()
    symbol = build_symbol(spec)
    times["build_symbol"] = time.perf_counter() - t
    t = time.perf_counter()
    mod = mx.mod.Module(symbol, data_names=_input_names(spec),
                        label_names=[spec.output.label_name], context=mx.cpu())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod.bind(data_shapes=list(data_shapes(spec, 1).items()), for_training=False)
    mx.random.seed(spec.train.seed)
    mod.init_params(_global_initializer(spec))
    arg_params, aux_params = mod.get_params()
    mx.nd.waitall()
    times["init params"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
        t = time.perf_counter()
        path = exporting.export_onnx(tmp, spec.name, symbol, arg_params, aux_params,
                                     data_shapes(spec, 1), opset=spec.export.onnx.opset,
                                     dynamic_batch=spec.export.onnx.dynamic_batch)
        with open(path, "rb") as f:
            model_bytes = f.read()
        times["ONNX translation"] = time.perf_counter() - t
    t = time.perf_counter()
    serving.parity_or_fail(symbol, arg_params, aux_params, model_bytes,
                           atol=spec.export.verify.atol, held_out=held_out,
                           random_samples=len(next(iter(held_out.values()))))
    times["ORT parity"] = time.perf_counter() - t
    times["layers"] = float(len(spec.layers))
    return times


def compare_scaling(data_path: str, *, counts: Sequence[int] = (10, 100, 1000),
                    repeats: int = 3, samples: int = 64,
                    say: Optional[Say] = None) -> List[ScalingFigures]:
    """Build time (no training) of generated MLPs of each layer count, interleaved after a
    warm-up, medians over repeats. The data is read once, outside the clocks."""
    from .data import load_data
    from .spec.model import loads_spec
    say = say or (lambda line: None)
    texts = {n: scaling_spec_text(n, data_path) for n in counts}
    data = load_data(loads_spec(texts[counts[0]]))
    held_out = {k: np.ascontiguousarray(v[:samples]) for k, v in data.val.inputs.items()}
    time_build(texts[counts[0]], held_out)  # warm-up: imports, first binds, ORT
    runs: Dict[int, List[Dict[str, float]]] = {n: [] for n in counts}
    for r in range(repeats):
        order = list(counts)[r % len(counts):] + list(counts)[:r % len(counts)]
        for n in order:
            gc.collect()
            runs[n].append(time_build(texts[n], held_out))
        say(f"scaling round {r + 1}/{repeats} done")
    out = []
    for n in counts:
        phases = {p: statistics.median(run[p] for run in runs[n])
                  for p in SCALING_PHASES + ("init params",)}
        build = statistics.median(sum(run[p] for p in SCALING_PHASES) for run in runs[n])
        out.append(ScalingFigures(n, phases, build))
    return out


def scaling_table(figures: Sequence[ScalingFigures]) -> str:
    """Markdown: per layer count, each phase, the build, per-layer time, and the marginal
    cost per added layer between consecutive counts (equal marginals = linear growth)."""
    lines = ["| layers | " + " | ".join(f"{p} s" for p in SCALING_PHASES) +
             " | build s | ms per layer | marginal ms per added layer | init params s (not in build) |",
             "|---" * (len(SCALING_PHASES) + 5) + "|"]
    previous = None
    for f in figures:
        marginal = "-"
        if previous is not None:
            marginal = f"{1e3 * (f.build - previous.build) / (f.layers - previous.layers):.2f}"
        lines.append(f"| {f.layers} | " + " | ".join(f"{f.phases[p]:.3f}" for p in SCALING_PHASES)
                     + f" | {f.build:.3f} | {f.per_layer_ms:.2f} | {marginal} | "
                       f"{f.phases['init params']:.3f} |")
        previous = f
    return "\n".join(lines)


def scaling_verdict(figures: Sequence[ScalingFigures]) -> str:
    """One line: the ratio of the last two marginal costs per layer (1.0 = linear)."""
    if len(figures) < 3:
        return ""
    a, b, c = figures[-3], figures[-2], figures[-1]
    first = (b.build - a.build) / (b.layers - a.layers)
    last = (c.build - b.build) / (c.layers - b.layers)
    ratio = last / first if first > 0 else float("inf")
    kind = ("linear: the cost of an added layer does not grow with the layer count"
            if ratio <= 1.5 else "NOT linear: an added layer costs more in a bigger network")
    return (f"marginal cost per layer {a.layers}->{b.layers}: {1e3 * first:.2f} ms, "
            f"{b.layers}->{c.layers}: {1e3 * last:.2f} ms; ratio {ratio:.2f} ({kind}; "
            f"per-layer time ratio {c.per_layer_ms / b.per_layer_ms:.2f}x from {b.layers} "
            f"to {c.layers} layers)")


# ---------------------------------------------------------------------------------------------
# Fixed per-epoch costs, measured alone: what explains a gap between twins on a small data set


def fixed_costs(spec: Any, data: Any, *, repeats: int = 15) -> Dict[str, float]:
    """Median milliseconds, each measured alone after a warm-up:
    - 'seed': mx.random.seed + waitall, which train() does at every epoch start (seed_epoch:
      dropout masks as a function of (seed, epoch), for bit-identical resume); the engine
      work lands inside the epoch's clock;
    - 'symbuilder checkpoint': RunStore.save (params, optimizer state with the optimizer,
      state.json, two fsyncs, old checkpoints removed), what 'as built' adds per epoch;
    - 'do_checkpoint': mx.callback.do_checkpoint's save (symbol JSON + params), the
      hand-written twin's;
    - 'build_symbol': spec -> symbol with attribute checks and shape inference, once per
      train() call (the hand-written contenders build theirs outside the clock);
    - 'symbuilder validation': train.evaluate (Module.predict on a fresh iterator, padding
      stripped, metrics over the whole split) against 'Module.score' (eval_data's path:
      metrics updated per batch, the padded rows of the last batch counted too)."""
    import mxnet as mx
    from .checkpoints import RunState, RunStore
    from .train import _global_initializer, _optimizer, fixed_param_names
    from .builder import build_symbol
    from .data import make_iter
    symbol = build_symbol(spec)
    batch_size = min(spec.train.batch_size, len(data.train))
    it = make_iter(spec, data.train, batch_size=batch_size, shuffle=False)
    module = mx.mod.Module(symbol, data_names=_input_names(spec),
                           label_names=[spec.output.label_name], context=mx.cpu(),
                           fixed_param_names=fixed_param_names(spec) or None)
    module.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    module.init_params(_global_initializer(spec), allow_missing=True)
    name, params = _optimizer(spec, -(-len(data.train) // batch_size))
    module.init_optimizer(kvstore=spec.train.kvstore, optimizer=name, optimizer_params=params)
    batch = next(iter(it))
    module.forward_backward(batch)
    module.update()  # optimizer state exists, as after an epoch
    mx.nd.waitall()

    def median_ms(fn: Callable[[int], None]) -> float:
        fn(0)
        times = []
        for i in range(1, repeats + 1):
            mx.nd.waitall()
            t = time.perf_counter()
            fn(i)
            mx.nd.waitall()
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times)

    out = {"seed": median_ms(lambda i: mx.random.seed(i)),
           "build_symbol": median_ms(lambda i: build_symbol(spec))}
    with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
        store = RunStore(os.path.join(tmp, "run"), spec)
        store.start_fresh()
        out["symbuilder checkpoint"] = median_ms(
            lambda i: store.save(module, i + 1, RunState(epoch=i + 1)))
        prefix = os.path.join(tmp, "hand", spec.name)
        os.makedirs(os.path.dirname(prefix))
        save = mx.callback.do_checkpoint(prefix)
        out["do_checkpoint"] = median_ms(
            lambda i: save(i, symbol, *module.get_params()))
    from .data import labels_for
    from .train import evaluate
    out["symbuilder validation"] = median_ms(lambda i: evaluate(spec, module, data.val,
                                                                batch_size))
    names = _input_names(spec)
    val = mx.io.NDArrayIter({n: data.val.inputs[n] for n in names},
                            {spec.output.label_name: labels_for(spec, data.val)}, batch_size,
                            shuffle=False, last_batch_handle="pad")

    def score(i: int) -> None:
        val.reset()
        module.score(val, mx.metric.create(list(spec.metrics)))
    out["Module.score"] = median_ms(score)
    return out
