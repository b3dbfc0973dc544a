"""Training metrics that never sync MXNet's engine per batch, and the divergence guard.

MXNet's metrics call `asnumpy()` in every `update`, which makes Python wait for each batch
to finish (docs/mxnet-traps.md). Computing them on the device instead costs ~25 tiny engine ops per
batch, which on a small CPU network is slower than the sync it avoids (measured). So
TrainingMetrics keeps one device copy of each batch's outputs (the executor reuses its
output buffer) and evaluates MXNet's own metrics on the concatenation when its buffer fills
or when someone reads a value: one sync per flush, not per batch, and any MXNet metric works.
The same flush finds the first batch whose outputs are NaN or inf.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..spec.metrics import BINARY_ONLY, Entry, create_metric, metric_kind, metric_name, top_k
from ..spec.semantics import metric_path

FLUSH_VALUES = 1 << 22  # output values held before a flush (16 MB of float32)


class TrainingMetrics(mx.metric.EvalMetric):
    """The spec's metrics for Module.fit, evaluated in batches of batches."""

    def __init__(self, entries: Sequence[Entry], *, flush_values: int = FLUSH_VALUES) -> None:
        self.entries = list(entries)  # train.eval_metric's: names or {name, **params}
        self.flush_values = flush_values
        self.metrics: List[mx.metric.EvalMetric] = [create_metric(e) for e in self.entries]
        self._preds: List[mx.nd.NDArray] = []
        self._labels: List[mx.nd.NDArray] = []
        self._batch_ids: List[int] = []
        self._held = 0
        self.batches = 0
        self.first_bad_batch: Optional[int] = None
        # The batch being scored (set by the training loop's iterator), for its pad; and
        # how many of its rows earlier devices' slices covered.
        self.current_batch: Optional[Any] = None
        self._rows_seen = 0
        super().__init__("training")

    def _slice_rows(self, n: int) -> Tuple[int, int]:
        """Where a device slice of `n` rows starts in the batch being scored, and how many of
        them are real: the batch's padding is its last batch.pad rows, which may span the
        slices of the last devices. Module.fit scores a batch's slices in device order."""
        batch = self.current_batch
        if batch is None:
            return 0, n
        size = batch.data[0].shape[0]  # a shape: no sync
        start = self._rows_seen
        self._rows_seen = (start + n) % size
        return start, max(0, min(n, size - batch.pad - start))

    def update(self, labels: Sequence[mx.nd.NDArray], preds: Sequence[mx.nd.NDArray]) -> None:
        # Module.fit calls this once per device per batch; a device's slice is one entry.
        start, keep = self._slice_rows(preds[0].shape[0])
        if keep == 0:
            return
        pred = preds[0] if keep == preds[0].shape[0] else preds[0][:keep]
        self._preds.append(pred.copy())  # the executor reuses its output buffer
        # The labels as the iterator holds them in host memory (symbuilder's ArrayIter):
        # no engine op and no read-back; otherwise a device copy, like the outputs.
        host = getattr(self.current_batch, "host_label", None)
        if host is not None:
            self._labels.append(host[start:start + keep])
        else:
            label = labels[0] if keep == labels[0].shape[0] else labels[0][:keep]
            self._labels.append(label.copy())
        self._batch_ids.append(self.batches)
        self._held += pred.size
        self.batches += 1
        if self._held >= self.flush_values:
            self.flush()

    def flush(self) -> None:
        """Evaluate what is held: the one place that waits for the engine."""
        if not self._preds:
            return
        preds = [p.asnumpy() for p in self._preds]
        labels = [l if isinstance(l, np.ndarray) else l.asnumpy() for l in self._labels]
        if self.first_bad_batch is None:
            for batch, pred in zip(self._batch_ids, preds):
                if not np.isfinite(pred).all():
                    self.first_bad_batch = batch
                    break
        pred_all = mx.nd.array(np.concatenate(preds))
        label_all = mx.nd.array(np.concatenate(labels))
        for metric in self.metrics:
            metric.update([label_all], [pred_all])
        self._preds, self._labels, self._batch_ids, self._held = [], [], [], 0

    def reset(self) -> None:
        for metric in getattr(self, "metrics", []):
            metric.reset()
        self._preds, self._labels, self._batch_ids, self._held = [], [], [], 0
        self.batches = 0
        self.first_bad_batch = None
        self._rows_seen = 0

    def reset_local(self) -> None:
        self.flush()
        for metric in self.metrics:
            metric.reset_local()

    def _collect(self, getter: str) -> Tuple[List[str], List[float]]:
        self.flush()
        names: List[str] = []
        values: List[float] = []
        for metric in self.metrics:
            n, v = getattr(metric, getter)()
            names.extend(n if isinstance(n, list) else [n])
            values.extend(v if isinstance(v, list) else [v])
        return names, values

    def get(self) -> Tuple[List[str], List[float]]:
        return self._collect("get")

    def get_global(self) -> Tuple[List[str], List[float]]:
        return self._collect("get_global")


def evaluate_arrays(entries: Sequence[Entry], labels: np.ndarray, outputs: mx.nd.NDArray
                    ) -> Dict[str, float]:
    """Metrics over whole arrays (validation): one update, exact, no padding."""
    result: Dict[str, float] = {}
    label_nd = mx.nd.array(labels)
    for entry in entries:
        metric = create_metric(entry)
        metric.update([label_nd], [outputs])
        n, v = metric.get()
        for key, value in zip(n if isinstance(n, list) else [n], v if isinstance(v, list) else [v]):
            result[key] = float(value)
    return result


def check_labels(spec: Any, data: Any) -> None:
    """What needs the labels, checked after the data is read and before any training: a
    binary-only metric (f1, mcc raise on a batch with a third class) on more classes, and a
    top_k that would hold every class the labels have."""
    if data.classes is None:
        return
    classes = len(data.classes)
    for i, entry in enumerate(spec.metrics):
        name = metric_name(entry)
        if classes > 2 and metric_kind(name) == BINARY_ONLY:
            raise spec.error(metric_path(spec, i), f"'{name}' is a binary metric, but the "
                             f"labels have {classes} classes; use f1_macro (macro-F1 over "
                             "the classes), acc, ce or pcc")
        k = top_k(entry)
        if k is not None and k >= classes:
            raise spec.error(metric_path(spec, i) + ("top_k",),
                             f"expected a top_k below the labels' {classes} classes (the top "
                             f"{k} would hold every class), received {k}")
