"""Data sources: one registered reader per file format, each returning a `Table`.

Adding a format is one decorated function here; the spec's `format:` choices and the tests
follow the registry. Readers raise located DataErrors (file:line: column 'x': ...).

Data larger than memory. Text formats (csv, libsvm) are parsed in blocks of BLOCK_CELLS
cells, never as a whole list of rows. A small file's blocks are collected in memory; a file
larger than STREAM_BYTES (or any file with `stream: true`) is converted once, block by block,
into a float32 .npy in the cache folder the caller names (`ReadOptions.cache_dir`; the
build's is `export/.<name>.data/`) and memory-mapped from there. The cache entry is keyed by
the file (absolute path, size, mtime) and the reading options, so a second build reads the
.npy directly and a changed file is converted again. Both paths run the same parser, so a
streamed file gives the same Table and the same located errors as an in-memory one. A
float32 .npy (or an uncompressed .npz member) is memory-mapped in place; other dtypes above
the threshold are converted into the cache in chunks. Labels (one value a row) stay in memory.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import difflib
import fnmatch
import hashlib
import itertools
import json
import math
import os
import shutil
import struct
import uuid
import zipfile
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from ..spec.catalog_suggest import suggest_text
from ..moments import release_pages  # re-exported: the readers and data/ release pages too

STREAM_BYTES = 256 << 20   # files above this are streamed into the cache (unless stream: false)
BLOCK_CELLS = 1 << 16      # cells per parsed block: bounds a text reader's transient memory
CACHE_VERSION = 1          # bump when the cache layout or a parser's output changes
_NPY_HEADER = 256          # fixed header size of the .npy files written here (64-aligned)
F32_MAX = float(np.finfo(np.float32).max)  # larger values become inf in the float32 features
_NON_FINITE = ("nan", "inf", "infinity")    # what float() reads as NaN/inf, sign and case aside


@dataclasses.dataclass
class ReadOptions:
    """How a file is read, beyond its format and label."""
    cache_dir: Optional[str] = None   # where streamed conversions go; None: always in memory
    stream: Optional[bool] = None     # True: stream (needs cache_dir); False: never; None: by size
    n_features: Optional[int] = None  # libsvm: dense width (default: the largest index seen)
    zero_based: bool = False          # libsvm: feature indices count from 0 (default: from 1)
    # csv: glob patterns naming the feature columns to parse (the inputs' `columns`), so a
    # column no input reads (an id, a city name) is never parsed; None: every column.
    columns: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass
class Table:
    """Features (N, F...) as float32 and raw labels (N,) or None, with feature names."""
    features: np.ndarray
    labels: Optional[np.ndarray]
    feature_names: List[str]
    path: str
    first_data_line: int = 1  # file line of row 0, so errors can name lines (csv: 2)
    # What the rows are (the file's path, size and mtime, and the reading options), for
    # cache keys of arrays derived from them; None when unknown.
    identity: Optional[str] = None
    finite_checked: bool = False  # the reader already located every non-finite value
    # Every feature column of the file when the reader parsed only some (ReadOptions.columns):
    # the names a misspelt pattern is compared against.
    all_names: Optional[List[str]] = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def on_disk(self) -> bool:
        """The features are memory-mapped from a file (never loaded whole)."""
        return is_memmapped(self.features)


Reader = Callable[..., Table]
SOURCES: Dict[str, Reader] = {}


# File extension (lower case, no dot) -> format, for a source without `format:`.
EXTENSIONS: Dict[str, str] = {}
DEFAULT_FORMAT = "csv"  # what a file with an unknown extension is read as


def register_source(fmt: str, *, extensions: Tuple[str, ...] = ()) -> Callable[[Reader], Reader]:
    """Register a reader for `format: fmt`, the default for files ending in `extensions`
    (the format's own name counts as one). A duplicate registration is an error."""
    def decorate(fn: Reader) -> Reader:
        if fmt in SOURCES:
            raise ValueError(f"data source '{fmt}' is registered twice")
        SOURCES[fmt] = fn
        for ext in (fmt,) + tuple(extensions):
            EXTENSIONS.setdefault(ext, fmt)
        return fn
    return decorate


def source_format(source: Any) -> str:
    """The format a spec's data source is read in: its `format:`, else the one its file
    extension names, else csv."""
    if source.format:
        return source.format
    ext = os.path.splitext(source.path)[1].lower().lstrip(".")
    return EXTENSIONS.get(ext, DEFAULT_FORMAT)


def check_formats(spec: Any) -> None:
    """Every `format:` the spec names has a registered reader; a located error otherwise."""
    for key in ("train", "val"):
        source = getattr(spec.data, key, None) if spec.data is not None else None
        if source is not None and source.format and source.format not in SOURCES:
            raise spec.error(("data", key, "format"), f"unknown data format "
                             f"'{source.format}'{suggest_text(source.format, sorted(SOURCES))}; "
                             f"known: {', '.join(sorted(SOURCES))}")


class SourceKeyError(DataError):
    """A name the spec gives is wrong: the data file (`key` 'path'), its label column or label
    file ('label'), its feature array ('features'). Located in the data file as usual; a
    caller that knows the spec locates it at that key instead (data.train.label), with
    `spec_message`, which names the file."""

    def __init__(self, key: str, message: str, spec_message: str, *, file: str,
                 line: Optional[int] = None) -> None:
        super().__init__(message, file=file, line=line)
        self.key = key
        self.spec_message = spec_message


def display_path(path: str) -> str:
    """`path` as the user can open it from the working folder: relative to it when the file
    is below it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def closest_text(word: str, names: List[str], n: int = 4) -> str:
    """'closest: a, b, c, ...': the `n` names most like `word` (difflib), best first, so the
    one meant is shown even when it sits at the end of a long header."""
    best = difflib.get_close_matches(word, names, n=n, cutoff=0.0)
    best.sort(key=lambda c: c.lower() != word.lower())  # a case-only difference first
    return f"closest: {', '.join(best)}{', ...' if len(names) > len(best) else ''}"


def check_readable(path: str, shown: str, key: str = "path", what: str = "data file") -> None:
    """A SourceKeyError unless `path` is a readable, non-empty file (with a did-you-mean for a
    missing one, from the names in its folder)."""
    named = f"{what} '{shown}'"
    if not os.path.exists(path):
        folder = os.path.dirname(path) or "."
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        match = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.6)
        hint = f" (did you mean '{os.path.join(os.path.dirname(shown), match[0])}'?)" \
            if match else ""
        raise SourceKeyError(key, f"no such {what}{hint}", f"no such {named}{hint}", file=shown)
    if os.path.isdir(path):
        raise SourceKeyError(key, f"is a folder, not a {what}",
                             f"'{shown}' is a folder, not a {what}", file=shown)
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise SourceKeyError(key, f"cannot read: {reason}", f"cannot read {named}: {reason}",
                             file=shown) from None
    if empty:
        raise SourceKeyError(key, "is empty (0 bytes)", f"{named} is empty (0 bytes)",
                             file=shown)


def read_table(path: str, fmt: str, *, label: Optional[str], features: Optional[str] = None,
               shown_path: Optional[str] = None, options: Optional[ReadOptions] = None) -> Table:
    """Read `path` with the reader registered for `fmt`. `label=None`: no label (predict)."""
    shown = shown_path or path
    if not getattr(SOURCES.get(fmt), "reads_folder", False):  # image_folder checks its own
        check_readable(path, shown)
    try:
        reader = SOURCES[fmt]
    except KeyError:
        raise DataError(f"unknown data format '{fmt}'; known: {', '.join(SOURCES)}",
                        file=shown) from None
    table = reader(path, label=label, features=features, shown=shown,
                   options=options or ReadOptions())
    if len(table) == 0:
        raise DataError("no data rows", file=shown)
    return table


def is_memmapped(array: np.ndarray) -> bool:
    """`array` is (a view of) an np.memmap."""
    node = array
    while isinstance(node, np.ndarray):
        if isinstance(node, np.memmap):
            return True
        node = node.base
    return False


def file_identity(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _streams(path: str, options: ReadOptions) -> bool:
    if options.cache_dir is None or options.stream is False:
        return False
    return options.stream is True or os.path.getsize(path) > STREAM_BYTES


# -- text formats: parsed in blocks, collected in memory or streamed into the cache ---------

Blocks = Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]  # (float32 rows, label strings)


@dataclasses.dataclass
class _Parsed:
    """What a text parser learns besides its rows (filled in while its blocks are read)."""
    names: List[str] = dataclasses.field(default_factory=list)
    first_data_line: int = 1
    all_names: Optional[List[str]] = None  # every feature column, when only some are parsed


def _text_table(path: str, fmt: str, shown: str, options: ReadOptions, key: Dict,
                parse: Callable[[_Parsed], Blocks]) -> Table:
    """Run `parse` into memory, or, when streaming, into (or out of) the cache."""
    identity = _cache_key(path, fmt, key)
    if not _streams(path, options):
        info = _Parsed()
        blocks, label_blocks = [], []
        for rows, labels in parse(info):
            blocks.append(rows)
            if labels is not None:
                label_blocks.append(labels)
        width = len(info.names)
        features = np.concatenate(blocks) if blocks else np.empty((0, width), np.float32)
        labels = _labels_from_blocks(label_blocks) if label_blocks else None
        return Table(features, labels, info.names, shown,
                     first_data_line=info.first_data_line, identity=identity, finite_checked=True,
                     all_names=info.all_names)
    return _cached_table(path, shown, options.cache_dir, identity, parse)


def _cache_key(path: str, fmt: str, key: Dict) -> str:
    text = json.dumps({"v": CACHE_VERSION, "fmt": fmt, "file": file_identity(path), **key},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_entry(cache_dir: str, path: str, identity: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(path))
    return os.path.join(cache_dir, "sources", f"{stem}-{identity[:16]}")


def _cached_table(path: str, shown: str, cache_dir: str, identity: str,
                  parse: Callable[[_Parsed], Blocks]) -> Table:
    entry = cache_entry(cache_dir, path, identity)
    if not os.path.exists(os.path.join(entry, "meta.json")):
        _convert(path, shown, entry, identity, parse)
    return load_entry(entry, shown, identity)


def _convert(path: str, shown: str, entry: str, identity: str,
             parse: Callable[[_Parsed], Blocks]) -> None:
    """Stream the parser's blocks into a float32 .npy; publish the entry atomically."""
    with staged_entry(entry, path) as tmp:
        info = _Parsed()
        label_blocks: List[np.ndarray] = []
        with NpyWriter(os.path.join(tmp, "features.npy")) as out:
            for rows, labels in parse(info):
                out.write(rows)
                if labels is not None:
                    label_blocks.append(labels)
            out.finish_shape((len(info.names),))
            rows_total = out.rows
        if rows_total == 0:
            raise DataError("no data rows", file=shown)
        meta = {"version": CACHE_VERSION, "source": os.path.abspath(path), "identity": identity,
                "rows": rows_total, "feature_names": info.names,
                "first_data_line": info.first_data_line, "labels": None,
                "all_names": info.all_names}
        if label_blocks:
            labels = _labels_from_blocks(label_blocks)
            meta["labels"] = "str" if labels.dtype == object else str(labels.dtype)
            np.save(os.path.join(tmp, "labels.npy"),
                    labels.astype(str) if labels.dtype == object else labels)
        write_json(os.path.join(tmp, "meta.json"), meta)


@contextlib.contextmanager
def staged_entry(entry: str, source: str) -> Iterator[str]:
    """A fresh staging folder for the cache entry `entry` of the file `source`. When the block
    ends having written meta.json, the folder is published atomically and earlier
    conversions of the source are dropped; when it ends without (it chose not to convert),
    or raises, the folder is removed. A kill leaves it to drop_orphans."""
    tmp = f"{entry}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        yield tmp
        if not os.path.exists(os.path.join(tmp, "meta.json")):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            os.replace(tmp, entry)
        except OSError:  # another process published the same entry first: theirs is as good
            if not os.path.exists(os.path.join(entry, "meta.json")):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _drop_stale_entries(os.path.dirname(entry), os.path.abspath(source), keep=entry)


def _drop_stale_entries(folder: str, source: str, keep: str) -> None:
    """Earlier conversions of the same file (it changed since) and conversions left half-done
    by a process that is gone (killed mid-way): no longer needed."""
    drop_orphans(folder)
    for name in os.listdir(folder):
        other = os.path.join(folder, name)
        if other == keep or ".tmp-" in name:
            continue
        try:
            with open(os.path.join(other, "meta.json")) as f:
                if json.load(f).get("source") == source:
                    shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError):
            continue


def drop_orphans(folder: str) -> None:
    """Remove `*.tmp-<pid>-*` files and folders in `folder` whose process has ended."""
    for name in os.listdir(folder):
        if ".tmp-" not in name:
            continue
        try:
            pid = int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def load_entry(entry: str, shown: str, identity: str) -> Table:
    with open(os.path.join(entry, "meta.json")) as f:
        meta = json.load(f)
    features = np.load(os.path.join(entry, "features.npy"), mmap_mode="r", allow_pickle=False)
    labels = None
    if meta["labels"] is not None:
        labels = np.load(os.path.join(entry, "labels.npy"), allow_pickle=False)
        if meta["labels"] == "str":
            labels = labels.astype(object)
    return Table(features, labels, list(meta["feature_names"]), shown,
                 first_data_line=int(meta["first_data_line"]), identity=identity,
                 finite_checked=True, all_names=meta.get("all_names"))


def write_json(path: str, data: Dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def npy_header(shape: Tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy (version 1.0) header of exactly _NPY_HEADER bytes, so it can be rewritten in
    place once the row count is known."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype, tuple(shape))
    body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class NpyWriter:
    """Writes float32 rows to a .npy file front to back (plain writes: the pages go to the
    page cache, not this process's resident memory); the shape is written at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows = 0
        self.row_shape: Optional[Tuple[int, ...]] = None
        self._f = open(path, "wb")
        self._f.write(npy_header((0,)))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.row_shape is None:
            self.row_shape = tuple(rows.shape[1:])
        self._f.write(memoryview(rows).cast("B"))
        self.rows += int(rows.shape[0])

    def finish_shape(self, row_shape: Tuple[int, ...]) -> None:
        shape = (self.rows,) + tuple(self.row_shape if self.row_shape is not None else row_shape)
        self._f.flush()
        self._f.seek(0)
        self._f.write(npy_header(shape))
        self._f.flush()
        os.fsync(self._f.fileno())

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _labels_from_blocks(blocks: List[np.ndarray]) -> np.ndarray:
    """`_numeric_if_possible` over the concatenated label strings, a block at a time."""
    numbers = []
    try:
        for block in blocks:
            numbers.append(np.array([float(x) for x in block.tolist()], dtype=np.float64))
    except ValueError:
        return np.concatenate(blocks).astype(object) if blocks else np.array([], dtype=object)
    values = np.concatenate(numbers) if numbers else np.array([], dtype=np.float64)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


# -- csv --------------------------------------------------------------------------------

@register_source("csv")
def read_csv(path: str, *, label: Optional[str], features: Optional[str], shown: str,
             options: Optional[ReadOptions] = None) -> Table:
    """A CSV file with a header row; `label` names the label column, every other column is a
    feature in file order. Non-numeric, empty, NaN or infinite feature cells are errors that
    name the line and the column."""
    options = options or ReadOptions()
    columns = options.columns
    key = {"label": label, **({"columns": list(columns)} if columns is not None else {})}
    return _text_table(path, "csv", shown, options, key,
                       lambda info: _csv_blocks(path, label, shown, info, columns))


def _selected(header: List[str], label_index: Optional[int],
              columns: Optional[Tuple[str, ...]]) -> List[int]:
    """The feature columns to parse, in file order: those any pattern of `columns` matches."""
    return [i for i in range(len(header)) if i != label_index and (
        columns is None or any(fnmatch.fnmatchcase(header[i], p) for p in columns))]


def _csv_blocks(path: str, label: Optional[str], shown: str, info: _Parsed,
                columns: Optional[Tuple[str, ...]] = None) -> Blocks:
    """The CSV's rows in blocks. Errors come in the order a whole-file read finds them: an
    unreadable file, the header, the first row with a wrong field count, the first bad
    feature cell, the first empty label; so the rows are all read before one is raised."""
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        records = _csv_records(csv.reader(f), shown, path)
        first = next(records, None)
        if first is None or not any(cell.strip() for cell in first):
            _drain(records)
            raise DataError("empty CSV file; expected a header row", file=shown, line=1)
        header = [h.strip() for h in first]
        problem = _header_problem(header, label, shown)
        if problem is not None:
            _drain(records)
            raise problem
        label_index = header.index(label) if label is not None else None
        feature_idx = _selected(header, label_index, columns)
        info.names = [header[i] for i in feature_idx]
        if columns is not None:
            info.all_names = [h for i, h in enumerate(header) if i != label_index]
        info.first_data_line = 2
        block_rows = max(1, BLOCK_CELLS // len(header))
        first_line = 2
        for block_lines in _line_blocks(f, block_rows, shown, path):
            parsed = _fast_block(block_lines, len(header), label_index, feature_idx)
            if parsed is None:  # the careful reader from this block on: it locates the errors
                records = _csv_records(csv.reader(itertools.chain(block_lines, f)), shown, path)
                yield from _careful_blocks(records, first_line, block_rows, header,
                                           label_index, feature_idx, shown)
                return
            first_line += len(block_lines)
            yield parsed


def _line_blocks(f: Any, block_rows: int, shown: str, path: str) -> Iterator[List[str]]:
    """The file's remaining lines, `block_rows` at a time (undecodable bytes located)."""
    while True:
        try:
            lines = list(itertools.islice(f, block_rows))
        except UnicodeDecodeError:
            raise not_utf8(path, shown) from None
        if not lines:
            return
        yield lines


def _fast_block(lines: List[str], width: int, label_index: Optional[int],
                feature_idx: List[int]) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """A block parsed by numpy's C reader (3x faster than csv + float() on a 50,000-row
    file: issue 12's whole-build benchmark), or None when the block has anything the careful
    reader must judge or locate: a quote (quoted cells may hold commas and newlines), a blank
    line, a field count other than the header's, a cell numpy does not read as a number, a
    value outside float32, an empty or non-finite label. Where it returns values, they equal
    the careful reader's (both read decimal text to the nearest float64; tests/test_csv_fast.py
    compares the two on generated files)."""
    if any('"' in line or not line.strip() or line.count(",") != width - 1 for line in lines):
        return None
    try:
        values = np.loadtxt(lines, delimiter=",", comments=None, dtype=np.float64,
                            usecols=feature_idx, ndmin=2) if feature_idx else \
            np.zeros((len(lines), 0))
    except ValueError:
        return None
    if values.shape[0] != len(lines) or not fits_float32(values):
        return None
    labels = None
    if label_index is not None:
        raw = _column_text(lines, label_index, width)
        if any(label_problem(text) for text in set(raw)):
            return None
        labels = np.array(raw, dtype=str)
    return values.astype(np.float32), labels


def _column_text(lines: List[str], index: int, width: int) -> List[str]:
    """Cell `index` of each quote-free line, stripped; the first or last without splitting
    the whole line (10x faster for a label column at either end, the usual place)."""
    if index == width - 1:
        return [line.rpartition(",")[2].strip() for line in lines]
    if index == 0:
        return [line.partition(",")[0].strip() for line in lines]
    return [line.split(",")[index].strip() for line in lines]


def _careful_blocks(records: Iterator[List[str]], first_line: int, block_rows: int,
                    header: List[str], label_index: Optional[int], feature_idx: List[int],
                    shown: str) -> Blocks:
    """csv's reader and float() on every cell, row by row: every mistake located at its line
    and column, the first of each kind raised once the file has been read to its end."""
    errors: Dict[str, DataError] = {}
    body: List[List[str]] = []
    lines: List[int] = []
    for i, row in enumerate(records):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            errors.setdefault("count", DataError(
                f"expected {len(header)} fields as in the header, found {len(row)}",
                file=shown, line=i + first_line))
        if errors.get("count") or errors.get("cell"):
            continue  # only the file's readability and field counts can still matter
        body.append(row)
        lines.append(i + first_line)
        if len(body) == block_rows:
            yield from _csv_block(body, lines, header, label_index, feature_idx, shown, errors)
            body, lines = [], []
    if body and not (errors.get("count") or errors.get("cell")):
        yield from _csv_block(body, lines, header, label_index, feature_idx, shown, errors)
    for kind in ("count", "cell", "label"):
        if kind in errors:
            raise errors[kind]


def _header_problem(header: List[str], label: Optional[str], shown: str
                    ) -> Optional[DataError]:
    """Two columns of one name (a model reads, and predict matches, columns by name: one of
    them would be read in the other's place), or no column named `label`."""
    first: Dict[str, int] = {}
    for i, name in enumerate(header):
        if name in first:
            what = "have no name" if name == "" else f"are both named '{name}'"
            return DataError(f"columns {first[name] + 1} and {i + 1} {what}; column names must "
                             "be unique", file=shown, line=1)
        first[name] = i
    if label is not None and label not in first:
        closest = closest_text(label, header)
        return SourceKeyError("label", f"no label column '{label}' ({closest})",
                              f"no label column '{label}' in {shown} ({closest})",
                              file=shown, line=1)
    return None


def _csv_records(reader: Iterator[List[str]], shown: str, path: str) -> Iterator[List[str]]:
    try:
        yield from reader
    except UnicodeDecodeError:
        raise not_utf8(path, shown) from None
    except csv.Error as e:
        raise DataError(f"not a readable CSV file: {e}", file=shown) from None


def not_utf8(path: str, shown: str) -> DataError:
    """The first byte of `path` that is not UTF-8, located at its line and column (a decoder
    reports only an offset into its buffer)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as e:
                return DataError(f"not UTF-8 text (byte {raw[e.start]:#04x}); save the file as "
                                 "UTF-8", file=shown, line=lineno, column=e.start + 1)
    return DataError("not UTF-8 text (it ends inside a character); save the file as UTF-8",
                     file=shown)


def _drain(records: Iterator[List[str]]) -> None:
    for _ in records:
        pass


def _csv_block(body: List[List[str]], lines: List[int], header: List[str],
               label_index: Optional[int], feature_idx: List[int], shown: str,
               errors: Dict[str, DataError]) -> Blocks:
    cells = np.array(body, dtype=object).reshape(len(body), len(header))
    try:
        values = cells[:, feature_idx].astype(np.float64)
    except ValueError:
        values = None
    if values is None or not fits_float32(values):
        try:
            _raise_first_bad_cell(cells, feature_idx, header, lines, shown)
        except DataError as e:
            errors["cell"] = e
            return
    labels = None
    if label_index is not None:
        raw = [c.strip() for c in cells[:, label_index]]
        if "label" not in errors:
            for text, line in zip(raw, lines):
                problem = label_problem(text)
                if problem:
                    errors["label"] = DataError(f"column '{header[label_index]}': {problem}",
                                                file=shown, line=line)
                    break
        labels = np.array(raw, dtype=str)
    yield values.astype(np.float32), labels


def fits_float32(values: np.ndarray) -> bool:
    """Every value is finite and within float32's range (NaN compares False)."""
    with np.errstate(invalid="ignore"):
        return bool((np.abs(values) <= F32_MAX).all())


def number_problem(text: str) -> Optional[str]:
    """Why the feature cell `text` is not a float32 number, or None."""
    try:
        value = float(text)
    except ValueError:
        return "empty value" if text == "" else f"not a number: {text!r}"
    if not math.isfinite(value):
        return f"not a finite number: {text}"
    if abs(value) > F32_MAX:
        return f"value {text} does not fit float32 (max 3.4e38)"
    return None


def label_problem(text: str) -> Optional[str]:
    """Why the label cell `text` is no label: empty, or NaN/inf (a missing value written out;
    no class and no regression target)."""
    if text == "":
        return "empty label"
    if text.lower().lstrip("+-") in _NON_FINITE:
        return f"label {text} is not a finite value (a missing value?)"
    return None


def _raise_first_bad_cell(cells: np.ndarray, feature_idx: List[int], header: List[str],
                          lines: List[int], shown: str) -> None:
    for r, line in enumerate(lines):
        for c in feature_idx:
            problem = number_problem(str(cells[r, c]).strip())
            if problem:
                raise DataError(f"column '{header[c]}': {problem}", file=shown, line=line)


def _numeric_if_possible(raw: List[str]) -> np.ndarray:
    return _labels_from_blocks([np.array(raw, dtype=str)])


# -- libsvm -----------------------------------------------------------------------------

@register_source("libsvm", extensions=("svm", "svmlight"))
def read_libsvm(path: str, *, label: Optional[str], features: Optional[str], shown: str,
                options: Optional[ReadOptions] = None) -> Table:
    """A LibSVM/svmlight text file: `label index:value index:value ...` a line, indices
    counting from 1 (LibSVM's convention; `zero_based: true` for files that count from 0),
    absent indices are 0. `# ...` comments and blank lines are skipped. The dense width is
    the input's size when the spec gives it (one input without `columns`), else the largest
    index. Features are named x<index> as the file numbers them."""
    options = options or ReadOptions()
    base = 0 if options.zero_based else 1
    width = options.n_features
    key = {"zero_based": bool(options.zero_based), "n_features": width}
    if width is None:
        if not _streams(path, options):
            return _libsvm_in_memory(path, shown, base, options, key)
        # Streaming needs the width before the first row is written: one pass to find it.
        high = -1
        for cols, _rows, _vals, _n, _labels in _libsvm_sparse(path, shown, base, None):
            high = max(high, int(cols.max()) if cols.size else -1)
        width = high + 1

    def dense(info: _Parsed) -> Blocks:
        info.names = [f"x{i + base}" for i in range(width)]
        info.first_data_line = 1
        for cols, rows, vals, n, labels in _libsvm_sparse(path, shown, base, width):
            block = np.zeros((n, width), dtype=np.float32)
            block[rows, cols] = vals
            yield block, labels
    return _text_table(path, "libsvm", shown, options, key, dense)


def _libsvm_in_memory(path: str, shown: str, base: int, options: ReadOptions,
                      key: Dict) -> Table:
    """Width unknown: keep the sparse blocks, densify once the largest index is known."""
    parts = list(_libsvm_sparse(path, shown, base, None))
    width = max([int(p[0].max()) + 1 for p in parts if p[0].size] or [0])

    def dense(info: _Parsed) -> Blocks:
        info.names = [f"x{i + base}" for i in range(width)]
        for cols, rows, vals, n, labels in parts:
            block = np.zeros((n, width), dtype=np.float32)
            block[rows, cols] = vals
            yield block, labels
    return _text_table(path, "libsvm", shown, options, key, dense)


def _libsvm_sparse(path: str, shown: str, base: int, width: Optional[int]
                   ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]]:
    """(columns, rows within the block, float32 values, rows in the block, label strings)
    per block; the first mistake in the file raises a DataError at its line."""
    try:
        f = open(path, "r", encoding="utf-8")
        with f:
            labels: List[str] = []
            lines: List[int] = []
            row_of: List[int] = []
            keys: List[str] = []
            values: List[str] = []
            for lineno, text in enumerate(f, 1):
                parts = text.split("#", 1)[0].split()
                if not parts:
                    continue
                if ":" in parts[0]:
                    raise DataError(f"expected the label first, found {parts[0]!r}",
                                    file=shown, line=lineno)
                problem = label_problem(parts[0])
                if problem:
                    raise DataError(problem, file=shown, line=lineno)
                row = len(labels)
                labels.append(parts[0])
                lines.append(lineno)
                for token in parts[1:]:
                    k, sep, v = token.partition(":")
                    if k == "qid":
                        raise DataError("qid (a ranking query id) is not supported",
                                        file=shown, line=lineno)
                    if not sep or not k or not v:
                        raise DataError(f"expected index:value, found {token!r}", file=shown,
                                        line=lineno)
                    row_of.append(row)
                    keys.append(k)
                    values.append(v)
                if len(keys) + len(labels) >= BLOCK_CELLS:
                    yield _libsvm_block(labels, lines, row_of, keys, values, shown, base, width)
                    labels, lines, row_of, keys, values = [], [], [], [], []
            if labels:
                yield _libsvm_block(labels, lines, row_of, keys, values, shown, base, width)
    except UnicodeDecodeError:
        raise not_utf8(path, shown) from None


def _libsvm_block(labels: List[str], lines: List[int], row_of: List[int], keys: List[str],
                  values: List[str], shown: str, base: int, width: Optional[int]
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    rows = np.array(row_of, dtype=np.int64)
    try:
        index = np.array(keys, dtype=str).astype(np.int64) if keys else np.zeros(0, np.int64)
    except ValueError:
        for r, k in zip(row_of, keys):
            try:
                int(k)
            except ValueError:
                raise DataError(f"feature index {k!r} is not an integer", file=shown,
                                line=lines[r]) from None
        index = np.array([int(k) for k in keys], dtype=np.int64)  # numpy stricter than int()
    cols = index - base
    bad = np.flatnonzero((cols < 0) | ((cols >= width) if width is not None else False))
    if bad.size:
        j = int(bad[0])
        if cols[j] < 0:
            hint = " (zero_based: true reads a file that counts from 0)" if base == 1 else ""
            message = f"feature index {index[j]}: indices count from {base}{hint}"
        else:
            message = (f"feature index {index[j]} is beyond the {width} features the input's "
                       f"shape gives")
        raise DataError(message, file=shown, line=lines[row_of[j]])
    try:
        vals = np.array(values, dtype=str).astype(np.float64) if values else np.zeros(0)
    except ValueError:
        vals = None
    if vals is None or not fits_float32(vals):
        for r, k, v in zip(row_of, keys, values):
            problem = number_problem(v)
            if problem:
                raise DataError(f"column 'x{int(k)}': {problem}", file=shown, line=lines[r])
        vals = np.array([float(v) for v in values], dtype=np.float64)  # numpy stricter
    if rows.size:
        order = np.lexsort((cols, rows))
        same = (rows[order][1:] == rows[order][:-1]) & (cols[order][1:] == cols[order][:-1])
        if same.any():
            j = int(order[int(np.flatnonzero(same)[0])])
            raise DataError(f"feature index {index[j]} appears twice", file=shown,
                            line=lines[row_of[j]])
    return cols, rows, vals.astype(np.float32), len(labels), np.array(labels, dtype=str)


# -- arrays -----------------------------------------------------------------------------

@register_source("npz")
def read_npz(path: str, *, label: Optional[str], features: Optional[str], shown: str,
             options: Optional[ReadOptions] = None) -> Table:
    """An .npz archive with a feature array (default `X`, any shape (N, ...)) and a label
    array (default `y`, shape (N,)). A float32 feature array stored uncompressed (np.savez)
    is memory-mapped in place; a compressed one is loaded, or streamed into the cache above
    the threshold."""
    options = options or ReadOptions()
    x_key = features or "X"
    archive = _open_npz(path, shown)
    with archive:
        _npz_member_check(path, archive, x_key, shown, "features", "feature array")
        y = None
        y_key = label or "y"
        if label is not None or "y" in archive.files:
            _npz_member_check(path, archive, y_key, shown, "label", "label array")
            y = _npz_load(archive, y_key, shown)
        x = _npz_memmap(path, x_key)
        identity = _cache_key(path, "npz", {"features": x_key})
        if x is None:
            if _streams(path, options):
                x = _npz_to_cache(path, x_key, shown, options, identity)
            if x is None:
                x = _npz_load(archive, x_key, shown)
    return _array_table(x, y, shown, identity, options=options, path=path,
                        x_what=f"array '{x_key}'", y_what=f"array '{y_key}'")


def _open_npz(path: str, shown: str) -> "np.lib.npyio.NpzFile":
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        raise DataError("a .npy file, not an .npz archive (format: npy reads it)" if npy else
                        "not an .npz archive (not a zip file)", file=shown)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"not a readable .npz archive: {e}", file=shown) from None


def _npz_member_check(path: str, archive: "np.lib.npyio.NpzFile", key: str, shown: str,
                      spec_key: str, what: str) -> None:
    """The member `key` exists, is a .npy array, and can be loaded without pickle."""
    if key not in archive.files:
        known = f"(arrays: {', '.join(archive.files) or 'none'})"
        raise SourceKeyError(spec_key, f"no {what} '{key}' {known}",
                             f"no {what} '{key}' in {shown} {known}", file=shown)
    try:
        with zipfile.ZipFile(path) as z:
            if key + ".npy" not in z.namelist():
                raise DataError(f"member '{key}' is not a .npy array (np.savez writes them)",
                                file=shown)
            info = z.getinfo(key + ".npy")
            with z.open(info) as member:
                header = _npy_header_or_error(member, f"array '{key}': ", shown)
                problem = _array_problem(*header, info.file_size - member.tell())
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"array '{key}': not readable: {e}", file=shown) from None
    if problem:
        raise DataError(f"array '{key}' {problem}", file=shown)


def _npz_load(archive: "np.lib.npyio.NpzFile", key: str, shown: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"array '{key}': not readable: {e}", file=shown) from None


def _npy_header_or_error(f: object, prefix: str, shown: str
                         ) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    try:
        return _npy_header_of(f)
    except (ValueError, EOFError, SyntaxError) as e:  # bad magic, bad or cut header dict
        raise DataError(f"{prefix}not a .npy array (a bad header: {e})", file=shown) from None


def _array_problem(shape: Tuple[int, ...], fortran: bool, dtype: np.dtype,
                   data_bytes: int) -> Optional[str]:
    """Why an array with this .npy header cannot be read, or None: objects (loading them
    needs pickle, which can run code), or fewer bytes than the header promises."""
    if dtype.hasobject:
        return ("holds Python objects (dtype object), which only pickle can load, and "
                "pickle can run code; save an array of numbers")
    need = dtype.itemsize * int(np.prod(shape))
    if data_bytes < need:
        return f"is truncated: its header promises {need} bytes of data, it holds {data_bytes}"
    return None


def _npz_memmap(path: str, key: str) -> Optional[np.ndarray]:
    """The archive member `key` memory-mapped, if it is stored uncompressed; else None."""
    try:
        with zipfile.ZipFile(path) as z:
            member = z.getinfo(key + ".npy")
            if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1:
                return None
        with open(path, "rb") as f:
            f.seek(member.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = member.header_offset + 30 + name_len + extra_len
            f.seek(start)
            shape, fortran, dtype = _npy_header_of(f)
            offset = f.tell()
        if dtype.hasobject or offset + dtype.itemsize * int(np.prod(shape)) > \
                start + member.file_size:
            return None
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None


def _npy_header_of(f: object) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy version {version}")


def _npz_to_cache(path: str, key: str, shown: str, options: ReadOptions,
                  identity: str) -> Optional[np.ndarray]:
    """A compressed member decompressed in chunks into a float32 .npy in the cache; None
    when it cannot be (Fortran order, not numbers)."""
    entry = cache_entry(options.cache_dir, path, identity)
    target = os.path.join(entry, "features.npy")
    if not os.path.exists(target):
        with staged_entry(entry, path) as tmp:
            with zipfile.ZipFile(path) as z, z.open(key + ".npy") as member:
                shape, fortran, dtype = _npy_header_of(member)
                if dtype.hasobject or fortran or dtype.kind not in "fiub" or not shape:
                    return None  # loaded (or refused) the ordinary way; nothing published
                row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                step = max(1, (32 << 20) // max(1, row * dtype.itemsize))
                with NpyWriter(os.path.join(tmp, "features.npy")) as out:
                    for start in range(0, shape[0], step):
                        n = min(step, shape[0] - start)
                        raw = _read_exact(member, n * row * dtype.itemsize)
                        block = np.frombuffer(raw, dtype=dtype).reshape((n,) + shape[1:])
                        check_float32(block, start, shown, f"array '{key}'")
                        out.write(block)
                    out.finish_shape(tuple(shape[1:]))
            write_json(os.path.join(tmp, "meta.json"), {
                "version": CACHE_VERSION, "source": os.path.abspath(path),
                "identity": identity, "rows": int(shape[0]), "array": key})
    return np.load(target, mmap_mode="r", allow_pickle=False)


def _read_exact(stream: object, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)  # type: ignore[attr-defined]
        if not chunk:
            raise ValueError("truncated array in the archive")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@register_source("npy")
def read_npy(path: str, *, label: Optional[str], features: Optional[str], shown: str,
             options: Optional[ReadOptions] = None) -> Table:
    """A .npy feature array, memory-mapped; `label` is the path of a .npy label array
    (relative to the feature file's folder)."""
    x = _load_npy(path, shown, mmap=True)
    y = None
    label_shown = shown
    if label is not None:
        label_path = label if os.path.isabs(label) else os.path.join(os.path.dirname(path), label)
        label_shown = label if os.path.isabs(label) else os.path.join(os.path.dirname(shown),
                                                                      label)
        check_readable(label_path, label_shown, key="label", what="label file")
        y = _load_npy(label_path, label_shown, mmap=False)
    identity = _cache_key(path, "npy", {"label": label})
    return _array_table(x, y, shown, identity, options=options, path=path,
                        x_what="the feature array", y_what="the label array",
                        y_file=label_shown)


def _load_npy(path: str, shown: str, *, mmap: bool) -> np.ndarray:
    """A .npy file read without pickle: its header is checked first, so an object array, a
    cut-off file or a bad header is one plain sentence instead of numpy's."""
    with open(path, "rb") as f:
        header = _npy_header_or_error(f, "", shown)
        problem = _array_problem(*header, os.path.getsize(path) - f.tell())
    if problem:
        raise DataError(f"the array {problem}", file=shown)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"not a readable .npy file: {e}", file=shown) from None


def _array_table(x: np.ndarray, y: Optional[np.ndarray], shown: str,
                 identity: Optional[str] = None, *, options: Optional[ReadOptions] = None,
                 path: Optional[str] = None, x_what: str = "the feature array",
                 y_what: str = "the label array", y_file: Optional[str] = None) -> Table:
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{x_what} has shape {x.shape}; expected one sample a row (N, ...)",
                        file=shown)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{x_what} has dtype {x.dtype}; expected numbers", file=shown)
    if y is not None:
        y = _checked_labels(np.asarray(y), int(x.shape[0]), x_what, y_what, y_file or shown)
    names = [f"x{i}" for i in range(int(np.prod(x.shape[1:])))]
    if is_memmapped(x) and x.dtype == np.float32 and x.flags.c_contiguous:
        features = x
    elif is_memmapped(x) and options is not None and path is not None and \
            _streams(path, options):
        features = _array_to_cache(x, path, options, identity or _cache_key(path, "?", {}),
                                   shown, x_what)
    else:
        check_float32(x, 0, shown, x_what)
        features = x.astype(np.float32)
    return Table(features, y, names, shown, first_data_line=0, identity=identity)


def _checked_labels(y: np.ndarray, rows: int, x_what: str, y_what: str, shown: str
                    ) -> np.ndarray:
    """Labels one a row, numbers or strings, none NaN/inf; whole-number floats as int64."""
    if y.ndim != 1:
        raise DataError(f"{y_what} has shape {y.shape}; expected one label a row ({rows},)",
                        file=shown)
    if y.shape[0] != rows:
        raise DataError(f"{y_what} has {y.shape[0]} labels, but {x_what} has {rows} rows",
                        file=shown)
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{y_what} has dtype {y.dtype}; expected numbers or strings",
                        file=shown)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            r = int(bad[0])
            raise DataError(f"{y_what}: row {r}: label {y[r]} is not a finite value (a "
                            "missing value?)", file=shown)
        if np.all(y == np.round(y)):
            y = y.astype(np.int64)
    return y


def check_float32(block: np.ndarray, first_row: int, shown: str, what: str) -> None:
    """A located DataError at the first finite value beyond float32's range (it would
    become inf in the features); NaN and inf themselves are check_finite's. Read in chunks:
    `block` may be a memory-mapped file."""
    if block.dtype.kind != "f" or block.dtype.itemsize <= 4:
        return
    flat = block.reshape(block.shape[0], -1)
    step = max(1, (8 << 20) // max(1, flat.shape[1] * block.dtype.itemsize))
    for start in range(0, flat.shape[0], step):
        chunk = np.asarray(flat[start:start + step])
        with np.errstate(invalid="ignore"):
            big = np.isfinite(chunk) & (np.abs(chunk) > F32_MAX)
        if big.any():
            r, c = (int(i) for i in np.argwhere(big)[0])
            raise DataError(f"{what}: row {first_row + start + r}, column 'x{c}': value "
                            f"{float(chunk[r, c])!r} does not fit float32 (max 3.4e38)",
                            file=shown)


def _array_to_cache(x: np.ndarray, path: str, options: ReadOptions, identity: str,
                    shown: str, what: str) -> np.ndarray:
    """A memory-mapped array of another dtype (or Fortran order) converted to float32 in
    chunks into the cache."""
    entry = cache_entry(options.cache_dir, path, identity)
    target = os.path.join(entry, "features.npy")
    if not os.path.exists(target):
        with staged_entry(entry, path) as tmp:
            row = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
            step = max(1, (32 << 20) // row)
            with NpyWriter(os.path.join(tmp, "features.npy")) as out:
                for start in range(0, x.shape[0], step):
                    block = x[start:start + step]
                    check_float32(block, start, shown, what)
                    out.write(np.asarray(block, dtype=np.float32))
                out.finish_shape(tuple(x.shape[1:]))
            write_json(os.path.join(tmp, "meta.json"), {
                "version": CACHE_VERSION, "source": os.path.abspath(path),
                "identity": identity, "rows": int(x.shape[0])})
    return np.load(target, mmap_mode="r", allow_pickle=False)


def check_finite(table: Table) -> None:
    """A located DataError at the first NaN/inf feature value (row and column named). A
    memory-mapped table is read a block at a time and its pages released behind."""
    if table.finite_checked:
        return
    flat = table.features.reshape(len(table), -1)
    step = 65536
    for start in range(0, len(table), step):
        block = np.asarray(flat[start:start + step])
        bad = ~np.isfinite(block)
        release_pages(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            row = start + int(r)
            where = dict(line=row + table.first_data_line) if table.first_data_line else {}
            rowtext = "" if table.first_data_line else f"row {row}, "
            raise DataError(f"{rowtext}column '{table.feature_names[c]}': not a finite number: "
                            f"{block[r, c]}", file=table.path, **where)
    table.finite_checked = True

