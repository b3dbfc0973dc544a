"""`symbuilder bench`: what symbuilder costs on a user's own spec, as figures.

Training: symbuilder's train() against a hand-written Module.fit loop (NDArrayIter, MXNet's
own metrics) on the identical symbol, data, input statistics, initializer and optimizer.
Inference: ONNX Runtime on the export against MXNet Module forward, at batch 1 (latency)
and batch 256 (throughput). One process, contenders interleaved after a warm-up, medians
over repeats; every clock stops after mx.nd.waitall() (reading a metric or an output waits
for MXNet's engine, so a clock stopped earlier measures Python, not training).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

Say = Callable[[str], None]


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
    """A way to train: `run(epochs)` trains from scratch and returns its timings."""
    name: str
    run: Callable[[int], TrainingRun]
    note: str = ""


@dataclasses.dataclass
class TrainingFigures:
    name: str
    whole_run: float          # samples/s over the whole call, median over repeats
    epoch_loop: float         # samples/s of one epoch's batches, median epoch (first excluded)
    whole_runs: List[float]   # every repeat's whole-run samples/s (for the spread)
    note: str = ""


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
        figures.append(TrainingFigures(c.name, statistics.median(whole),
                                       rs[0].samples_per_epoch / _median_epoch(rs), whole,
                                       c.note))
    return figures


# ---------------------------------------------------------------------------------------------
# The contenders: symbuilder's train(), and the Module.fit code a user would write by hand.


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
    holder: Dict[str, Any] = {}

    def run(epochs: int) -> TrainingRun:
        with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
            start = time.perf_counter()
            run_dir = None
            if as_built:  # as pipeline.build does: a fresh run folder
                run_dir = os.path.join(tmp, "run")
                RunStore(run_dir, spec).start_fresh()
            result = train(spec, data, epochs=epochs, bar=False, run_dir=run_dir)
            import mxnet as mx
            mx.nd.waitall()
            wall = time.perf_counter() - start
        holder["result"] = result
        # train() times each epoch itself, exactly as EpochClock does (iterator reset to
        # epoch end, after waitall).
        return TrainingRun(wall, [h["seconds"] for h in result.history], len(data.train))

    if as_built:
        every = spec.train.checkpoint_every
        note = (f"checkpoint every {every} epoch(s) with optimizer state, per-epoch validation"
                if every else "per-epoch validation, no checkpoints (checkpoint_every: 0)")
    else:
        note = "per-epoch validation, no checkpoints"
    c = Contender("symbuilder train() " + ("as built" if as_built else "training only"), run,
                  note)
    c.last = holder  # type: ignore[attr-defined]
    return c


def input_statistics(features: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-channel mean and population variance the way a hand-written script computes them."""
    axes = (0,) + tuple(range(2, features.ndim))
    return {"mean": features.mean(axis=axes, dtype=np.float64),
            "var": features.var(axis=axes, dtype=np.float64)}


def hand_written_contender(spec: Any, data: Any, *, with_extras: bool = False) -> Contender:
    """Module.fit as a user writes it without symbuilder: the same symbol (built once,
    outside the clock), NDArrayIter, mx.metric.create(...) metrics (which sync the engine
    per batch), the input layer's statistics from numpy, the same initializer, optimizer
    and fixed parameters. `with_extras` adds what `symbuilder build` also does every epoch:
    validation (eval_data) and a checkpoint (mx.callback.do_checkpoint)."""
    import mxnet as mx
    from .builder import InputLayerNames, build_symbol
    from .data import labels_for
    from .train import contexts, fixed_param_names, lr_scheduler
    symbol = build_symbol(spec)
    in_name, label_name = spec.input.name, spec.output.label_name
    norm_names = InputLayerNames.for_input(in_name)
    batch_size = min(spec.train.batch_size, len(data.train))

    def run(epochs: int) -> TrainingRun:
        seed = spec.train.seed
        mx.random.seed(seed)
        np.random.seed(seed)
        with tempfile.TemporaryDirectory(prefix="symbuilder-bench-") as tmp:
            start = time.perf_counter()
            clock = EpochClock()
            x, y = data.train.features, labels_for(spec, data.train)
            aux = None
            if spec.input.normalize is not None:
                stats = input_statistics(x)
                aux = {norm_names.moving_mean: mx.nd.array(stats["mean"]),
                       norm_names.moving_var: mx.nd.array(stats["var"])}
            it = mx.io.NDArrayIter({in_name: x}, {label_name: y}, batch_size, shuffle=True,
                                   last_batch_handle="pad")
            reset = it.reset

            def timed_reset() -> None:
                reset()
                clock.start()
            it.reset = timed_reset  # type: ignore[assignment]
            callbacks: List[Any] = [clock.stop]
            val = None
            if with_extras:
                val = mx.io.NDArrayIter({in_name: data.val.features},
                                        {label_name: labels_for(spec, data.val)}, batch_size,
                                        shuffle=False, last_batch_handle="pad")
                callbacks.append(mx.callback.do_checkpoint(os.path.join(tmp, spec.name)))
            init = dict(spec.train.initializer)
            initializer = mx.init.create(init.pop("name"), **init)
            params = dict(spec.train.optimizer_params)
            sched = lr_scheduler(spec, -(-len(x) // batch_size))
            if sched is not None:
                params["lr_scheduler"] = sched
            module = mx.mod.Module(symbol, data_names=[in_name], label_names=[label_name],
                                   context=contexts(spec),
                                   fixed_param_names=fixed_param_names(spec) or None)
            clock.start()
            module.fit(it, eval_data=val, eval_metric=mx.metric.create(list(spec.metrics)),
                       epoch_end_callback=callbacks, initializer=initializer,
                       aux_params=aux, allow_missing=True, optimizer=spec.train.optimizer.lower(),
                       optimizer_params=params, kvstore=spec.train.kvstore, num_epoch=epochs)
            mx.nd.waitall()
            wall = time.perf_counter() - start
        return TrainingRun(wall, clock.seconds, len(x))

    if with_extras:
        return Contender("hand-written Module.fit + val + checkpoint", run,
                         "eval_data and do_checkpoint every epoch")
    return Contender("hand-written Module.fit", run, "NDArrayIter, mx.metric, no validation")


# ---------------------------------------------------------------------------------------------
# Inference


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def compare_inference(spec: Any, symbol: Any, arg_params: Dict, aux_params: Dict,
                      samples: np.ndarray, *, repeats: int, calls: int = 200,
                      batch: int = 256, batch_calls: int = 10,
                      say: Optional[Say] = None) -> List[InferenceFigures]:
    """ONNX Runtime (the export, all graph optimisations, default threads) against MXNet
    Module forward (bound for inference), both from a numpy batch to a numpy result.
    Batch 1: `calls` single-sample calls per round; batch `batch`: `batch_calls` calls per
    round; rounds interleaved, after a warm-up."""
    import mxnet as mx
    import onnxruntime as ort
    from .exporting import to_numpy_params
    from .onnx import to_onnx
    say = say or (lambda line: None)
    in_name = spec.input.name
    shape = tuple(spec.input.shape)
    model = to_onnx(symbol, to_numpy_params(arg_params, aux_params), {in_name: (1,) + shape},
                    opset=spec.export.onnx.opset, dynamic_batch=True, model_name=spec.name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    def mxnet_module(b: int) -> Any:
        mod = mx.mod.Module(symbol, data_names=[in_name], label_names=[spec.output.label_name],
                            context=mx.cpu())
        mod.bind(data_shapes=[(in_name, (b,) + shape)], for_training=False)
        mod.set_params(arg_params, aux_params, allow_missing=False)
        return mod

    modules = {1: mxnet_module(1), batch: mxnet_module(batch)}
    reps = -(-batch // len(samples))
    big = np.ascontiguousarray(np.concatenate([samples] * reps)[:batch], dtype=np.float32)
    one = [np.ascontiguousarray(samples[i % len(samples)][None], dtype=np.float32)
           for i in range(calls)]

    def run_ort(x: np.ndarray) -> np.ndarray:
        return session.run(None, {in_name: x})[0]

    def run_mx(x: np.ndarray) -> np.ndarray:
        mod = modules[x.shape[0]]
        mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
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
    names = list(backends)
    for r in range(repeats):
        for name in names[r % 2:] + names[:r % 2]:
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
                             batch, batch / statistics.median(many[n])) for n in names]


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> Dict[str, Any]:
    """Cores, CPU model and RAM of this machine, for the record."""
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
    return {"cpus": os.cpu_count(), "cpu": model, "ram_gib": round(ram / 2**30, 1) if ram else None,
            "python": platform.python_version(), "mxnet": mx.__version__,
            "numpy": np.__version__}


def machine_line(info: Dict[str, Any]) -> str:
    ram = f", {info['ram_gib']} GiB RAM" if info.get("ram_gib") else ""
    return (f"{info['cpus']} cores ({info['cpu']}){ram}; Python {info['python']}, "
            f"mxnet {info['mxnet']}, numpy {info['numpy']}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def training_table(figures: Sequence[TrainingFigures], *, baseline: Optional[str] = None,
                   label: str = "") -> str:
    """Markdown: samples/s over the whole run and over the epoch loop, with ratios to the
    baseline (the hand-written Module.fit by default)."""
    base = next((f for f in figures if f.name == baseline), figures[0])
    lines = []
    prefix = "| spec " if label else ""
    lines.append(prefix + "| training | whole run samples/s | vs hand-written | epoch loop samples/s "
                 "| vs hand-written | what the run includes |")
    lines.append(("|---" if label else "") + "|---|---|---|---|---|---|")
    for f in figures:
        cells = [f.name, f"{f.whole_run:,.0f}", _ratio(f.whole_run, base.whole_run),
                 f"{f.epoch_loop:,.0f}", _ratio(f.epoch_loop, base.epoch_loop), f.note or "-"]
        lines.append(("| " + label + " " if label else "") + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inference_table(figures: Sequence[InferenceFigures], *, label: str = "") -> str:
    base = figures[-1]
    prefix = "| spec " if label else ""
    lines = [prefix + f"| inference | batch 1 p50 ms | batch 1 p99 ms | batch {base.batch} samples/s "
             "| batch 1 speed vs MXNet | throughput vs MXNet |",
             ("|---" if label else "") + "|---|---|---|---|---|---|"]
    for f in figures:
        cells = [f.name, f"{f.p50_ms:.3f}", f"{f.p99_ms:.3f}", f"{f.throughput:,.0f}",
                 _ratio(base.p50_ms, f.p50_ms),
                 _ratio(f.throughput, base.throughput)]
        lines.append(("| " + label + " " if label else "") + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclasses.dataclass
class BenchReport:
    spec_name: str
    train_samples: int
    epochs: int
    repeats: int
    training: List[TrainingFigures]
    inference: List[InferenceFigures]
    machine: Dict[str, Any]

    def markdown(self) -> str:
        return "\n".join([
            f"{self.spec_name}: {self.train_samples} training samples, {self.epochs} epochs "
            f"per run, median of {self.repeats} interleaved runs after a warm-up; "
            f"{machine_line(self.machine)}",
            "",
            training_table(self.training),
            "",
            inference_table(self.inference),
            "",
            "whole run: the whole call (setup, statistics, bind, every epoch and what the row "
            "includes) with mx.nd.waitall() before the clock stops; epoch loop: one epoch's "
            "batches, median epoch, the first left out.",
        ])


def training_contenders(spec: Any, data: Any) -> List[Contender]:
    """The four MXNet Module contenders, hand-written baseline first."""
    return [hand_written_contender(spec, data),
            symbuilder_contender(spec, data, as_built=False),
            hand_written_contender(spec, data, with_extras=True),
            symbuilder_contender(spec, data, as_built=True)]


def run_bench(spec: Any, *, repeats: int = 3, epochs: int = 3, inference_repeats: int = 5,
              say: Optional[Say] = None, data: Any = None,
              extra_contenders: Sequence[Contender] = ()) -> BenchReport:
    """The whole comparison for one spec; `extra_contenders` join the interleaved rounds."""
    from .data import load_data
    data = data if data is not None else load_data(spec)
    contenders = training_contenders(spec, data) + list(extra_contenders)
    training = compare_training(contenders, epochs=epochs, repeats=repeats, say=say)
    result = contenders[1].last["result"]  # type: ignore[attr-defined]
    samples = data.val.features if len(data.val) else data.train.features
    inference = compare_inference(spec, result.symbol, result.arg_params, result.aux_params,
                                  samples[:256], repeats=inference_repeats, say=say)
    return BenchReport(spec.name, len(data.train), epochs, repeats, training, inference,
                       machine())
