"""The report: machine and versions, the training and inference tables (markdown), and the
BenchReport a bench returns."""
from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Dict, List, Sequence

import mxnet as mx
import numpy as np
import onnxruntime

from .harness import HAND_WRITTEN, TrainingFigures
from .inference import InferenceFigures
from .twins import torch_available


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
