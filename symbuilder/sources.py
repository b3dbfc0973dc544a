"""Data sources: one registered reader per file format, each returning a `Table`.

Adding a format is one decorated function here; the spec's `format:` choices and the tests
follow the registry. Readers raise located DataErrors (file:line: column 'x': ...).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Callable, Dict, List, Optional

import numpy as np

from .errors import DataError


@dataclasses.dataclass
class Table:
    """Features (N, F...) as float32 and raw labels (N,) or None, with feature names."""
    features: np.ndarray
    labels: Optional[np.ndarray]
    feature_names: List[str]
    path: str
    first_data_line: int = 1  # file line of row 0, so errors can name lines (csv: 2)

    def __len__(self) -> int:
        return int(self.features.shape[0])


Reader = Callable[..., Table]
SOURCES: Dict[str, Reader] = {}


def register_source(fmt: str) -> Callable[[Reader], Reader]:
    """Register a reader for `format: fmt`. A duplicate registration is an error."""
    def decorate(fn: Reader) -> Reader:
        if fmt in SOURCES:
            raise ValueError(f"data source '{fmt}' is registered twice")
        SOURCES[fmt] = fn
        return fn
    return decorate


def read_table(path: str, fmt: str, *, label: Optional[str], features: Optional[str] = None,
               shown_path: Optional[str] = None) -> Table:
    """Read `path` with the reader registered for `fmt`. `label=None`: no label (predict)."""
    shown = shown_path or path
    if not os.path.exists(path):
        raise DataError("no such data file", file=shown)
    if os.path.isdir(path):
        raise DataError("is a folder, not a data file", file=shown)
    try:
        reader = SOURCES[fmt]
    except KeyError:
        raise DataError(f"unknown data format '{fmt}'; known: {', '.join(SOURCES)}",
                        file=shown) from None
    table = reader(path, label=label, features=features, shown=shown)
    if len(table) == 0:
        raise DataError("no data rows", file=shown)
    return table


@register_source("csv")
def read_csv(path: str, *, label: Optional[str], features: Optional[str], shown: str) -> Table:
    """A CSV file with a header row; `label` names the label column, every other column is a
    feature in file order. Non-numeric, empty, NaN or infinite feature cells are errors that
    name the line and the column."""
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        try:
            rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"not a readable CSV file: {e}", file=shown) from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError("empty CSV file; expected a header row", file=shown, line=1)
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    lines = [i + 2 for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    if label is not None and label not in header:
        from .spec.catalog_suggest import suggest_text
        raise DataError(f"no label column '{label}'{suggest_text(label, header)}; columns: "
                        f"{', '.join(header[:12])}{' ...' if len(header) > 12 else ''}",
                        file=shown, line=1)
    for row, line in zip(body, lines):
        if len(row) != len(header):
            raise DataError(f"expected {len(header)} fields as in the header, found {len(row)}",
                            file=shown, line=line)
    label_index = header.index(label) if label is not None else None
    feature_idx = [i for i in range(len(header)) if i != label_index]
    names = [header[i] for i in feature_idx]
    cells = np.array(body, dtype=object).reshape(len(body), len(header)) if body else \
        np.empty((0, len(header)), dtype=object)
    try:
        values = cells[:, feature_idx].astype(np.float64)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        _raise_first_bad_cell(cells, feature_idx, header, lines, shown)
    labels = None
    if label_index is not None:
        raw = [c.strip() for c in cells[:, label_index]]
        for text, line in zip(raw, lines):
            if text == "":
                raise DataError(f"column '{label}': empty label", file=shown, line=line)
        labels = _numeric_if_possible(raw)
    return Table(values.astype(np.float32), labels, names, shown, first_data_line=2)


def _raise_first_bad_cell(cells: np.ndarray, feature_idx: List[int], header: List[str],
                          lines: List[int], shown: str) -> None:
    for r, line in enumerate(lines):
        for c in feature_idx:
            text = str(cells[r, c]).strip()
            try:
                value = float(text)
            except ValueError:
                what = "empty value" if text == "" else f"not a number: {text!r}"
                raise DataError(f"column '{header[c]}': {what}", file=shown, line=line) from None
            if not math.isfinite(value):
                raise DataError(f"column '{header[c]}': not a finite number: {text}",
                                file=shown, line=line)


def _numeric_if_possible(raw: List[str]) -> np.ndarray:
    try:
        values = np.array([float(x) for x in raw], dtype=np.float64)
    except ValueError:
        return np.array(raw, dtype=object)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


@register_source("npz")
def read_npz(path: str, *, label: Optional[str], features: Optional[str], shown: str) -> Table:
    """An .npz archive with a feature array (default `X`, any shape (N, ...)) and a label
    array (default `y`, shape (N,))."""
    x_key = features or "X"
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile/ValueError for a corrupt or non-npz file
        raise DataError(f"not a readable .npz file: {e}", file=shown) from None
    with archive:
        if x_key not in archive.files:
            raise DataError(f"no array '{x_key}' (arrays: {', '.join(archive.files)})", file=shown)
        x = archive[x_key]
        y = None
        if label is not None or "y" in archive.files:
            y_key = label or "y"
            if y_key not in archive.files:
                raise DataError(f"no label array '{y_key}' (arrays: {', '.join(archive.files)})",
                                file=shown)
            y = archive[y_key]
    return _array_table(x, y, shown)


@register_source("npy")
def read_npy(path: str, *, label: Optional[str], features: Optional[str], shown: str) -> Table:
    """A .npy feature array, memory-mapped; `label` is the path of a .npy label array
    (relative to the feature file's folder)."""
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise DataError(f"not a readable .npy file: {e}", file=shown) from None
    y = None
    if label is not None:
        label_path = label if os.path.isabs(label) else os.path.join(os.path.dirname(path), label)
        if not os.path.exists(label_path):
            raise DataError(f"no such label file '{label}'", file=shown)
        y = np.load(label_path, allow_pickle=False)
    return _array_table(x, y, shown)


def _array_table(x: np.ndarray, y: Optional[np.ndarray], shown: str) -> Table:
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"feature array has shape {x.shape}; expected (N, ...)", file=shown)
    if x.dtype.kind not in "fiub":
        raise DataError(f"feature array has dtype {x.dtype}; expected numbers", file=shown)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"label array has shape {y.shape}; expected ({x.shape[0]},)", file=shown)
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    x2 = x.reshape(x.shape[0], -1)
    names = [f"x{i}" for i in range(x2.shape[1])]
    features = x if isinstance(x, np.memmap) and x.dtype == np.float32 else x.astype(np.float32)
    return Table(features, y, names, shown, first_data_line=0)


def check_finite(table: Table) -> None:
    """A located DataError at the first NaN/inf feature value (row and column named)."""
    flat = table.features.reshape(len(table), -1)
    step = 65536
    for start in range(0, len(table), step):
        block = np.asarray(flat[start:start + step])
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            row = start + int(r)
            where = dict(line=row + table.first_data_line) if table.first_data_line else {}
            rowtext = "" if table.first_data_line else f"row {row}, "
            raise DataError(f"{rowtext}column '{table.feature_names[c]}': not a finite number: "
                            f"{block[r, c]}", file=table.path, **where)

