"""Stage 3, the data: spec data -> train/val arrays shaped for the network.

Owns label encoding (class labels to 0..K-1 for SoftmaxOutput), the seeded (stratified)
validation split and reshaping rows to `input.shape`. The class count to check the labels
against comes from the Model (model.num_outputs): this stage never builds a graph.
data.sources reads the files, data.cache keeps derived arrays on disk, data.iterators
makes the mx.io iterators Module.fit consumes.

Data larger than memory: a source read from disk (a memory-mapped .npy/.npz, or a csv or
libsvm file streamed into the cache by symbuilder.data.sources) that is larger than
sources.STREAM_BYTES, or has `stream: true`, is split on disk: the rows of each split (and
each input's columns) are gathered in chunks into float32 .npy files in the cache folder,
named by a hash of the source and the row indices, and memory-mapped. Calibration
(moments.array_stats) and ArrayIter read them a chunk at a time. Labels stay in memory.
The cache folder is `export/.<name>.data/` unless the caller names one; it can be deleted
at any time (it is rebuilt).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..spec.catalog_suggest import suggest_text
from .cache import ArrayStore, cache_dir_for, default_cache_dir
from .augment import Augment, augmenter
from .images import IMAGE_FORMATS, image_read_options
from .sources import (STREAM_BYTES, ReadOptions, SourceKeyError, Table, check_finite,
                      closest_text, display_path, read_table, release_pages, source_format)

if TYPE_CHECKING:  # annotations only
    from ..spec.model import SourceSpec, Spec

__all__ = ["Dataset", "SplitData", "load_data", "cache_dir_for", "default_cache_dir"]


@dataclasses.dataclass
class Dataset:
    """Each input's features shaped (N, *shape) float32, by input name, and encoded labels (N,)."""
    inputs: Dict[str, np.ndarray]
    labels: np.ndarray
    source: str
    # The training split's rand_crop / rand_mirror (data.augment); None for every other.
    augment: Optional[Augment] = None

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


def _read_options(spec: Spec, source: SourceSpec, cache_dir: Optional[str]) -> ReadOptions:
    width = None
    items = spec.all_inputs
    if len(items) == 1 and items[0].columns is None:  # libsvm: the input's size is the width
        width = int(np.prod(items[0].shape))
    # Only the columns some input reads are parsed (a text column left out is never read);
    # every column when one input takes them all.
    patterns = None if any(item.columns is None for item in items) else tuple(
        dict.fromkeys(p for item in items for p in item.columns))
    options = ReadOptions(cache_dir=cache_dir, stream=source.stream, n_features=width,
                          zero_based=bool(source.zero_based), columns=patterns)
    return image_read_options(spec, source, options)  # image formats: input.shape, resize, ...


def _read(spec: Spec, source: SourceSpec, key: Tuple, *, with_label: bool = True,
          cache_dir: Optional[str] = None) -> Table:
    path = spec.resolve(source.path)
    if with_label and source.label is None and source_format(source) == "csv":
        raise spec.error(key, "missing required key 'label' (the label column's name)")
    try:
        table = read_table(path, source_format(source),
                           label=source.label if with_label else None, features=source.features,
                           shown_path=display_path(path),
                           options=_read_options(spec, source, cache_dir))
    except SourceKeyError as e:  # a name the spec gives: located at that key
        raise spec.error(key + (e.key,), e.spec_message, DataError) from None
    if with_label and table.labels is None:
        raise spec.error(key, f"{source.path} has no labels")
    return table


def input_columns(spec: Spec, feature_names: List[str],
                  all_names: Optional[List[str]] = None) -> Dict[str, List[int]]:
    """Which table columns (indices) feed each input: its `columns` (names or glob patterns,
    in the order given; each pattern's matches in file order), or every column.
    `all_names`: every column of the file when only some were parsed, for the suggestions."""
    known = all_names or feature_names
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
                raise spec.error(where, f"no feature column matches '{pattern}'"
                                 f"{suggest_text(pattern, known)} "
                                 f"({closest_text(pattern, known)})", DataError)
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


BYTE_RANGE = (0, 255)  # what input.dtype uint8 holds exactly


def first_non_byte(values: np.ndarray) -> Optional[Tuple[int, int]]:
    """(row, column) of the first value of a 2-D array that is not a whole number in
    0..255 (what a uint8 input holds exactly), or None."""
    bad = (values != np.round(values)) | (values < BYTE_RANGE[0]) | (values > BYTE_RANGE[1])
    if not bad.any():
        return None
    r, c = np.argwhere(bad)[0]
    return int(r), int(c)


def non_byte_message(column: str, value: float, input_name: str) -> str:
    return (f"column '{column}': {value:g} is not a whole number in 0..255, which input "
            f"'{input_name}' (dtype: uint8) takes")


def check_byte_inputs(spec: Spec, source: SourceSpec, table: Table,
                      columns: Dict[str, List[int]]) -> None:
    """input.dtype uint8: every value the input reads must be a whole number in 0..255 (the
    model's data variable holds bytes; 12.5 would become 12, 256 would wrap to 0). A located
    DataError at the first value that is not (row and column named). Image formats decode to
    such values by construction and are not read again."""
    if source_format(source) in IMAGE_FORMATS:
        return
    flat = table.features.reshape(len(table), -1)
    for item in spec.all_inputs:
        if item.dtype != "uint8":
            continue
        idx = columns[item.name]
        for start in range(0, len(table), 65536):
            block = np.asarray(flat[start:start + 65536])
            values = block if idx == list(range(flat.shape[1])) else block[:, idx]
            found = first_non_byte(values)
            release_pages(block)
            if found is not None:
                r, c = found
                row = start + r
                where = dict(line=row + table.first_data_line) if table.first_data_line else {}
                rowtext = "" if table.first_data_line else f"row {row}, "
                raise DataError(rowtext + non_byte_message(table.feature_names[idx[c]],
                                                           values[r, c], item.name),
                                file=table.path, **where)


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


def load_data(spec: Spec, *, num_outputs: Optional[int] = None,
              cache_dir: Optional[str] = None) -> SplitData:
    """Read, check, encode and split the spec's data. `num_outputs` (the Model's): the
    labels may have at most that many classes. `cache_dir`: where a large source is
    streamed and split on disk (default `export/.<name>.data/`, beside the default export
    folder); small data never touches it."""
    if spec.data is None:
        raise spec.error((), "missing required key 'data' (training data is needed to build)")
    cache = os.path.abspath(cache_dir or default_cache_dir(spec))
    store = ArrayStore(os.path.join(cache, "arrays"))
    train_key = ("data", "train")
    table = _read(spec, spec.data.train, train_key, cache_dir=cache)
    check_finite(table)
    columns = input_columns(spec, table.feature_names, table.all_names)
    on_disk = _on_disk(spec.data.train, table)
    check_input_sizes(spec, table, columns)
    check_byte_inputs(spec, spec.data.train, table, columns)
    if spec.data.val is not None:
        features = input_arrays(spec, table, columns, store=store if on_disk else None)
        val_key = ("data", "val")
        vtable = _read(spec, spec.data.val, val_key, cache_dir=cache)
        check_finite(vtable)
        if vtable.feature_names != table.feature_names and source_format(spec.data.val) == "csv":
            raise spec.error(val_key, f"{spec.data.val.path} has columns "
                             f"{vtable.feature_names[:5]}... unlike the training file", DataError)
        vfeatures = input_arrays(spec, vtable, columns,
                                 store=store if _on_disk(spec.data.val, vtable) else None)
        check_byte_inputs(spec, spec.data.val, vtable, columns)  # sizes checked by now
        y_train, (y_val,), classes = encode_labels(spec, table.labels, [vtable.labels],
                                                   val_key + ("label",))
        train = Dataset(features, y_train, table.path)
        val = Dataset(vfeatures, y_val, vtable.path)
        tr = np.arange(len(table))
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
    train.augment = augmenter(spec, _read_options(spec, spec.data.train, cache),
                              table.identity, tr, cache)
    if store.used:
        store.drop_unused()
    names = {k: [table.feature_names[c] for c in v] for k, v in columns.items()}
    if classes is not None and num_outputs is not None and len(classes) > num_outputs:
        raise spec.error(train_key + ("label",), f"the labels have {len(classes)} classes "
                         f"({classes[:10]}), but the network outputs {num_outputs} values",
                         DataError)
    used = [n for cols in names.values() for n in cols]
    return SplitData(train, val, used, classes, names)


