"""Training progress on stderr: a live bar on a terminal, one plain line per epoch elsewhere.

The bar reads the running metric at most every BAR_INTERVAL seconds: reading a metric makes
Python wait for MXNet's engine, so doing it per batch would serialise training.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional

import mxnet as mx

BAR_INTERVAL = 0.5  # seconds between bar redraws (each one syncs the engine once)


class ProgressReporter:
    def __init__(self, say: Callable[[str], None], *, total_epochs: int, batches_per_epoch: int,
                 batch_size: int, bar: Optional[bool] = None, stream: Any = None) -> None:
        self.say = say
        self.stream = stream or sys.stderr
        self.total_epochs = total_epochs
        self.batches = batches_per_epoch
        self.batch_size = batch_size
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = isatty if bar is None else bar
        self._epoch_start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def batch_done(self, param: Any) -> None:
        """Module.fit's batch_end_callback. Cheap unless a redraw is due."""
        if not self.bar:
            return
        now = time.perf_counter()
        if now - self._last_draw < BAR_INTERVAL and param.nbatch + 1 < self.batches:
            return
        self._last_draw = now
        done = param.nbatch + 1
        elapsed = max(now - self._epoch_start, 1e-9)
        names, values = param.eval_metric.get()  # the one sync per redraw
        metrics = " ".join(f"{n}={v:.4f}" for n, v in zip(names, values))
        width = 24
        filled = int(width * done / max(self.batches, 1))
        line = (f"\repoch {param.epoch + 1}/{self.total_epochs} [{'#' * filled}"
                f"{'.' * (width - filled)}] {done}/{self.batches} "
                f"{done * self.batch_size / elapsed:,.0f} samples/s {metrics}")
        self.stream.write(line[:160].ljust(80))
        self.stream.flush()
        self._drawn = True

    def start_epoch(self) -> None:
        self._epoch_start = time.perf_counter()
        self._last_draw = self._epoch_start

    def epoch_seconds(self) -> float:
        mx.nd.waitall()  # the clock stops when the engine is done, not when Python is
        return time.perf_counter() - self._epoch_start

    def epoch_done(self, entry: Dict[str, Any], *, best: bool = False) -> None:
        self._clear()
        self.say(epoch_line(entry, self.total_epochs) + ("  (best)" if best else ""))

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        self._clear()


def epoch_line(entry: Dict[str, Any], total: int) -> str:
    def fmt(metrics: Dict[str, float]) -> str:
        return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    rate = entry.get("samples_per_sec")
    lr = entry.get("lr")
    return (f"epoch {entry['epoch']:>{len(str(total))}}/{total}  train {fmt(entry['train'])}  "
            f"val {fmt(entry['val'])}" + (f"  lr={lr:.3g}" if lr is not None else "")
            + f"  {entry['seconds']:.2f}s" + (f"  {rate:,.0f} samples/s" if rate else ""))
