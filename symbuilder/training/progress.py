"""Training progress on stderr: a live bar on a terminal, one plain line per epoch elsewhere.

The bar reads the running metric at most every BAR_INTERVAL seconds: reading a metric makes
Python wait for MXNet's engine, so doing it per batch would serialise training. The ETAs add
no sync: the bar's comes from the batches done so far (Python's clock runs ahead of the
engine by its queue, at most a few batches), the epoch line's from the median of the epochs'
wall times (batches, the engine-synced end and the validation pass) in this process.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import mxnet as mx

BAR_INTERVAL = 0.5  # seconds between bar redraws (each one syncs the engine once)


class ProgressReporter:
    def __init__(self, say: Callable[[str], None], *, total_epochs: int, batches_per_epoch: int,
                 batch_size: int, bar: Optional[bool] = None, stream: Any = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.say = say
        self.clock = clock  # a test's own clock makes the ETAs exact
        self.stream = stream or sys.stderr
        self.total_epochs = total_epochs
        self.batches = batches_per_epoch
        self.batch_size = batch_size
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.bar = isatty if bar is None else bar
        self._epoch_start = clock()
        self._last_draw = 0.0
        self._drawn = False
        self._epoch_walls: List[float] = []

    def batch_done(self, param: Any) -> None:
        """Module.fit's batch_end_callback. Cheap unless a redraw is due."""
        if not self.bar:
            return
        now = self.clock()
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
                f"{done * self.batch_size / elapsed:,.0f} samples/s "
                f"eta {duration(elapsed / done * (self.batches - done))} {metrics}")
        self.stream.write(line[:160].ljust(80))
        self.stream.flush()
        self._drawn = True

    def start_epoch(self) -> None:
        self._epoch_start = self.clock()
        self._last_draw = self._epoch_start

    def epoch_seconds(self) -> float:
        mx.nd.waitall()  # the clock stops when the engine is done, not when Python is
        return self.clock() - self._epoch_start

    def epoch_done(self, entry: Dict[str, Any], *, best: bool = False) -> None:
        """The epoch's line, with the run's time left: the median epoch so far (one slow
        first epoch, warm-up, does not skew it) times the epochs still to run."""
        self._clear()
        self._epoch_walls.append(self.clock() - self._epoch_start)
        remaining = self.total_epochs - int(entry["epoch"])
        left = statistics.median(self._epoch_walls) * remaining if remaining > 0 else None
        self.say(epoch_line(entry, self.total_epochs, left) + ("  (best)" if best else ""))

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        self._clear()


def duration(seconds: float) -> str:
    """A short duration: 42s, 3m05s, 2h07m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def epoch_line(entry: Dict[str, Any], total: int, left: Optional[float] = None) -> str:
    """One epoch's line; `left`: the run's estimated seconds to go (None: the last epoch)."""
    def fmt(metrics: Dict[str, float]) -> str:
        return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    rate = entry.get("samples_per_sec")
    lr = entry.get("lr")
    return (f"epoch {entry['epoch']:>{len(str(total))}}/{total}  train {fmt(entry['train'])}  "
            f"val {fmt(entry['val'])}" + (f"  lr={lr:.3g}" if lr is not None else "")
            + f"  {entry['seconds']:.2f}s" + (f"  {rate:,.0f} samples/s" if rate else "")
            + (f"  eta {duration(left)}" if left is not None else ""))
