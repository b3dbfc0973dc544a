"""Spec data -> train/val arrays shaped for the network -> mx.io iterators.

Owns label encoding (class labels to 0..K-1 for SoftmaxOutput), the seeded (stratified)
validation split, reshaping rows to `input.shape`, and the iterators Module.fit consumes.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from .errors import DataError
from .sources import Table, check_finite, read_table
from .spec.model import SourceSpec, Spec


@dataclasses.dataclass
class Dataset:
    """Each input's features shaped (N, *shape) float32, by input name, and encoded labels (N,)."""
    inputs: Dict[str, np.ndarray]
    labels: np.ndarray
    source: str

    @property
    def features(self) -> np.ndarray:
        """The features of a single-input network."""
        if len(self.inputs) != 1:
            raise ValueError(f"several inputs ({', '.join(self.inputs)}): use .inputs[name]")
        return next(iter(self.inputs.values()))

    def take(self, index: np.ndarray) -> "Dataset":
        return Dataset({k: np.ascontiguousarray(v[index]) for k, v in self.inputs.items()},
                       self.labels[index], self.source)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass
class SplitData:
    train: Dataset
    val: Dataset
    feature_names: List[str]          # every feature column the network reads, input by input
    classes: Optional[List[Any]]      # class values in index order; None for regression
    columns: Dict[str, List[str]] = dataclasses.field(default_factory=dict)  # per input


def is_classification(spec: Spec) -> bool:
    return spec.output.op == "SoftmaxOutput"


def _read(spec: Spec, source: SourceSpec, key: Tuple, *, with_label: bool = True) -> Table:
    path = spec.resolve(source.path)
    if with_label and source.label is None and source.resolved_format == "csv":
        raise spec.error(key, "missing required key 'label' (the label column's name)")
    table = read_table(path, source.resolved_format, label=source.label if with_label else None,
                       features=source.features, shown_path=source.path if path != source.path
                       else path)
    if with_label and table.labels is None:
        raise spec.error(key, f"{source.path} has no labels")
    return table


def input_columns(spec: Spec, feature_names: List[str]) -> Dict[str, List[int]]:
    """Which table columns (indices) feed each input: its `columns` (names or glob patterns,
    in the order given; each pattern's matches in file order), or every column."""
    chosen: Dict[str, List[int]] = {}
    for i, item in enumerate(spec.all_inputs):
        if item.columns is None:
            chosen[item.name] = list(range(len(feature_names)))
            continue
        picked: List[int] = []
        for j, pattern in enumerate(item.columns):
            where = spec.input_path(i) + (("columns", j) if len(item.columns) > 1 else ("columns",))
            matches = [k for k, n in enumerate(feature_names) if fnmatch.fnmatchcase(n, pattern)]
            if not matches:
                from .spec.catalog_suggest import suggest_text
                raise spec.error(where, f"no feature column matches '{pattern}'"
                                 f"{suggest_text(pattern, feature_names)}", DataError)
            picked += [k for k in matches if k not in picked]
        chosen[item.name] = picked
    return chosen


def input_arrays(spec: Spec, table: Table, columns: Dict[str, List[int]]) -> Dict[str, np.ndarray]:
    """Each input's rows reshaped to (N, *shape); a located error when sizes differ."""
    flat = table.features.reshape(len(table), -1)
    out: Dict[str, np.ndarray] = {}
    for i, item in enumerate(spec.all_inputs):
        idx = columns[item.name]
        want = int(np.prod(item.shape))
        if len(idx) != want:
            names = [table.feature_names[k] for k in idx]
            raise spec.error(spec.input_path(i) + ("shape",),
                             f"shape {list(item.shape)} needs {want} features per sample, but "
                             f"{table.path} gives this input {len(idx)} ({', '.join(names[:5])}"
                             f"{', ...' if len(names) > 5 else ''})", DataError)
        # All columns in order: a reshape, no copy (a memory-mapped file stays on disk).
        part = flat if idx == list(range(flat.shape[1])) else flat[:, idx]
        out[item.name] = part.reshape((len(table),) + tuple(item.shape))
    return out


def encode_labels(spec: Spec, train: np.ndarray, others: Sequence[np.ndarray],
                  key: Tuple) -> Tuple[np.ndarray, List[np.ndarray], Optional[List[Any]]]:
    """Class labels -> 0..K-1 (classes sorted); regression labels -> float32."""
    if not is_classification(spec):
        try:
            return (train.astype(np.float32), [o.astype(np.float32) for o in others], None)
        except (ValueError, TypeError):
            raise spec.error(key, "regression labels must be numbers", DataError) from None
    classes = sorted(set(train.tolist()), key=lambda v: (isinstance(v, str), v))
    index = {c: i for i, c in enumerate(classes)}
    encoded_others = []
    for other in others:
        unknown = sorted({v for v in other.tolist() if v not in index}, key=str)
        if unknown:
            raise spec.error(key, f"validation labels {unknown[:5]} never occur in the training "
                             "data", DataError)
        encoded_others.append(np.array([index[v] for v in other.tolist()], dtype=np.float32))
    return np.array([index[v] for v in train.tolist()], dtype=np.float32), encoded_others, classes


def split_indices(labels: np.ndarray, fraction: float, seed: int, stratify: bool
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded train/val indices; stratified per class so small classes appear in both."""
    rng = np.random.RandomState(seed)
    n = len(labels)
    if stratify:
        val_parts = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            rng.shuffle(members)
            k = int(round(len(members) * fraction))
            val_parts.append(members[:k])
        val = np.sort(np.concatenate(val_parts)) if val_parts else np.array([], dtype=np.int64)
    else:
        perm = rng.permutation(n)
        val = np.sort(perm[: int(round(n * fraction))])
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val


def load_data(spec: Spec) -> SplitData:
    """Read, check, encode and split the spec's data."""
    if spec.data is None:
        raise spec.error((), "missing required key 'data' (training data is needed to build)")
    train_key = ("data", "train")
    table = _read(spec, spec.data.train, train_key)
    check_finite(table)
    columns = input_columns(spec, table.feature_names)
    features = input_arrays(spec, table, columns)
    if spec.data.val is not None:
        val_key = ("data", "val")
        vtable = _read(spec, spec.data.val, val_key)
        check_finite(vtable)
        if vtable.feature_names != table.feature_names and spec.data.val.resolved_format == "csv":
            raise spec.error(val_key, f"{spec.data.val.path} has columns "
                             f"{vtable.feature_names[:5]}... unlike the training file", DataError)
        vfeatures = input_arrays(spec, vtable, columns)
        y_train, (y_val,), classes = encode_labels(spec, table.labels, [vtable.labels],
                                                   val_key + ("label",))
        train = Dataset(features, y_train, table.path)
        val = Dataset(vfeatures, y_val, vtable.path)
    else:
        y_all, _, classes = encode_labels(spec, table.labels, [], train_key + ("label",))
        tr, va = split_indices(y_all, spec.data.val_fraction, spec.train.seed,
                               stratify=is_classification(spec))
        if len(tr) == 0 or len(va) == 0:
            raise spec.error(("data", "val_fraction"), f"splitting {len(y_all)} rows leaves "
                             f"{len(tr)} for training and {len(va)} for validation")
        whole = Dataset(features, y_all, table.path)
        train, val = whole.take(tr), whole.take(va)
    names = {k: [table.feature_names[c] for c in v] for k, v in columns.items()}
    if classes is not None:
        n_out = _num_outputs(spec)
        if n_out is not None and len(classes) > n_out:
            raise spec.error(train_key + ("label",), f"the labels have {len(classes)} classes "
                             f"({classes[:10]}), but the network outputs {n_out} values",
                             DataError)
    used = [n for cols in names.values() for n in cols]
    return SplitData(train, val, used, classes, names)


def _num_outputs(spec: Spec) -> Optional[int]:
    """Width of the last layer (batch 1), or None if it cannot be inferred cheaply."""
    from .builder import build_symbol, infer_shapes
    symbol = build_symbol(spec, check_shapes=False)
    shapes = infer_shapes(spec, symbol)
    out = shapes.get(symbol.list_outputs()[0])
    return int(np.prod(out[1:])) if out else None


def shard_rows(n: int, num_workers: int) -> int:
    """Rows per worker and epoch: ceil(n / num_workers), the same on every worker."""
    return -(-n // num_workers)


def shard_order(order: np.ndarray, rank: int, num_workers: int) -> np.ndarray:
    """Worker `rank`'s part of an epoch's order (the same permutation on every worker):
    positions rank, rank + W, ... of the order repeated cyclically to ceil(n/W) x W, so
    every worker runs the same number of batches (dist_sync needs that) and the shards
    together cover every row, at most W - 1 rows twice."""
    if num_workers <= 1:
        return order
    return np.resize(order, shard_rows(len(order), num_workers) * num_workers)[rank::num_workers]


CHUNK_BYTES = 8 << 20  # features gathered per host-to-engine copy in ArrayIter


class ArrayIter(mx.io.DataIter):
    """Batches from numpy (or memory-mapped) arrays, in an order fixed by (seed, epoch).

    MXNet's NDArrayIter reshuffles cumulatively, so epoch e's order depends on every earlier
    epoch and a resumed run cannot reproduce it. Here epoch e's order is a permutation drawn
    from (seed, e) alone; within a batch, indices are sorted, so a memory-mapped array is
    read front to back. The last batch is padded from the start of the order (`pad` tells
    how many samples are repeats; Module.predict strips them).
    `on_epoch_start(epoch)` runs before each epoch's first batch: the trainer seeds MXNet's
    RNG there, which makes dropout masks a function of (seed, epoch) too.
    """

    def __init__(self, inputs: Dict[str, np.ndarray], labels: np.ndarray, *,
                 label_name: str, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: int = 0, on_epoch_start: Optional[Any] = None,
                 shard: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(batch_size)
        self.inputs = inputs
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.on_epoch_start = on_epoch_start
        self.shard = shard  # (rank, num_workers): this worker's rows of each epoch's order
        self.provide_data = [mx.io.DataDesc(name, (batch_size,) + array.shape[1:], np.float32)
                             for name, array in inputs.items()]
        self.provide_label = [mx.io.DataDesc(label_name, (batch_size,) + labels.shape[1:],
                                             np.float32)]
        self._start_epoch()

    def _start_epoch(self) -> None:
        n = len(self.labels)
        if self.shuffle:
            rng = np.random.RandomState((self.seed * 1_000_003 + self.epoch) % (2 ** 32))
            self._order = rng.permutation(n)
        else:
            self._order = np.arange(n)
        if self.shard is not None:
            self._order = shard_order(self._order, *self.shard)
        self._cursor = 0
        self._chunk_pads: List[int] = []
        self._chunk_pos = 0
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.epoch)

    def reset(self) -> None:
        self.epoch += 1
        self._start_epoch()

    def __iter__(self) -> "ArrayIter":
        return self

    def __next__(self) -> Any:
        return self.next()

    def _batch_indices(self, start: int) -> Tuple[np.ndarray, int]:
        idx = self._order[start:start + self.batch_size]
        if self.shuffle:
            idx = np.sort(idx)  # same batch, read front to back
        pad = self.batch_size - len(idx)
        if pad:  # the repeats go last: Module.predict strips the last `pad` rows
            idx = np.concatenate([idx, self._order[:pad]])
        return idx, pad

    def _load_chunk(self) -> None:
        """Gather the next CHUNK_BYTES of batches into one NDArray: one host-to-engine copy
        per chunk instead of per batch (each mx.nd.array call costs ~0.5 ms)."""
        row_bytes = max(1, sum(int(np.prod(a.shape[1:])) for a in self.inputs.values()) * 4)
        per_chunk = max(1, CHUNK_BYTES // (row_bytes * self.batch_size))
        parts, pads = [], []
        start = self._cursor
        for _ in range(per_chunk):
            if start >= len(self._order):
                break
            idx, pad = self._batch_indices(start)
            parts.append(idx)
            pads.append(pad)
            start += self.batch_size
        idx = np.concatenate(parts)
        self._chunk_data = [mx.nd.array(np.asarray(a[idx], dtype=np.float32))
                            for a in self.inputs.values()]
        self._chunk_label = mx.nd.array(np.asarray(self.labels[idx], dtype=np.float32))
        self._chunk_pads = pads
        self._chunk_pos = 0

    def next(self) -> Any:
        if self._cursor >= len(self._order):
            raise StopIteration
        if self._chunk_pos >= len(self._chunk_pads):
            self._load_chunk()
        k = self._chunk_pos
        lo, hi = k * self.batch_size, (k + 1) * self.batch_size
        self._chunk_pos += 1
        self._cursor += self.batch_size
        return mx.io.DataBatch(data=[d[lo:hi] for d in self._chunk_data],
                               label=[self._chunk_label[lo:hi]],
                               pad=self._chunk_pads[k], provide_data=self.provide_data,
                               provide_label=self.provide_label)


def labels_for(spec: Spec, dataset: Dataset) -> np.ndarray:
    """Labels shaped as the head expects: (N,) for SoftmaxOutput, (N, k) for regression."""
    if spec.output.op == "SoftmaxOutput":
        return dataset.labels
    return dataset.labels.reshape(len(dataset.labels), -1)


def make_iter(spec: Spec, dataset: Dataset, *, batch_size: int, shuffle: bool, epoch: int = 0,
              on_epoch_start: Optional[Any] = None,
              shard: Optional[Tuple[int, int]] = None) -> ArrayIter:
    """The iterator Module.fit and Module.predict consume, named as the symbol's variables.
    `shard=(rank, num_workers)`: a dist worker's rows of every epoch (see shard_order)."""
    return ArrayIter(dataset.inputs, labels_for(spec, dataset), label_name=spec.output.label_name, batch_size=batch_size, shuffle=shuffle,
                     seed=spec.train.seed, epoch=epoch, on_epoch_start=on_epoch_start,
                     shard=shard)
