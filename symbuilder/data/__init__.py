"""Spec data -> train/val arrays shaped for the network -> mx.io iterators.

Owns label encoding (class labels to 0..K-1 for SoftmaxOutput), the seeded (stratified)
validation split, reshaping rows to `input.shape`, and the iterators Module.fit consumes.

Data larger than memory: a source read from disk (a memory-mapped .npy/.npz, or a csv or
libsvm file streamed into the cache by symbuilder.sources) that is larger than
sources.STREAM_BYTES, or has `stream: true`, is split on disk: the rows of each split (and
each input's columns) are gathered in chunks into float32 .npy files in the cache folder,
named by a hash of the source and the row indices, and memory-mapped. Calibration
(normalize.array_stats) and ArrayIter read them a chunk at a time. Labels stay in memory.
The cache folder is `export/.<name>.data/` unless the caller names one; it can be deleted
at any time (it is rebuilt).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import queue
import threading
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import mxnet as mx
import numpy as np

from .errors import DataError
from .sources import (STREAM_BYTES, NpyWriter, ReadOptions, SourceKeyError, Table,
                      check_finite, closest_text, display_path, read_table, release_pages)
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


def cache_dir_for(out_dir: str) -> str:
    """Where streamed sources and on-disk splits live: beside the export folder, hidden, as
    the run folder is (`export/.<name>.data/` for `export/<name>`)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.data")


def default_cache_dir(spec: Spec) -> str:
    return cache_dir_for(os.path.join("export", spec.name))


def _read_options(spec: Spec, source: SourceSpec, cache_dir: Optional[str]) -> ReadOptions:
    width = None
    items = spec.all_inputs
    if len(items) == 1 and items[0].columns is None:  # libsvm: the input's size is the width
        width = int(np.prod(items[0].shape))
    return ReadOptions(cache_dir=cache_dir, stream=source.stream, n_features=width,
                       zero_based=bool(source.zero_based))


def _read(spec: Spec, source: SourceSpec, key: Tuple, *, with_label: bool = True,
          cache_dir: Optional[str] = None) -> Table:
    path = spec.resolve(source.path)
    if with_label and source.label is None and source.resolved_format == "csv":
        raise spec.error(key, "missing required key 'label' (the label column's name)")
    try:
        table = read_table(path, source.resolved_format,
                           label=source.label if with_label else None, features=source.features,
                           shown_path=display_path(path),
                           options=_read_options(spec, source, cache_dir))
    except SourceKeyError as e:  # a name the spec gives: located at that key
        raise spec.error(key + (e.key,), e.spec_message, DataError) from None
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
                                 f"{suggest_text(pattern, feature_names)} "
                                 f"({closest_text(pattern, feature_names)})", DataError)
            picked += [k for k in matches if k not in picked]
        chosen[item.name] = picked
    return chosen


def check_input_sizes(spec: Spec, table: Table, columns: Dict[str, List[int]]) -> None:
    """A located error when an input's columns do not fill its shape."""
    for i, item in enumerate(spec.all_inputs):
        idx = columns[item.name]
        want = int(np.prod(item.shape))
        if len(idx) != want:
            names = [table.feature_names[k] for k in idx]
            raise spec.error(spec.input_path(i) + ("shape",),
                             f"shape {list(item.shape)} needs {want} features per sample, but "
                             f"{table.path} gives this input {len(idx)} ({', '.join(names[:5])}"
                             f"{', ...' if len(names) > 5 else ''})", DataError)


def input_arrays(spec: Spec, table: Table, columns: Dict[str, List[int]], *,
                 rows: Optional[np.ndarray] = None,
                 store: Optional["ArrayStore"] = None) -> Dict[str, np.ndarray]:
    """Each input's rows reshaped to (N, *shape); a located error when sizes differ.
    `rows`: only these rows (sorted). `store`: anything that is not a plain view of the
    table (a row or column subset) is gathered into the store's files, not into memory."""
    check_input_sizes(spec, table, columns)
    flat = table.features.reshape(len(table), -1)
    n = len(table) if rows is None else len(rows)
    out: Dict[str, np.ndarray] = {}
    for item in spec.all_inputs:
        idx = columns[item.name]
        every = idx == list(range(flat.shape[1]))
        if store is not None and (rows is not None or not every):
            out[item.name] = store.gather(table, flat, rows, None if every else idx,
                                          tuple(item.shape))
            continue
        # All columns in order: a reshape, no copy (a memory-mapped file stays on disk).
        part = flat if every else flat[:, idx]
        if rows is not None:
            part = np.ascontiguousarray(part[rows])
        out[item.name] = part.reshape((n,) + tuple(item.shape))
    return out


GATHER_BYTES = 8 << 20  # rows gathered per chunk when a split is written to disk


class ArrayStore:
    """Derived float32 arrays (split rows, input columns) as .npy files in `folder`, named
    by a hash of what they hold, so an unchanged source and split are gathered once."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.used: Set[str] = set()

    def gather(self, table: Table, flat: np.ndarray, rows: Optional[np.ndarray],
               cols: Optional[List[int]], shape: Tuple[int, ...]) -> np.ndarray:
        """`flat`'s `rows` (sorted ascending; None: all) and `cols` (None: all) as a
        memory-mapped (N, *shape) float32 file, written once."""
        if rows is not None and len(rows) > 1 and np.any(np.diff(rows) < 0):
            raise ValueError("rows must be sorted")
        digest = hashlib.sha256()
        digest.update(repr((table.identity or table.path, flat.shape, shape, cols)).encode())
        digest.update(b"all" if rows is None else np.asarray(rows, dtype=np.int64).tobytes())
        name = digest.hexdigest()[:32] + ".npy"
        path = os.path.join(self.folder, name)
        self.used.add(name)
        if not os.path.exists(path):
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            step = max(1, GATHER_BYTES // max(1, flat.shape[1] * 4))
            try:
                # Windows of `step` source rows: what is resident at once (the window's
                # pages, released behind, plus the rows picked from it) stays bounded
                # however sparse `rows` is.
                total = flat.shape[0]
                if rows is not None:
                    bounds = np.searchsorted(rows, np.arange(0, total + step, step))
                with NpyWriter(tmp) as out:
                    for k, start in enumerate(range(0, total, step)):
                        span = flat[start:start + step]
                        if rows is None:
                            block = np.asarray(span if cols is None else span[:, cols])
                        else:
                            pick = rows[bounds[k]:bounds[k + 1]]
                            if not len(pick):
                                continue
                            block = span[pick - start]
                            if cols is not None:
                                block = block[:, cols]
                        out.write(block.reshape((len(block),) + shape))
                        release_pages(span)
                    out.finish_shape(shape)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def drop_unused(self) -> None:
        """Arrays of earlier splits (another seed, fraction or file version) are removed, and
        half-written ones of processes that are gone."""
        if not os.path.isdir(self.folder):
            return
        from .sources import drop_orphans
        drop_orphans(self.folder)
        for name in os.listdir(self.folder):
            if name.endswith(".npy") and name not in self.used:
                try:
                    os.unlink(os.path.join(self.folder, name))
                except OSError:
                    pass


def _on_disk(source: SourceSpec, table: Table) -> bool:
    """Split this table on disk: it is memory-mapped and large (or `stream: true`)."""
    if not table.on_disk or source.stream is False:
        return False
    return bool(source.stream) or table.features.nbytes > STREAM_BYTES


def encode_labels(spec: Spec, train: np.ndarray, others: Sequence[np.ndarray],
                  key: Tuple) -> Tuple[np.ndarray, List[np.ndarray], Optional[List[Any]]]:
    """Class labels -> 0..K-1 (classes sorted); regression labels -> float32."""
    if not is_classification(spec):
        try:
            return (train.astype(np.float32), [o.astype(np.float32) for o in others], None)
        except (ValueError, TypeError):
            raise spec.error(key, "regression labels must be numbers", DataError) from None
    if train.dtype.kind in "iub" and all(o.dtype.kind in "iub" for o in others):
        return _encode_integers(spec, train, others, key)
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


def _encode_integers(spec: Spec, train: np.ndarray, others: Sequence[np.ndarray], key: Tuple
                     ) -> Tuple[np.ndarray, List[np.ndarray], Optional[List[Any]]]:
    """encode_labels for integer (or bool) class labels, vectorised: the same classes in the
    same order (sorted), without a Python object per row."""
    classes = np.unique(train)  # sorted; then positions by binary search, no inverse argsort
    encoded = np.searchsorted(classes, train)
    encoded_others = []
    for other in others:
        pos = np.minimum(np.searchsorted(classes, other), len(classes) - 1)
        known = classes[pos] == other
        if not known.all():
            unknown = sorted(set(other[~known].tolist()), key=str)
            raise spec.error(key, f"validation labels {unknown[:5]} never occur in the training "
                             "data", DataError)
        encoded_others.append(pos.astype(np.float32))
    return encoded.astype(np.float32), encoded_others, classes.tolist()


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


def load_data(spec: Spec, *, cache_dir: Optional[str] = None) -> SplitData:
    """Read, check, encode and split the spec's data. `cache_dir`: where a large source is
    streamed and split on disk (default `export/.<name>.data/`, beside the default export
    folder); small data never touches it."""
    if spec.data is None:
        raise spec.error((), "missing required key 'data' (training data is needed to build)")
    cache = os.path.abspath(cache_dir or default_cache_dir(spec))
    store = ArrayStore(os.path.join(cache, "arrays"))
    train_key = ("data", "train")
    table = _read(spec, spec.data.train, train_key, cache_dir=cache)
    check_finite(table)
    columns = input_columns(spec, table.feature_names)
    on_disk = _on_disk(spec.data.train, table)
    check_input_sizes(spec, table, columns)
    if spec.data.val is not None:
        features = input_arrays(spec, table, columns, store=store if on_disk else None)
        val_key = ("data", "val")
        vtable = _read(spec, spec.data.val, val_key, cache_dir=cache)
        check_finite(vtable)
        if vtable.feature_names != table.feature_names and spec.data.val.resolved_format == "csv":
            raise spec.error(val_key, f"{spec.data.val.path} has columns "
                             f"{vtable.feature_names[:5]}... unlike the training file", DataError)
        vfeatures = input_arrays(spec, vtable, columns,
                                 store=store if _on_disk(spec.data.val, vtable) else None)
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
        if on_disk:  # each split gathered into its own file, a chunk at a time
            train = Dataset(input_arrays(spec, table, columns, rows=tr, store=store),
                            y_all[tr], table.path)
            val = Dataset(input_arrays(spec, table, columns, rows=va, store=store),
                          y_all[va], table.path)
        else:
            whole = Dataset(input_arrays(spec, table, columns), y_all, table.path)
            train, val = whole.take(tr), whole.take(va)
    if store.used:
        store.drop_unused()
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
PREFETCH_CHUNKS = 2    # chunks a background thread gathers ahead (memory-mapped inputs)


def _batch_indices(order: np.ndarray, start: int, batch_size: int, shuffle: bool
                   ) -> Tuple[np.ndarray, int]:
    idx = order[start:start + batch_size]
    if shuffle:
        idx = np.sort(idx)  # same batch, read front to back
    pad = batch_size - len(idx)
    if pad:  # the repeats go last: Module.predict strips the last `pad` rows
        idx = np.concatenate([idx, np.resize(order, pad)])  # pad may exceed len(order)
    return idx, pad


def _gather(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.asarray(array[idx], dtype=np.float32)
    if array.nbytes > STREAM_BYTES:  # a large memory-mapped file: keep resident memory bounded
        release_pages(array)
    return out


Chunk = Tuple[List[np.ndarray], np.ndarray, List[int]]  # inputs, labels, pads per batch


def epoch_chunks(inputs: Dict[str, np.ndarray], labels: np.ndarray, order: np.ndarray,
                 batch_size: int, shuffle: bool, start: int = 0) -> Iterator[Chunk]:
    """An epoch's batches from position `start` of `order`, CHUNK_BYTES of them at a time,
    gathered into contiguous float32 arrays: the batches of _batch_indices, made with a few
    numpy calls per chunk (each call is a GIL hand-off when a thread runs this). A pure
    function of its arguments: prefetched or not, the batches are the same."""
    row_bytes = max(1, sum(int(np.prod(a.shape[1:])) for a in inputs.values()) * 4)
    per_chunk = max(1, CHUNK_BYTES // (row_bytes * batch_size))
    n = len(order)
    while start < n:
        stop = min(n, start + per_chunk * batch_size)
        part = order[start:stop]
        full = (len(part) // batch_size) * batch_size
        pads = [0] * (full // batch_size)
        pieces = [np.sort(part[:full].reshape(-1, batch_size), axis=1).ravel() if shuffle
                  else part[:full]]
        if full < len(part):  # the epoch's last, short batch
            pad = batch_size - (len(part) - full)
            pieces += [np.sort(part[full:]) if shuffle else part[full:],
                       np.resize(order, pad)]  # pad may exceed len(order)
            pads.append(pad)
        idx = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        start = stop
        yield ([_gather(a, idx) for a in inputs.values()],
               np.asarray(labels[idx], dtype=np.float32), pads)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(chunks: Iterator[Chunk], out: "queue.Queue[Any]", stop: threading.Event) -> None:
    """The prefetch thread: gather chunks ahead (numpy releases the GIL while it copies, and
    a memory-mapped file's page faults happen here, not in the training loop)."""
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
    try:
        for chunk in chunks:
            if stop.is_set() or not put(chunk):
                return
        put(None)
    except BaseException as e:  # handed to the consumer, raised there
        put(_Failure(e))


class _Prefetcher:
    """Runs `chunks` in a daemon thread, `depth` chunks ahead; close() stops it."""

    def __init__(self, chunks: Iterator[Chunk], depth: int) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, args=(chunks, self._queue, self._stop),
                                        name="symbuilder-prefetch", daemon=True)
        self._thread.start()

    def __next__(self) -> Chunk:
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


class ArrayIter(mx.io.DataIter):
    """Batches from numpy (or memory-mapped) arrays, in an order fixed by (seed, epoch).

    MXNet's NDArrayIter reshuffles cumulatively, so epoch e's order depends on every earlier
    epoch and a resumed run cannot reproduce it. Here epoch e's order is a permutation drawn
    from (seed, e) alone; within a batch, indices are sorted, so a memory-mapped array is
    read front to back. The last batch is padded from the start of the order (`pad` tells
    how many samples are repeats; Module.predict strips them).
    `on_epoch_start(epoch)` runs before each epoch's first batch: the trainer seeds MXNet's
    RNG there, which makes dropout masks a function of (seed, epoch) too.
    `prefetch` chunks of batches are gathered ahead by a background thread (0: none; None:
    PREFETCH_CHUNKS when an input is memory-mapped, where a gather can wait for the disk,
    else none: gathering from RAM is a memcpy, and a thread would only add GIL hand-offs).
    Within the epoch only: the next epoch's order and its on_epoch_start run at reset(), in
    the caller's thread, as without prefetching. NDArrays are made in the caller's thread.
    """

    def __init__(self, inputs: Dict[str, np.ndarray], labels: np.ndarray, *,
                 label_name: str, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: int = 0, on_epoch_start: Optional[Any] = None,
                 shard: Optional[Tuple[int, int]] = None,
                 prefetch: Optional[int] = None) -> None:
        super().__init__(batch_size)
        self.inputs = inputs
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.on_epoch_start = on_epoch_start
        self.shard = shard  # (rank, num_workers): this worker's rows of each epoch's order
        if prefetch is None:
            from .sources import is_memmapped
            disk = any(is_memmapped(a) for a in inputs.values())
            prefetch = PREFETCH_CHUNKS if disk else 0
        self.prefetch = max(0, int(prefetch))
        self._source: Optional[Any] = None
        self.provide_data = [mx.io.DataDesc(name, (batch_size,) + array.shape[1:], np.float32)
                             for name, array in inputs.items()]
        self.provide_label = [mx.io.DataDesc(label_name, (batch_size,) + labels.shape[1:],
                                             np.float32)]
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._close_source()
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

    def _close_source(self) -> None:
        source, self._source = getattr(self, "_source", None), None
        if isinstance(source, _Prefetcher):
            source.close()

    def close(self) -> None:
        """Stop the prefetch thread (also done by reset() and when the iterator is freed)."""
        self._close_source()

    def __del__(self) -> None:
        try:
            self._close_source()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def reset(self) -> None:
        self.epoch += 1
        self._start_epoch()

    def __iter__(self) -> "ArrayIter":
        return self

    def __next__(self) -> Any:
        return self.next()

    def _batch_indices(self, start: int) -> Tuple[np.ndarray, int]:
        return _batch_indices(self._order, start, self.batch_size, self.shuffle)

    def _load_chunk(self) -> None:
        """The next CHUNK_BYTES of batches as one NDArray per input: one host-to-engine copy
        per chunk instead of per batch (each mx.nd.array call costs ~0.5 ms)."""
        if self._source is None:
            chunks = epoch_chunks(self.inputs, self.labels, self._order, self.batch_size,
                                  self.shuffle, start=self._cursor)
            self._source = _Prefetcher(chunks, self.prefetch) if self.prefetch else chunks
        data, label, pads = next(self._source)
        self._chunk_data = [mx.nd.array(d, dtype=np.float32) for d in data]
        self._chunk_label = mx.nd.array(label, dtype=np.float32)
        self._chunk_pads = pads
        self._chunk_pos = 0

    def next(self) -> Any:
        if self._cursor >= len(self._order):
            self._close_source()
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
              shard: Optional[Tuple[int, int]] = None,
              prefetch: Optional[int] = None) -> ArrayIter:
    """The iterator Module.fit and Module.predict consume, named as the symbol's variables.
    `shard=(rank, num_workers)`: a dist worker's rows of every epoch (see shard_order).
    `prefetch`: chunks gathered ahead in a background thread (0: none; None: when an input
    is memory-mapped)."""
    return ArrayIter(dataset.inputs, labels_for(spec, dataset), label_name=spec.output.label_name, batch_size=batch_size, shuffle=shuffle,
                     seed=spec.train.seed, epoch=epoch, on_epoch_start=on_epoch_start,
                     shard=shard, prefetch=prefetch)
